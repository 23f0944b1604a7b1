// Package dur parses the durations vmscript accepts everywhere: a number of
// seconds (90, 1.5) or a string with units ("90s", "3m", "1h30m", "250ms").
package dur

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Parse turns "90s", "3m", "1h", "1.5", "250ms" into a duration. A bare number
// is seconds. Negative, empty and non-finite values are errors.
func Parse(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty duration (want seconds or a string like \"90s\", \"3m\")")
	}
	if f, err := strconv.ParseFloat(t, 64); err == nil {
		return Seconds(f)
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q (want seconds or a string like \"90s\", \"3m\", \"1h\")", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

// Seconds converts a number of seconds to a duration, refusing negative,
// NaN, infinite and absurdly large values.
func Seconds(f float64) (time.Duration, error) {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return 0, fmt.Errorf("duration %v is not a finite number of seconds", f)
	case f < 0:
		return 0, fmt.Errorf("negative duration %v", f)
	case f > float64(math.MaxInt64/int64(time.Second)):
		return 0, fmt.Errorf("duration %v seconds is too large", f)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// String formats d the way a person writes it: "3m0s" becomes "3m", "1h0m0s"
// becomes "1h", and values are rounded to the millisecond.
func String(d time.Duration) string {
	s := d.Round(time.Millisecond).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
