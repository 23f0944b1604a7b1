package dur

import (
	"math"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	good := map[string]time.Duration{
		"90s": 90 * time.Second, "3m": 3 * time.Minute, "1h": time.Hour, "1h30m": 90 * time.Minute,
		"250ms": 250 * time.Millisecond, "1.5": 1500 * time.Millisecond, " 2 ": 2 * time.Second, "0": 0,
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "-1", "-3s", "3 minutes", "NaN", "inf", "1e300"} {
		if d, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", in, d)
		}
	}
	if _, err := Seconds(math.Inf(1)); err == nil {
		t.Error("Seconds(+Inf) accepted")
	}
}

func TestString(t *testing.T) {
	for d, want := range map[time.Duration]string{
		90 * time.Second: "1m30s", 3 * time.Minute: "3m", time.Hour: "1h", 1500 * time.Millisecond: "1.5s",
		0: "0s", 2 * time.Second: "2s", 61 * time.Minute: "1h1m",
	} {
		if got := String(d); got != want {
			t.Errorf("String(%v) = %q, want %q", d, got, want)
		}
	}
}
