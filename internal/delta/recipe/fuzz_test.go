package recipe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
)

func FuzzGzipHeader(f *testing.F) {
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Add([]byte{0x1f, 0x8b, 8, flagExtra | flagName | flagComment | flagHCRC, 1, 2, 3, 4, 0, 3, 2, 0, 'a', 'b', 'n', 0, 'c', 0, 0, 0})
	f.Add([]byte{0x1f, 0x8b, 8, flagExtra, 0, 0, 0, 0, 0, 0, 0xff, 0xff})
	f.Add([]byte{0x1f, 0x8b, 8, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parseGzipHeader(b)
		if err != nil {
			if !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if n < 10 || n > len(b) || n > MaxHeaderSize {
			t.Fatalf("header length %d of %d bytes", n, len(b))
		}
		// A header that parses is a valid recipe header.
		rc := Recipe{Format: FormatGzip, Compressor: CompressorGoGzip, Level: 1, Header: b[:n], Toolchain: "t"}
		if err := rc.Validate(); err != nil {
			t.Fatalf("parsed header refused by Validate: %v", err)
		}
	})
}

func FuzzZstdWalker(f *testing.F) {
	f.Add(kpZstd()(f, []byte("hello hello hello hello")))
	f.Add(kpZstd()(f, testTar(f, 300<<10, 11)))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x00, 0x01, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var w zstdWalker
		for len(b) > 0 {
			n := min(len(b), 1+int(b[0])%7)
			if _, err := w.Write(b[:n]); err != nil {
				break
			}
			b = b[n:]
		}
		w.finish()
	})
}

func FuzzParseRecipe(f *testing.F) {
	f.Add([]byte(`{"format":"gzip","compressor":"go-gzip","toolchain":"go1.8","level":6,"header":"H4sIAAAAAAAA/w=="}`))
	f.Add([]byte(`{"format":"gzip","compressor":"pgzip","toolchain":"klauspost1.20","level":5,"blockSize":1048576,"header":"H4sIAAAJbogA/w=="}`))
	f.Add([]byte(`{"format":"zstd","compressor":"klauspost-zstd","toolchain":"klauspost1.20","level":2,"windowSize":8388608,"checksum":true}`))
	f.Add([]byte(`{"level":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rc, err := ParseRecipe(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if err := rc.Validate(); err != nil {
			t.Fatal(err)
		}
		js, err := json.Marshal(rc)
		if err != nil {
			t.Fatal(err)
		}
		rc2, err := ParseRecipe(js)
		if err != nil || rc2.String() != rc.String() || !bytes.Equal(rc2.Header, rc.Header) {
			t.Fatalf("JSON round trip: %v, %s vs %s", err, rc2, rc)
		}
		// A valid recipe builds a writer or is refused for its toolchain, never panics.
		if w, err := NewWriter(&bytes.Buffer{}, rc); err == nil {
			w.Write([]byte("content"))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		} else if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("NewWriter: %v", err)
		}
	})
}

// Detection on arbitrary bytes must not panic, and whatever it accepts it must reproduce.
func FuzzDetect(f *testing.F) {
	small := testTar(f, 20<<10, 12)
	for _, p := range testedProducers() {
		f.Add(p.compress(f, small))
	}
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, blob []byte) {
		rc, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob))
		if err != nil {
			if !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if err := Confirm(context.Background(), bytes.NewReader(blob), rc); err != nil {
			t.Fatalf("DetectAndConfirm found %s, Confirm says %v", rc, err)
		}
	})
}
