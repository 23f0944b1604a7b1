package iocount

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestCounts(t *testing.T) {
	r := &Reader{R: strings.NewReader("hello, world")}
	var b bytes.Buffer
	w := &Writer{W: &b}
	if _, err := io.CopyBuffer(w, struct{ io.Reader }{r}, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	if r.N != 12 || w.N != 12 || b.String() != "hello, world" {
		t.Fatalf("read %d, wrote %d, got %q", r.N, w.N, b.String())
	}
}
