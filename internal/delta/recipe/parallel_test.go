package recipe

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// A go-gzip blob recompressed in parallel at the split points found on it is the blob.
func TestNewWriterSplits(t *testing.T) {
	if raceEnabled {
		t.Skip("compress/flate on 5 MiB is too slow under the race detector; pflate's tests cover the parallel writer there")
	}
	data := testTar(t, 5<<20, 21)
	for _, level := range []int{6, 9} {
		blob := stdGzip(level)(t, data)
		rc, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		splits, err := FindSplits(context.Background(), bytes.NewReader(blob), int64(len(blob)), rc, bytes.NewReader(data), int64(len(data)))
		if err != nil || len(splits) < 2 {
			t.Fatalf("level %d: split points %v, %v", level, splits, err)
		}
		var out bytes.Buffer
		w, err := NewWriterSplits(&out, rc, splits)
		if err != nil {
			t.Fatal(err)
		}
		mustWriteClose(t, w, data)
		if !bytes.Equal(out.Bytes(), blob) {
			t.Fatalf("level %d: the parallel recompression differs from the blob", level)
		}
		// Other content with the same split points fails as a mismatch or differs; the
		// caller's digest check catches the latter.
		other := bytes.Clone(data)
		other[len(other)/2] ^= 1
		out.Reset()
		w, _ = NewWriterSplits(&out, rc, splits)
		_, werr := w.Write(other)
		if err := w.Close(); werr == nil && err == nil && bytes.Equal(out.Bytes(), blob) {
			t.Fatalf("level %d: other content recompressed to the blob", level)
		} else if err != nil && !errors.Is(err, ErrMismatch) {
			t.Fatalf("level %d: %v, want ErrMismatch", level, err)
		}
	}
}

func TestSplitsOnlyForGoGzip(t *testing.T) {
	data := testTar(t, 1<<20, 22)
	for _, p := range testedProducers() {
		blob := p.compress(t, data)
		rc, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob))
		if err != nil {
			continue
		}
		if parallelRecipe(rc) {
			continue
		}
		if s, err := FindSplits(context.Background(), bytes.NewReader(blob), int64(len(blob)), rc, bytes.NewReader(data), int64(len(data))); s != nil || err != nil {
			t.Errorf("%s: split points %v, %v", rc, s, err)
		}
		if _, err := NewWriterSplits(&bytes.Buffer{}, rc, []int64{1 << 20}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s with split points: %v, want ErrInvalid", rc, err)
		}
	}
	rc := Recipe{Format: FormatGzip, Compressor: CompressorGoGzip, Level: 6, Toolchain: familyGo, Header: []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}}
	for _, bad := range [][]int64{{0}, {100, 50}, {1, 2 << 20}} {
		if _, err := NewWriterSplits(&bytes.Buffer{}, rc, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("split points %v: %v, want ErrInvalid", bad, err)
		}
	}
}

// DetectAndConfirmSplits finds the recipe DetectAndConfirm finds, with split points for go-gzip
// at levels 4 to 9, and the recipe reproduces the blob serially too.
func TestDetectAndConfirmSplits(t *testing.T) {
	if raceEnabled {
		t.Skip("compress/flate on 5 MiB is too slow under the race detector")
	}
	data := testTar(t, 5<<20, 24)
	for _, c := range []struct {
		name      string
		compress  func(testing.TB, []byte) []byte
		wantSplit bool
	}{
		{"go-gzip 6", stdGzip(6), true},
		{"go-gzip 4", stdGzip(4), true},
		{"go-gzip 1", stdGzip(1), false},
		{"klauspost-gzip 5", kpGzip(5), false},
		{"pgzip", pGzip(5, 1<<20, 4), false},
	} {
		blob := c.compress(t, data)
		rc, splits, err := DetectAndConfirmSplits(context.Background(), bytes.NewReader(blob), int64(len(blob)), bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (len(splits) > 0) != c.wantSplit {
			t.Errorf("%s: %s with split points %v", c.name, rc, splits)
		}
		want, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob))
		if err != nil || want.String() != rc.String() {
			t.Errorf("%s: recipe %s, DetectAndConfirm %s (%v)", c.name, rc, want, err)
		}
		if got := recompress(t, rc, data, 1); !bytes.Equal(got, blob) {
			t.Errorf("%s: %s does not reproduce the blob serially", c.name, rc)
		}
	}
}
