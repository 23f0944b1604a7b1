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

// offsetPair is an entry of the text↔raw offset map: stripped byte text
// came from raw byte raw, and the stripped bytes after it come from
// consecutive raw bytes until the next pair.
type offsetPair struct{ text, raw int64 }

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
	delta    int64 // raw index minus stripped index since the last offset pair
	last     byte  // last emitted byte (0 at a line start)
	lineText int64 // stripped offset where the current line starts
	lineRaw  int64 // raw offset where the current line starts

	// Output of one strip call, appended to by the caller-owned slices.
	out   []byte
	pairs []offsetPair
	lines []lineRec
}

func (st *stripper) emit(b byte, ri int64) {
	if ri-st.textOff != st.delta {
		st.delta = ri - st.textOff
		st.pairs = append(st.pairs, offsetPair{text: st.textOff, raw: ri})
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

// strip consumes p, whose first byte has raw offset base, one state of
// the escape-sequence parser at a time; a handler that returns true wants
// its byte processed again in the state it moved to.
func (st *stripper) strip(p []byte, base int64) {
	for i := 0; i < len(p); i++ {
		b, ri := p[i], base+int64(i)
		again := false
		switch st.state {
		case stGround:
			i = st.ground(p, i, ri)
		case stEsc:
			again = st.esc(b, ri)
		case stEscInter:
			st.escInter(b, ri)
		case stCSI:
			again = st.csi(b, ri)
		case stStr:
			st.str(b, ri)
		case stStrEsc:
			again = st.strEsc(b)
		}
		if again {
			i--
		}
	}
}

// ground handles text and controls outside any sequence; for a run of
// printable bytes it copies them at once and returns the index of the
// run's last byte.
func (st *stripper) ground(p []byte, i int, ri int64) int {
	b := p[i]
	switch {
	case b >= 0x20 && b != 0x7f:
		st.visible(ri)
		if st.gfx() {
			st.emit(gfxChar(b), ri)
			return i
		}
		j := i + 1
		for j < len(p) && p[j] >= 0x20 && p[j] != 0x7f {
			j++
		}
		if ri-st.textOff != st.delta {
			st.delta = ri - st.textOff
			st.pairs = append(st.pairs, offsetPair{text: st.textOff, raw: ri})
		}
		st.out = append(st.out, p[i:j]...)
		st.textOff += int64(j - i)
		st.last = p[j-1]
		return j - 1
	case b == 0x1b:
		st.state = stEsc
		st.seqLen = 0
	default:
		st.control(b, ri)
	}
	return i
}

// esc handles the byte after ESC.
func (st *stripper) esc(b byte, ri int64) (again bool) {
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
		// Not an escape after all (systemd cuts a colour code to a bare
		// ESC before "…"): the byte is text, handle it as such.
		st.state = stGround
		return true
	default:
		st.state = stGround
		st.control(b, ri)
	}
	return false
}

// escInter handles an ESC sequence's intermediate and final bytes; the
// charset selects ESC ( F and ESC ) F switch line drawing on and off.
func (st *stripper) escInter(b byte, ri int64) {
	switch {
	case b >= 0x20 && b <= 0x2f:
		st.seqLen++
		if st.seqLen > maxCSI {
			st.state = stGround
		}
	case b >= 0x30 && b <= 0x7e:
		st.state = stGround
		if st.seqLen == 0 {
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
}

// csi handles a control sequence: cursor positioning and erase-display end
// a non-empty line, cursor-forward and column moves become one space.
func (st *stripper) csi(b byte, ri int64) (again bool) {
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
		return true
	default:
		// C0 controls are executed inside a CSI (VT100 rules).
		st.control(b, ri)
	}
	return false
}

// str skips an OSC, DCS, SOS, PM or APC string up to BEL or ST.
func (st *stripper) str(b byte, ri int64) {
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
}

// strEsc handles the byte after an ESC inside a string: '\\' ends it (ST),
// anything else starts a new escape with that byte.
func (st *stripper) strEsc(b byte) (again bool) {
	if b == '\\' {
		st.state = stGround
		return false
	}
	st.state = stEsc
	st.seqLen = 0
	return true
}

// rawEndOf maps a stripped end offset (exclusive) to the raw offset just
// after the raw byte that produced stripped byte e-1. pairs must be sorted.
func rawEndOf(pairs tapeView[offsetPair], e int64) int64 {
	if e <= 0 {
		return 0
	}
	s := e - 1
	// The last pair with text <= s.
	lo, hi := int64(0), pairs.end()
	for lo < hi {
		m := int64(uint64(lo+hi) >> 1)
		if pairs.at(m).text <= s {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return s + 1
	}
	p := pairs.at(lo - 1)
	return p.raw + (s - p.text) + 1
}

// textEndOf maps a raw end offset (exclusive) to the number of stripped
// bytes produced by raw bytes before it. textLen is the stripped length.
func textEndOf(pairs tapeView[offsetPair], textLen, e int64) int64 {
	if e <= 0 {
		return 0
	}
	r := e - 1
	// The last pair with raw <= r.
	lo, hi := int64(0), pairs.end()
	for lo < hi {
		m := int64(uint64(lo+hi) >> 1)
		if pairs.at(m).raw <= r {
			lo = m + 1
		} else {
			hi = m
		}
	}
	var p offsetPair
	next := textLen
	if lo > 0 {
		p = pairs.at(lo - 1)
	}
	if lo < pairs.end() {
		next = pairs.at(lo).text
	}
	return min(p.text+(r-p.raw)+1, next)
}
