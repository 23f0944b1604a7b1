// Package vmerr is the error shape every vmscript primitive returns: a kind a
// script can branch on, a message a person can read, and context (the VM, the
// pattern waited for, the console tail) that explains the failure.
//
// The Lua host turns an *Error into a table with the fields kind, message and
// the context fields, whose tostring reads like Error.Error.
package vmerr

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Kinds of failure. Scripts branch on these strings, so they never change.
const (
	Timeout   = "timeout"   // a deadline passed before the awaited thing happened
	Exited    = "exited"    // the VM (or another child) exited during the wait
	Cancelled = "cancelled" // the run was interrupted (signal or global --timeout)
	Watch     = "watch"     // a "fail" watcher matched (kernel panic, Oops, …)
	Refused   = "refused"   // the other side said no (sudo, host key, TFTP write)
	Auth      = "auth"      // login or authentication failed
	Usage     = "usage"     // bad arguments from the script
	NotFound  = "notfound"  // a file, image or object does not exist
	IO        = "io"        // the host failed to read or write something
	Protocol  = "protocol"  // a peer spoke something we did not understand
	Failed    = "failed"    // a command that had to succeed exited non-zero
	Internal  = "internal"  // a bug in vmscript
)

// Error is a failure with a kind, a message and context.
type Error struct {
	Kind    string
	Message string
	// Context holds extra facts: "vm", "pattern", "waited_s", "tail", …
	// Values are strings, numbers, booleans, []string or nested maps.
	Context map[string]any
	// Err is the underlying cause, if any.
	Err error
}

// New returns an error of the given kind with a formatted message.
func New(kind, format string, a ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, a...)}
}

// Wrap returns an error of the given kind whose message is msg: err.
func Wrap(kind string, err error, format string, a ...any) *Error {
	msg := fmt.Sprintf(format, a...)
	if err != nil {
		msg += ": " + err.Error()
	}
	return &Error{Kind: kind, Message: msg, Err: err}
}

// With sets a context field and returns e, for chaining.
func (e *Error) With(key string, value any) *Error {
	if e.Context == nil {
		e.Context = map[string]any{}
	}
	e.Context[key] = value
	return e
}

// Error returns the message, then the context's "tail" (console lines) and
// "screen" (what a VM's screen showed) if any.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Message)
	if tail, ok := e.Context["tail"]; ok {
		var lines []string
		switch t := tail.(type) {
		case []string:
			lines = t
		case string:
			lines = strings.Split(strings.TrimRight(t, "\n"), "\n")
		}
		if len(lines) > 0 {
			b.WriteString("\n--- last console lines ---")
			for _, l := range lines {
				b.WriteString("\n  | ")
				b.WriteString(l)
			}
		}
	}
	if scr, ok := e.Context["screen"].(string); ok && strings.TrimSpace(scr) != "" {
		b.WriteString("\n--- screen ---")
		for _, l := range strings.Split(strings.TrimRight(scr, "\n"), "\n") {
			b.WriteString("\n  | ")
			b.WriteString(l)
		}
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Keys returns the context keys in a stable order.
func (e *Error) Keys() []string {
	keys := make([]string, 0, len(e.Context))
	for k := range e.Context {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// KindOf returns the kind of the first *Error in err's chain, or "" if none.
func KindOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}

// Is reports whether err is an *Error of the given kind.
func Is(err error, kind string) bool { return KindOf(err) == kind }

// DoneKind is the kind of an error for a wait that ended because ctx is
// done: Cancelled when it was cancelled, otherwise Timeout (its deadline
// passed, or a socket deadline set from it fired a moment before ctx's own
// timer).
func DoneKind(ctx context.Context) string {
	if errors.Is(ctx.Err(), context.Canceled) {
		return Cancelled
	}
	return Timeout
}
