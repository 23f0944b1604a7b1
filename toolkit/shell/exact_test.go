package shell

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand"
	"strings"
	"testing"
)

// fetchText is what "wc -c; sha256sum; base64" prints for data, lines
// ending "\r\n" as a terminal sends them.
func fetchText(data []byte) string {
	sum := sha256.Sum256(data)
	enc := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	fmt.Fprintf(&b, "%d\r\n%s  -\r\n", len(data), hex.EncodeToString(sum[:]))
	for len(enc) > 0 {
		n := min(b64Line, len(enc))
		b.WriteString(enc[:n] + "\r\n")
		enc = enc[n:]
	}
	return b.String()
}

// TestDecodeFetchUnderKernelLines: kernel lines landing anywhere in a
// fetch — between lines, inside a line, right after one, several at once,
// inside the header — are cut out and the bytes come back exact; what
// cannot be repaired is an error, never wrong bytes.
func TestDecodeFetchUnderKernelLines(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	kernel := []string{"[   25.459336] flood flood flood\r\n", "[    1.000000] a\r\n[    1.000001] b\r\n", "flood without a timestamp\r\n", "<4>[ 9.9] x\r\n"}
	for _, size := range []int{0, 1, 2, 3, 56, 57, 58, 1000, 20000} {
		data := make([]byte, size)
		rng.Read(data)
		clean := fetchText(data)
		if got, err := decodeFetch(clean); err != nil || string(got) != string(data) {
			t.Fatalf("size %d clean: %v", size, err)
		}
		header := strings.Index(clean[strings.IndexByte(clean, '\n')+1:], "\n") + strings.IndexByte(clean, '\n') + 2
		for trial := range 300 {
			text := clean
			for range 1 + trial%3 {
				at := rng.Intn(len(text) + 1)
				k := kernel[rng.Intn(len(kernel))]
				if trial%3 == 0 { // one timestamped kernel line, in the base64
					at = header + rng.Intn(len(text)-header+1)
					k = kernel[trial/3%2]
				}
				text = text[:at] + k + text[at:]
			}
			got, err := decodeFetch(text)
			if err == nil && string(got) != string(data) {
				t.Fatalf("size %d: wrong bytes from %q", size, text)
			}
			if err != nil && trial%3 == 0 {
				t.Errorf("size %d, one kernel line in the base64: %v in %q", size, err, text)
			}
		}
	}
	if _, err := decodeFetch("12\r\nnot a digest\r\n"); err == nil {
		t.Error("a fetch without a digest decoded")
	}
}
