package console

// The streaming ANSI stripper. It turns the raw serial stream into "stripped
// text": printable bytes (UTF-8 passes through untouched), tabs and '\n' line
// breaks, with every escape sequence and other control byte removed. It keeps
// no look-behind beyond its small state, so a sequence split across reads is
// handled, and it costs O(1) per byte.
//
// Rules:
//   - CSI (ESC [ … final), OSC (ESC ] … BEL or ESC \), DCS/SOS/PM/APC strings
//     (ESC P, ESC X, ESC ^, ESC _ … ESC \), charset selects and other
//     two- and three-byte escapes (ESC ( B, ESC # 8, ESC =, ESC 7, …) are
//     dropped. A CSI longer than maxCSI bytes or a string longer than maxStr
//     bytes (or one cut by '\n') is abandoned, so a stray ESC can never
//     swallow the console.
//   - '\n', "\r\n" and "\r\r\n" end a line. A lone '\r' followed by more text
//     on the same line (progress bars) also ends the line, unless the line is
//     still empty. '\r' never appears in stripped text.
//   - Cursor positioning that starts a new screen row (CSI H, CSI f, CSI d)
//     and erase-display (CSI J) end a non-empty line, so full-screen programs
//     (the Debian installer's newt/slang screens) become one line per painted
//     row. Cursor-forward and column moves (CSI C, G, `), which curses uses
//     instead of spaces, become one space. DEC line-drawing characters
//     (ESC ( 0, ESC ) 0 with SO/SI) become '+', '-' and '|'.
//   - Other C0 controls (BEL, BS, NUL, SO/SI, …) and DEL are dropped.

const (
	maxCSI = 64
	maxStr = 4096
)

const (
	stGround = iota
	stEsc
	stEscInter
	stCSI
	stStr
	stStrEsc
)

// checkpoint records that stripped byte s came from raw byte r; stripped
// bytes after s come from consecutive raw bytes until the next checkpoint.
type checkpoint struct{ s, r int64 }

// lineRec is one completed line: stripped text [start, end) (end excludes
// the '\n'), raw bytes [rawStart, rawEnd) including its terminator.
type lineRec struct {
	start, end       int64
	rawStart, rawEnd int64
}

type stripper struct {
	state  int
	seqLen int
	inter  byte // first intermediate byte of an ESC sequence

	// DEC special graphics (line drawing) in G0/G1 and the shift state.
	g0gfx, g1gfx, shifted bool

	pendingCR bool
	crRaw     int64

	textOff  int64 // stripped offset of the next emitted byte
	delta    int64 // raw index minus stripped index since the last checkpoint
	last     byte  // last emitted byte (0 at a line start)
	lineText int64 // stripped offset where the current line starts
	lineRaw  int64 // raw offset where the current line starts

	// Output of one strip call, appended to by the caller-owned slices.
	out   []byte
	cps   []checkpoint
	lines []lineRec
}

func (st *stripper) emit(b byte, ri int64) {
	if ri-st.textOff != st.delta {
		st.delta = ri - st.textOff
		st.cps = append(st.cps, checkpoint{s: st.textOff, r: ri})
	}
	st.out = append(st.out, b)
	st.textOff++
	st.last = b
}

// breakLine ends the current line with a '\n' attributed to raw byte ri; the
// next line starts at raw offset nextRaw.
func (st *stripper) breakLine(ri, nextRaw int64) {
	st.emit('\n', ri)
	st.lines = append(st.lines, lineRec{start: st.lineText, end: st.textOff - 1, rawStart: st.lineRaw, rawEnd: nextRaw})
	st.lineText = st.textOff
	st.lineRaw = nextRaw
	st.last = 0
}

func (st *stripper) lineEmpty() bool { return st.textOff == st.lineText }

// visible is called before text is emitted at raw index ri: a pending lone
// CR ends a non-empty line first.
func (st *stripper) visible(ri int64) {
	if st.pendingCR {
		st.pendingCR = false
		if !st.lineEmpty() {
			st.breakLine(st.crRaw, ri)
		}
	}
}

// control handles a C0 control byte (or DEL) in any state.
func (st *stripper) control(b byte, ri int64) {
	switch b {
	case '\n':
		st.pendingCR = false
		st.breakLine(ri, ri+1)
	case '\r':
		if !st.pendingCR {
			st.pendingCR = true
			st.crRaw = ri
		}
	case '\t':
		st.visible(ri)
		st.emit('\t', ri)
	case 0x0e: // SO
		st.shifted = true
	case 0x0f: // SI
		st.shifted = false
	}
	// Everything else is dropped.
}

func (st *stripper) gfx() bool {
	if st.shifted {
		return st.g1gfx
	}
	return st.g0gfx
}

// gfxChar renders a DEC special graphics character as ASCII: box corners
// and tees become '+', horizontal lines '-', vertical lines '|'.
func gfxChar(b byte) byte {
	switch b {
	case 'j', 'k', 'l', 'm', 'n', 't', 'u', 'v', 'w':
		return '+'
	case 'q', 'o', 'p', 'r', 's':
		return '-'
	case 'x':
		return '|'
	case 'a':
		return '#'
	}
	return b
}

// strip consumes p, whose first byte has raw offset base.
func (st *stripper) strip(p []byte, base int64) {
	for i := 0; i < len(p); i++ {
		b := p[i]
		ri := base + int64(i)
		switch st.state {
		case stGround:
			if b >= 0x20 && b != 0x7f {
				st.visible(ri)
				if st.gfx() {
					st.emit(gfxChar(b), ri)
					continue
				}
				// Fast path: copy the run of printable bytes.
				j := i + 1
				for j < len(p) && p[j] >= 0x20 && p[j] != 0x7f {
					j++
				}
				if ri-st.textOff != st.delta {
					st.delta = ri - st.textOff
					st.cps = append(st.cps, checkpoint{s: st.textOff, r: ri})
				}
				st.out = append(st.out, p[i:j]...)
				st.textOff += int64(j - i)
				st.last = p[j-1]
				i = j - 1
				continue
			}
			if b == 0x1b {
				st.state = stEsc
				st.seqLen = 0
				continue
			}
			st.control(b, ri)
		case stEsc:
			switch {
			case b == '[':
				st.state = stCSI
			case b == ']' || b == 'P' || b == 'X' || b == '^' || b == '_':
				st.state = stStr
			case b >= 0x20 && b <= 0x2f:
				st.state = stEscInter
				st.inter = b
			case b >= 0x30 && b <= 0x7e:
				st.state = stGround
			case b == 0x1b:
				// ESC ESC: the first is abandoned.
			case b == 0x18 || b == 0x1a:
				st.state = stGround
			case b >= 0x80:
				// Not an escape after all (systemd cuts a colour code to a
				// bare ESC before "…"): the byte is text, handle it as such.
				st.state = stGround
				i--
			default:
				st.state = stGround
				st.control(b, ri)
			}
		case stEscInter:
			switch {
			case b >= 0x20 && b <= 0x2f:
				st.seqLen++
				if st.seqLen > maxCSI {
					st.state = stGround
				}
			case b >= 0x30 && b <= 0x7e:
				st.state = stGround
				if st.seqLen == 0 { // charset selects: ESC ( F, ESC ) F
					switch st.inter {
					case '(':
						st.g0gfx = b == '0'
					case ')':
						st.g1gfx = b == '0'
					}
				}
			case b == 0x1b:
				st.state = stEsc
				st.seqLen = 0
			case b == 0x18 || b == 0x1a:
				st.state = stGround
			default:
				st.state = stGround
				st.control(b, ri)
			}
		case stCSI:
			switch {
			case b >= 0x20 && b <= 0x3f:
				st.seqLen++
				if st.seqLen > maxCSI {
					st.state = stGround
				}
			case b >= 0x40 && b <= 0x7e:
				st.state = stGround
				switch b {
				case 'H', 'f', 'd', 'J':
					st.pendingCR = false
					if !st.lineEmpty() {
						st.breakLine(ri, ri+1)
					}
				case 'C', 'G', '`':
					if !st.pendingCR && !st.lineEmpty() && st.last != ' ' {
						st.emit(' ', ri)
					}
				}
			case b == 0x1b:
				st.state = stEsc
				st.seqLen = 0
			case b == 0x18 || b == 0x1a:
				st.state = stGround
			case b >= 0x80:
				// A cut-off sequence followed by UTF-8 text: keep the text.
				st.state = stGround
				i--
			default:
				// C0 controls are executed inside a CSI (VT100 rules).
				st.control(b, ri)
			}
		case stStr:
			switch {
			case b == 0x07:
				st.state = stGround
			case b == 0x1b:
				st.state = stStrEsc
			case b == '\n':
				st.state = stGround
				st.control(b, ri)
			default:
				st.seqLen++
				if st.seqLen > maxStr {
					st.state = stGround
				}
			}
		case stStrEsc:
			if b == '\\' {
				st.state = stGround
			} else {
				st.state = stEsc
				st.seqLen = 0
				i-- // reprocess b as the byte after ESC
			}
		}
	}
}

// rawEndOf maps a stripped end offset (exclusive) to the raw offset just
// after the raw byte that produced stripped byte e-1. cps must be sorted.
func rawEndOf(cps []checkpoint, e int64) int64 {
	if e <= 0 {
		return 0
	}
	s := e - 1
	// Last checkpoint with cp.s <= s.
	lo, hi := 0, len(cps)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if cps[m].s <= s {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return s + 1
	}
	cp := cps[lo-1]
	return cp.r + (s - cp.s) + 1
}

// textEndOf maps a raw end offset (exclusive) to the number of stripped
// bytes produced by raw bytes before it. textLen is the stripped length.
func textEndOf(cps []checkpoint, textLen, e int64) int64 {
	if e <= 0 {
		return 0
	}
	r := e - 1
	// Last checkpoint with cp.r <= r.
	lo, hi := 0, len(cps)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if cps[m].r <= r {
			lo = m + 1
		} else {
			hi = m
		}
	}
	var cp checkpoint
	next := textLen
	if lo > 0 {
		cp = cps[lo-1]
	}
	if lo < len(cps) {
		next = cps[lo].s
	}
	return min(cp.s+(r-cp.r)+1, next)
}
