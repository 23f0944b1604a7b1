package screen

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Typing defaults (see KeyOptions).
const (
	// DefaultKeyPace: GRUB lost none of 60–72 keys sent back to back or at
	// 2–50 ms (SeaBIOS and OVMF, TCG; bench/screen). QEMU spaces a key's
	// events itself and drops events beyond 50 queued, so a little pace
	// keeps long texts and busier guests clear of that.
	DefaultKeyPace = 10 * time.Millisecond
	DefaultKeyHold = 0
)

// KeyOptions configure typing.
type KeyOptions struct {
	// Pace is the pause after each key before the next is sent: 0 means
	// DefaultKeyPace, a negative value none. QEMU queues a key's press and
	// release 10 ms apart; a guest that polls its keyboard slowly (a boot
	// menu under TCG) drops keys that come faster than it reads them.
	Pace time.Duration
	// Hold is how long each key is held down (send-key hold-time); 0 means
	// QEMU's default.
	Hold time.Duration
}

func (o KeyOptions) withDefaults() KeyOptions {
	if o.Pace == 0 {
		o.Pace = DefaultKeyPace
	}
	return o
}

// shifted maps the characters a US keyboard types with shift to the key
// that types them.
var shifted = map[rune]string{
	'!': "1", '@': "2", '#': "3", '$': "4", '%': "5", '^': "6", '&': "7", '*': "8",
	'(': "9", ')': "0", '_': "minus", '+': "equal", '{': "bracket_left", '}': "bracket_right",
	'|': "backslash", ':': "semicolon", '"': "apostrophe", '~': "grave_accent", '<': "comma",
	'>': "dot", '?': "slash",
}

// plain maps the other printable non-alphanumeric characters to keys.
var plain = map[rune]string{
	' ': "spc", '-': "minus", '=': "equal", '[': "bracket_left", ']': "bracket_right",
	'\\': "backslash", ';': "semicolon", '\'': "apostrophe", '`': "grave_accent", ',': "comma",
	'.': "dot", '/': "slash", '\n': "ret", '\r': "ret", '\t': "tab",
}

// keyOf returns the QEMU key codes that type r on a US keyboard.
func keyOf(r rune) ([]string, bool) {
	switch {
	case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		return []string{string(r)}, true
	case r >= 'A' && r <= 'Z':
		return []string{"shift", strings.ToLower(string(r))}, true
	}
	if k, ok := plain[r]; ok {
		return []string{k}, true
	}
	if k, ok := shifted[r]; ok {
		return []string{"shift", k}, true
	}
	return nil, false
}

// Type types text on the keyboard (US layout), one key every Pace: letters,
// digits, punctuation, space, "\n" (Enter) and "\t" (Tab). Other characters
// are refused before anything is typed.
func (s *Screen) Type(ctx context.Context, text string) error {
	combos, err := s.combosOf(text, text)
	if err != nil {
		return err
	}
	s.event("type", map[string]any{"text": text})
	return s.send(ctx, combos)
}

// TypeSecret is Type for a password: neither the timeline nor an error
// shows the text, only how many characters it has.
func (s *Screen) TypeSecret(ctx context.Context, text string) error {
	combos, err := s.combosOf(text, "(secret)")
	if err != nil {
		return err
	}
	s.event("type", map[string]any{"text": fmt.Sprintf("(secret, %d characters)", len(combos))})
	return s.send(ctx, combos)
}

// combosOf returns the keys that type text; shown is what an error says
// of the text.
func (s *Screen) combosOf(text, shown string) ([][]string, error) {
	var combos [][]string
	for i, r := range text {
		k, ok := keyOf(r)
		if !ok {
			c := fmt.Sprintf("%q", r)
			if shown != text {
				c = fmt.Sprintf("the character at byte %d", i)
			}
			return nil, vmerr.New(vmerr.Usage, "screen %s: cannot type %s (US keyboard: ASCII letters, digits, punctuation, space, \\n, \\t)", s.name, c).With("text", shown)
		}
		combos = append(combos, k)
	}
	return combos, nil
}

// Key presses key combinations in order, one every Pace: names of QEMU
// key codes ("ret", "tab", "esc", "up", "down", "left", "right", "f1"…"f12",
// "pgup", "home", "spc", …) joined by '-' for keys held together
// ("ctrl-x", "ctrl-alt-delete", "shift-tab"), with the aliases of
// qemu.ParseKeys (enter, escape, del, backspace, space, …).
func (s *Screen) Key(ctx context.Context, combos ...string) error {
	var all [][]string
	for _, c := range combos {
		k, err := qemu.ParseKeys(c)
		if err != nil {
			return err
		}
		all = append(all, k)
	}
	s.event("keys", map[string]any{"keys": combos})
	return s.send(ctx, all)
}

// send presses each combination and releases it, pausing Pace after each.
func (s *Screen) send(ctx context.Context, combos [][]string) error {
	defer s.invalidate()
	type key struct {
		Type string `json:"type"`
		Data string `json:"data"`
	}
	for i, combo := range combos {
		ks := make([]key, len(combo))
		for j, k := range combo {
			ks[j] = key{"qcode", k}
		}
		args := map[string]any{"keys": ks}
		if s.keys.Hold > 0 {
			args["hold-time"] = s.keys.Hold.Milliseconds()
		}
		if _, err := s.qmp(ctx, "send-key", args); err != nil {
			return err
		}
		// The pause follows the last key too, so that keys sent by the
		// next call keep the pace.
		if s.keys.Pace < 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return vmerr.Wrap(vmerr.DoneKind(ctx), ctx.Err(), "screen %s: typing (%d of %d keys sent)", s.name, i+1, len(combos))
		case <-time.After(s.keys.Pace):
		}
	}
	return nil
}
