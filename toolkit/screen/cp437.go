package screen

// cp437 maps the VGA text buffer's character codes (code page 437, the
// glyphs of the adapter's built-in font) to Unicode, box drawing and the
// symbols of 0x01–0x1F included. 0x00 and 0xFF draw as blanks and map to a
// space (the Cell keeps the code).
var cp437 = [256]rune{}

func init() {
	low := []rune(" ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼")
	high := []rune("ÇüéâäàåçêëèïîìÄÅ" +
		"ÉæÆôöòûùÿÖÜ¢£¥₧ƒ" +
		"áíóúñÑªº¿⌐¬½¼¡«»" +
		"░▒▓│┤╡╢╖╕╣║╗╝╜╛┐" +
		"└┴┬├─┼╞╟╚╔╩╦╠═╬╧" +
		"╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀" +
		"αßΓπΣσµτΦΘΩδ∞φε∩" +
		"≡±≥≤⌠⌡÷≈°∙·√ⁿ²■ ")
	if len(low) != 32 || len(high) != 128 {
		panic("screen: code page 437 table has the wrong size")
	}
	copy(cp437[:32], low)
	for c := 0x20; c < 0x7f; c++ {
		cp437[c] = rune(c)
	}
	cp437[0x7f] = '⌂'
	copy(cp437[0x80:], high)
}

// CP437 returns the Unicode character of a VGA text-mode character code.
func CP437(code byte) rune { return cp437[code] }
