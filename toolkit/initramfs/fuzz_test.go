package initramfs

import (
	"bytes"
	"context"
	"testing"

	"github.com/vmscript/vmscript/toolkit/iso"
)

// FuzzOpen feeds arbitrary bytes to Open and reads every file it lists:
// errors are fine, panics, hangs and unbounded memory are not.
func FuzzOpen(f *testing.F) {
	f.Add(newc(false, tree()...))
	f.Add(newc(true, tm{name: "a", mode: reg, data: "x"}, tm{name: "b", mode: reg, ino: 9, nlink: 2}, tm{name: "c", mode: reg, ino: 9, nlink: 2, data: "y"}))
	f.Add(rawZstd(newc(false, tree()...), 20))
	f.Add(append(newc(false, tm{name: "u", mode: reg, data: "u"}), rawZstd(newc(false, tm{name: "z", mode: link, data: "u"}), 17)...))
	lim := &Limits{MaxMembers: 1000, MaxUncompressed: 1 << 20, MaxWindow: 1 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Open(context.Background(), bytes.NewReader(data), int64(len(data)), "fuzz", lim)
		if err != nil {
			return
		}
		a.Walk(func(e iso.Entry) error {
			if e.IsRegular() {
				a.Read(e.Path, 1<<16)
			}
			return nil
		})
		a.Close()
	})
}
