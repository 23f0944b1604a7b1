package command

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// scripted is a Runner whose results come from a list, then repeat the last.
type scripted struct {
	results []Result
	errs    []error
	calls   int
}

func (s *scripted) Channel() string { return "fake" }

func (s *scripted) Run(ctx context.Context, cmd string, opt Options) (Result, error) {
	i := min(s.calls, len(s.results)-1)
	s.calls++
	var err error
	if i < len(s.errs) {
		err = s.errs[i]
	}
	return s.results[i], err
}

func TestCheckAndTest(t *testing.T) {
	ok := &scripted{results: []Result{{Output: "fine\n", Code: 0}}}
	if r, err := Check(context.Background(), ok, "true", Options{}); err != nil || r.Output != "fine\n" {
		t.Fatalf("Check ok: %v %+v", err, r)
	}
	bad := &scripted{results: []Result{{Output: "no such unit\n", Code: 4}}}
	_, err := Check(context.Background(), bad, "systemctl status x", Options{})
	if !vmerr.Is(err, vmerr.Failed) || !strings.Contains(err.Error(), "exited 4: no such unit") {
		t.Fatalf("Check failing: %v", err)
	}
	if yes, err := Test(context.Background(), bad, "false", Options{}); yes || err != nil {
		t.Fatalf("Test: %v %v", yes, err)
	}
	broken := &scripted{results: []Result{{Code: -1}}, errs: []error{vmerr.New(vmerr.Exited, "gone")}}
	if _, err := Test(context.Background(), broken, "true", Options{}); !vmerr.Is(err, vmerr.Exited) {
		t.Fatalf("Test keeps the channel's error: %v", err)
	}
}

func TestWaitUntil(t *testing.T) {
	r := &scripted{results: []Result{{Code: 1}, {Code: 1}, {Code: 0, Output: "up"}}}
	res, err := WaitUntil(context.Background(), r, "up?", Options{}, time.Millisecond)
	if err != nil || res.Output != "up" || r.calls != 3 {
		t.Fatalf("%v %+v after %d calls", err, res, r.calls)
	}
	never := &scripted{results: []Result{{Code: 3, Output: "not yet"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err = WaitUntil(ctx, never, "up?", Options{}, 10*time.Millisecond)
	if !vmerr.Is(err, vmerr.Timeout) || !strings.Contains(err.Error(), `last exit 3: "not yet"`) {
		t.Fatalf("timeout: %v", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("took %s", d)
	}
	dead := &scripted{results: []Result{{Code: 1}, {Code: -1}}, errs: []error{nil, errors.New("lost")}}
	if _, err := WaitUntil(context.Background(), dead, "up?", Options{}, time.Millisecond); err == nil || err.Error() != "lost" {
		t.Fatalf("channel error: %v", err)
	}
}

func TestPollPredicate(t *testing.T) {
	r := &scripted{results: []Result{{Output: "1"}, {Output: "2"}, {Output: "3"}}}
	res, err := Poll(context.Background(), r, "count", Options{}, time.Millisecond, func(x Result) bool { return x.Output == "3" })
	if err != nil || res.Output != "3" {
		t.Fatalf("%v %+v", err, res)
	}
}

func TestCombined(t *testing.T) {
	for _, c := range []struct{ out, err, want string }{
		{"a\n", "", "a\n"}, {"a", "b", "a\nb"}, {"a\n", "b", "a\nb"}, {"", "b", "b"},
	} {
		if got := Combined(c.out, c.err); got != c.want {
			t.Errorf("Combined(%q, %q) = %q, want %q", c.out, c.err, got, c.want)
		}
	}
}
