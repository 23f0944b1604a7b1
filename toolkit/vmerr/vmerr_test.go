package vmerr

import (
	"context"
	"testing"
	"time"
)

func TestDoneKind(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithTimeout(context.Background(), -time.Second)
	defer cancel2()
	for _, c := range []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"cancelled", cancelled, Cancelled},
		{"deadline passed", expired, Timeout},
		// A socket deadline that fired before the context noticed.
		{"not done yet", context.Background(), Timeout},
	} {
		if got := DoneKind(c.ctx); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestErrorShowsScreen(t *testing.T) {
	e := New(Timeout, "waited").With("screen", "GNU GRUB\n  entry\n\n")
	want := "waited\n--- screen ---\n  | GNU GRUB\n  |   entry"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
