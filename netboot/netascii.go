package netboot

import "io"

// netasciiReader turns a file into netascii (RFC 764 as TFTP uses it): a
// line feed goes out as CR LF, a carriage return as CR NUL.
type netasciiReader struct {
	r       io.Reader
	buf     []byte
	pending byte // the second byte of a pair that did not fit
	has     bool
}

func (n *netasciiReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	out := 0
	if n.has {
		p[0], n.has = n.pending, false
		out = 1
	}
	// Read at most half of what is left: every byte may become two.
	want := (len(p) - out + 1) / 2
	if cap(n.buf) < want {
		n.buf = make([]byte, want)
	}
	k, err := n.r.Read(n.buf[:want])
	for _, b := range n.buf[:k] {
		var second byte
		switch b {
		case '\n':
			b, second = '\r', '\n'
		case '\r':
			second = 0
		default:
			p[out] = b
			out++
			continue
		}
		p[out] = b
		out++
		if out < len(p) {
			p[out] = second
			out++
		} else {
			n.pending, n.has = second, true
		}
	}
	if err == io.EOF && n.has {
		err = nil // the pending byte first
	}
	if out == 0 && err == nil && k == 0 {
		return 0, nil
	}
	return out, err
}

// netasciiWriter turns netascii back into a file: CR LF is a line feed,
// CR NUL a carriage return; a CR before anything else is kept as it is.
type netasciiWriter struct {
	w  io.Writer
	cr bool // the last byte written to us was a CR, not yet resolved
	b  []byte
}

func (n *netasciiWriter) Write(p []byte) (int, error) {
	n.b = n.b[:0]
	for _, c := range p {
		if n.cr {
			n.cr = false
			switch c {
			case '\n':
				n.b = append(n.b, '\n')
				continue
			case 0:
				n.b = append(n.b, '\r')
				continue
			}
			n.b = append(n.b, '\r')
		}
		if c == '\r' {
			n.cr = true
			continue
		}
		n.b = append(n.b, c)
	}
	if _, err := n.w.Write(n.b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush writes a CR the input ended with.
func (n *netasciiWriter) flush() error {
	if !n.cr {
		return nil
	}
	n.cr = false
	_, err := n.w.Write([]byte{'\r'})
	return err
}
