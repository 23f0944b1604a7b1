// Package iocount counts the bytes that pass through a reader or a writer.
package iocount

import "io"

// Reader counts the bytes read through it.
type Reader struct {
	R io.Reader
	N int64 // bytes read so far
}

// Read reads from R and counts what it got.
func (c *Reader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N += int64(n)
	return n, err
}

// Writer counts the bytes written through it.
type Writer struct {
	W io.Writer
	N int64 // bytes written so far
}

// Write writes to W and counts what it took.
func (c *Writer) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}
