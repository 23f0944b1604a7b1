package lan

import (
	"encoding/binary"
	"os"
	"sync"
	"time"
)

// pcapWriter writes frames in the classic pcap format (microsecond
// timestamps, link type Ethernet). Each record is one write(2), so a crash
// cuts at most the frame being written.
type pcapWriter struct {
	mu     sync.Mutex
	f      *os.File
	buf    []byte
	frames uint64
	err    error
}

func newPcap(path string) (*pcapWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], maxFrame)
	binary.LittleEndian.PutUint32(hdr[20:], 1) // LINKTYPE_ETHERNET
	if _, err := f.Write(hdr); err != nil {
		f.Close()
		return nil, err
	}
	return &pcapWriter{f: f}, nil
}

func (w *pcapWriter) write(t time.Time, frame []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil || w.err != nil {
		return
	}
	w.buf = w.buf[:0]
	var rec [16]byte
	binary.LittleEndian.PutUint32(rec[0:], uint32(t.Unix()))
	binary.LittleEndian.PutUint32(rec[4:], uint32(t.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(rec[8:], uint32(len(frame)))
	binary.LittleEndian.PutUint32(rec[12:], uint32(len(frame)))
	w.buf = append(append(w.buf, rec[:]...), frame...)
	if _, err := w.f.Write(w.buf); err != nil {
		w.err = err
		return
	}
	w.frames++
}

func (w *pcapWriter) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return w.err
	}
	err := w.f.Close()
	w.f = nil
	if w.err != nil {
		return w.err
	}
	return err
}
