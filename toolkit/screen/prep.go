package screen

import "strings"

// preprocess turns an RGB screendump into the gray image tesseract reads
// best: dark text on white, enlarged opt.Scale times. It returns the pixels
// and their size.
func preprocess(opt OCROptions, w, h int, rgb []byte) ([]byte, int, int) {
	var g []byte
	if opt.Prep == "gray" {
		g = luminance(w, h, rgb)
	} else {
		g = runsBackground(w, h, rgb)
	}
	if opt.Scale > 1 {
		g = scale(g, w, h, opt.Scale)
		w, h = w*opt.Scale, h*opt.Scale
	}
	return g, w, h
}

func luminance(w, h int, rgb []byte) []byte {
	g := make([]byte, w*h)
	for i := range g {
		g[i] = byte((299*int(rgb[3*i]) + 587*int(rgb[3*i+1]) + 114*int(rgb[3*i+2])) / 1000)
	}
	return g
}

// Background estimation: runLen is how long a horizontal run of one
// colour (4 bits a channel) must be to count as background, longer than a
// glyph's strokes; a pixel's distance from its background is multiplied by
// 3/2, so that a difference of 170 of 255 is black: text, but not the
// darker shadow vesamenu draws under it (×3 made shadowed text bold and
// cost vesamenu's menu 6 points of accuracy at ×2 scale; ×1 lost GRUB's).
const (
	runLen      = 24
	distGainNum = 3
	distGainDen = 2
)

// runsBackground paints every pixel by its colour distance from its
// background: background white, text dark, whatever the colours (light on
// dark menus, a dark-on-light highlighted entry, coloured or shadowed text
// on a picture). The background of a pixel is the colour of the nearest
// pixel above or below it (itself included) that lies in a long horizontal
// run of one colour: the blank pixel rows between text lines, or the
// padding rows of a highlighted bar. Measured against the luminance alone
// (which tesseract inverts by itself where it has to), it keeps the
// highlighted entry of a menu that luminance loses.
func runsBackground(w, h int, rgb []byte) []byte {
	q := func(i int) int {
		return int(rgb[3*i]>>4)<<8 | int(rgb[3*i+1]>>4)<<4 | int(rgb[3*i+2]>>4)
	}
	long := make([]bool, w*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; {
			c := q(y*w + x)
			e := x + 1
			for e < w && q(y*w+e) == c {
				e++
			}
			if e-x >= runLen {
				for i := x; i < e; i++ {
					long[y*w+i] = true
				}
			}
			x = e
		}
	}
	out := make([]byte, w*h)
	up := make([]int, h) // the nearest long-run row at or above, -1 if none
	for x := 0; x < w; x++ {
		last := -1
		for y := 0; y < h; y++ {
			if long[y*w+x] {
				last = y
			}
			up[y] = last
		}
		next := -1
		for y := h - 1; y >= 0; y-- {
			if long[y*w+x] {
				next = y
			}
			by := up[y]
			if by < 0 || (next >= 0 && next-y < y-by) {
				by = next
			}
			i := y*w + x
			if by < 0 {
				out[i] = 255
				continue
			}
			b := by*w + x
			d := max(abs(int(rgb[3*i])-int(rgb[3*b])), abs(int(rgb[3*i+1])-int(rgb[3*b+1])), abs(int(rgb[3*i+2])-int(rgb[3*b+2])))
			out[i] = byte(255 - min(255, d*distGainNum/distGainDen))
		}
	}
	return out
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// scale enlarges a gray image k times with bilinear interpolation.
func scale(g []byte, w, h, k int) []byte {
	W, H := w*k, h*k
	out := make([]byte, W*H)
	for Y := 0; Y < H; Y++ {
		// Source coordinates of the pixel centre, in 1/256ths.
		sy := max(0, ((2*Y+1)*256/(2*k))-128)
		y0, fy := min(sy>>8, h-1), sy&255
		y1 := min(y0+1, h-1)
		for X := 0; X < W; X++ {
			sx := max(0, ((2*X+1)*256/(2*k))-128)
			x0, fx := min(sx>>8, w-1), sx&255
			x1 := min(x0+1, w-1)
			top := int(g[y0*w+x0])*(256-fx) + int(g[y0*w+x1])*fx
			bot := int(g[y1*w+x0])*(256-fx) + int(g[y1*w+x1])*fx
			out[Y*W+X] = byte((top*(256-fy) + bot*fy) >> 16)
		}
	}
	return out
}

// typographic maps the quotes and dashes OCR likes to print to the ASCII a
// boot screen shows.
var typographic = strings.NewReplacer("‘", "`", "’", "'", "“", "\"", "”", "\"", "—", "-", "–", "-")
