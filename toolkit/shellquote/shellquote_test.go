package shellquote

import (
	"os/exec"
	"testing"
)

func TestJoin(t *testing.T) {
	got := Join([]string{"qemu", "-append", "console=ttyS0 quiet", "it's", "", "a,b=c"})
	want := `qemu -append 'console=ttyS0 quiet' 'it'\''s' '' a,b=c`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestQuoteRoundTrip has a real sh read every quoted word back.
func TestQuoteRoundTrip(t *testing.T) {
	words := []string{"", "plain", "two words", "it's", "'", "''", `back\slash`, "$HOME", "`id`",
		"new\nline", "tab\there", "*", "a;b", "ü", "-n", "%s", "!"}
	for _, w := range words {
		out, err := exec.Command("sh", "-c", "printf %s "+Quote(w)).Output()
		if err != nil {
			t.Fatalf("sh on %q (%s): %v", w, Quote(w), err)
		}
		if string(out) != w {
			t.Errorf("Quote(%q) = %s reads back as %q", w, Quote(w), out)
		}
	}
}

// TestJoinRoundTrip has a real sh split a joined line back into its words.
func TestJoinRoundTrip(t *testing.T) {
	argv := []string{"a b", "", "it's", "plain", "$x", "a,b=c"}
	out, err := exec.Command("sh", "-c", `for w in `+Join(argv)+`; do printf '[%s]' "$w"; done`).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "[a b][][it's][plain][$x][a,b=c]"; string(out) != want {
		t.Errorf("got %s, want %s", out, want)
	}
}
