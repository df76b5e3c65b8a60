// Package iocount counts the bytes written through a writer.
package iocount

import "io"

// Writer passes writes on to W and adds the bytes W accepted to N.
type Writer struct {
	W io.Writer
	N int64
}

func (c *Writer) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}
