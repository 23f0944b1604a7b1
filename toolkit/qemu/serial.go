package qemu

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// serialPipeSize is the capacity asked for the pipe QEMU writes the serial
// port to. QEMU hands the 16550's bytes to its chardev one write(2) each; a
// pipe merges them into its pages, so with 1 MiB of slack the guest never
// waits for the console's reader. (The unix socket chardev used before
// queued one socket buffer per byte and stalled the guest after a few
// hundred bytes in flight: 0.52× the rate of -serial stdio.)
const serialPipeSize = 1 << 20

// serialPipe is the guest's serial port as two pipes: QEMU's stdin (what
// the console sends) and stdout (what the guest writes), the chardev QEMU
// calls stdio. It notes when its reader reached end of file (QEMU exited,
// the only writer gone) so that Stop closes it only after a console has
// drained it.
type serialPipe struct {
	r       *pipeReader // ours: stdout's read end
	w       *os.File    // ours: stdin's write end
	reading atomic.Bool
	once    sync.Once
	eof     chan struct{}
}

// newSerialPipe makes the two pipes and returns ours and QEMU's ends.
func newSerialPipe() (s *serialPipe, qemuIn, qemuOut *os.File, err error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	var out [2]int
	if err := unix.Pipe2(out[:], unix.O_CLOEXEC); err != nil {
		inR.Close()
		inW.Close()
		return nil, nil, nil, err
	}
	// A smaller pipe still works (the default is 64 KiB): best effort.
	_, _ = unix.FcntlInt(uintptr(out[0]), unix.F_SETPIPE_SZ, serialPipeSize)
	r, err := newPipeReader(out[0])
	if err != nil {
		inR.Close()
		inW.Close()
		unix.Close(out[0])
		unix.Close(out[1])
		return nil, nil, nil, err
	}
	qemuOut = os.NewFile(uintptr(out[1]), "qemu-stdout")
	return &serialPipe{r: r, w: inW, eof: make(chan struct{})}, inR, qemuOut, nil
}

// Read reads what the guest wrote to the serial port.
func (s *serialPipe) Read(p []byte) (int, error) {
	s.reading.Store(true)
	n, err := s.r.Read(p)
	if err != nil {
		s.once.Do(func() { close(s.eof) })
	}
	return n, err
}

// Write sends bytes to the guest's serial port.
func (s *serialPipe) Write(p []byte) (int, error) { return s.w.Write(p) }

// SetReadDeadline bounds Read (the console's drain after Close).
func (s *serialPipe) SetReadDeadline(t time.Time) error { return s.r.SetReadDeadline(t) }

// SetWriteDeadline bounds Write (the console's send timeout).
func (s *serialPipe) SetWriteDeadline(t time.Time) error { return s.w.SetWriteDeadline(t) }

// Close closes both of our ends.
func (s *serialPipe) Close() error {
	err := s.r.Close()
	if e := s.w.Close(); err == nil {
		err = e
	}
	return err
}
