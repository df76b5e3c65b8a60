package iocount

import (
	"bytes"
	"errors"
	"testing"
)

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, errors.New("short") }

func TestWriter(t *testing.T) {
	var b bytes.Buffer
	w := &Writer{W: &b}
	for _, s := range []string{"abc", "", "defgh"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if w.N != 8 || b.String() != "abcdefgh" {
		t.Fatalf("N = %d, buffer %q", w.N, b.String())
	}
	// Only what the underlying writer accepted counts.
	s := &Writer{W: shortWriter{}}
	if n, err := s.Write(make([]byte, 10)); n != 5 || err == nil || s.N != 5 {
		t.Fatalf("short write: %d, %v, N = %d", n, err, s.N)
	}
}
