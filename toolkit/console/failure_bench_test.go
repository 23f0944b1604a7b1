package console

import (
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
)

// BenchmarkFeedFailures feeds 4 MB of boot log, 512 bytes at a time, to a
// console of a run (the timeline gets every line) with no failure pattern
// and with the defaults: go test -bench FeedFailures ./toolkit/console.
func BenchmarkFeedFailures(b *testing.B) {
	data := bootLog(4 << 20)
	for _, no := range []bool{true, false} {
		name := "defaults"
		if no {
			name = "none"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				run, _ := journal.New(b.TempDir(), time.Now())
				c, _ := New(Options{Name: "x", NoDefaultFailures: no, Run: run})
				for p := data; len(p) > 0; {
					k := min(512, len(p))
					c.Feed(p[:k])
					p = p[k:]
				}
				c.Close(nil)
				run.Close()
			}
		})
	}
}
