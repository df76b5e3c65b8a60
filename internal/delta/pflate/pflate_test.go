package pflate

import (
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	kpflate "github.com/klauspost/compress/flate"
)

// layerLike returns n deterministic bytes shaped like a layer's tar: text, binary-like
// runs from a small repertoire, incompressible stretches long enough to be stored blocks,
// and long runs of zeros (tar padding, sparse files) that make 4 MiB blocks of matches.
func layerLike(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 0xf1a7e))
	words := []string{"the", "layer", "registry", "func", "return", "if", "err", "nil", "{", "}", "\n", "\t", " ", ":="}
	ops := make([][]byte, 200)
	for i := range ops {
		ops[i] = make([]byte, 1+rng.IntN(6))
		for j := range ops[i] {
			ops[i][j] = byte(rng.Uint32())
		}
	}
	b := make([]byte, 0, n+300<<10)
	for len(b) < n {
		switch rng.IntN(10) {
		case 0, 1, 2, 3:
			for end := len(b) + 1000 + rng.IntN(80000); len(b) < end; {
				b = append(b, words[rng.IntN(len(words))]...)
			}
		case 4, 5, 6:
			for end := len(b) + 5000 + rng.IntN(200000); len(b) < end; {
				b = append(b, ops[rng.IntN(len(ops))]...)
				b = append(b, byte(rng.Uint32()))
			}
		case 7, 8:
			for end := len(b) + 500 + rng.IntN(100000); len(b) < end; {
				b = append(b, byte(rng.Uint32()))
			}
		case 9:
			b = append(b, make([]byte, rng.IntN(300000))...)
		}
	}
	return b[:n]
}

func serial(tb testing.TB, data []byte, level int) []byte {
	tb.Helper()
	var out bytes.Buffer
	fw, err := flate.NewWriter(&out, level)
	if err != nil {
		tb.Fatal(err)
	}
	fw.Write(data)
	if err := fw.Close(); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

func parallel(tb testing.TB, data []byte, level int, splits []int64, workers, chunk int) ([]byte, error) {
	tb.Helper()
	var out bytes.Buffer
	pw, err := NewWriter(&out, level, splits, workers)
	if err != nil {
		return nil, err
	}
	for off := 0; off < len(data); off += chunk {
		if _, err := pw.Write(data[off:min(off+chunk, len(data))]); err != nil {
			pw.Close()
			return nil, err
		}
	}
	if err := pw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func findSplits(tb testing.TB, stream, data []byte, level int) []int64 {
	tb.Helper()
	splits, err := FindSplits(context.Background(), bytes.NewReader(stream), int64(len(stream)), bytes.NewReader(data), int64(len(data)), level, 2)
	if err != nil {
		tb.Fatal(err)
	}
	return splits
}

// The parallel writer reproduces the serial stream bit for bit, at every level it supports,
// for any sizes of writes and any number of workers.
func TestParallelReproducesSerial(t *testing.T) {
	size := 8 << 20 / sizeDiv
	levels := []int{4, 6, 9}
	cases := []struct{ workers, chunk int }{{1, 1 << 20}, {2, 32 << 10}, {4, 7777}, {3, 3 << 20}}
	if raceEnabled {
		levels, cases = []int{6}, cases[1:3]
	}
	data := layerLike(size, 1)
	for _, level := range levels {
		want := serial(t, data, level)
		splits := findSplits(t, want, data, level)
		if len(splits) < 3 {
			t.Fatalf("level %d: %d split points in %d bytes, want several", level, len(splits), len(data))
		}
		stored := 0
		WalkBytes(want, func(b Block) error {
			if b.Type == Stored {
				stored++
			}
			return nil
		})
		if stored == 0 {
			t.Fatalf("level %d: the test data makes no stored block", level)
		}
		for _, c := range cases {
			got, err := parallel(t, data, level, splits, c.workers, c.chunk)
			if err != nil {
				t.Fatalf("level %d, %d workers, writes of %d: %v", level, c.workers, c.chunk, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("level %d, %d workers, writes of %d: the output differs from the serial stream", level, c.workers, c.chunk)
			}
		}
		t.Logf("level %d: %d split points, %d stored blocks", level, len(splits), stored)
	}
}

// Input other than the one the split points were found on never yields a silently wrong
// stream that decodes to something else: either an error, or a valid deflate stream of the
// new input (the caller checks the digest anyway).
func TestParallelOtherInput(t *testing.T) {
	data := layerLike(6<<20/sizeDiv, 2)
	splits := findSplits(t, serial(t, data, 6), data, 6)
	if splits == nil {
		t.Fatal("no split points")
	}
	for name, other := range map[string][]byte{
		"other content": layerLike(len(data), 3),
		"bytes changed": func() []byte {
			b := bytes.Clone(data)
			for i := 1000; i < len(b); i += 1 << 20 {
				b[i] ^= 0x55
			}
			return b
		}(),
		"shorter": data[:len(data)-1],
	} {
		got, err := parallel(t, other, 6, splits, 2, 1<<20)
		if err != nil {
			if !errors.Is(err, ErrMismatch) {
				t.Errorf("%s: %v, want an error wrapping ErrMismatch", name, err)
			}
			continue
		}
		dec, err := io.ReadAll(flate.NewReader(bytes.NewReader(got)))
		if err != nil || !bytes.Equal(dec, other) {
			t.Errorf("%s: the output does not decode to the input (%v)", name, err)
		}
	}
	if _, err := parallel(t, append(bytes.Clone(data), 1), 6, splits, 2, 1<<20); !errors.Is(err, ErrMismatch) {
		t.Errorf("a longer input: %v, want ErrMismatch", err)
	}
}

func TestFindSplitsNone(t *testing.T) {
	small := layerLike(int(2*splitEvery)-1, 4)
	if s := findSplits(t, serial(t, small, 6), small, 6); s != nil {
		t.Errorf("%d bytes split at %v; too short to be worth it", len(small), s)
	}
	data := layerLike(6<<20/sizeDiv, 5)
	stream := serial(t, data, 6)
	if s, err := FindSplits(context.Background(), bytes.NewReader(stream), int64(len(stream)), bytes.NewReader(data), int64(len(data)), 1, 2); s != nil || err != nil {
		t.Errorf("level 1: %v, %v; want none", s, err)
	}
	// Another compressor's stream: split points are checked against it and none hold.
	var kp bytes.Buffer
	kw, _ := kpflate.NewWriter(&kp, 6)
	kw.Write(data)
	kw.Close()
	if s := findSplits(t, kp.Bytes(), data, 6); s != nil {
		t.Errorf("klauspost's stream split at %v", s)
	}
	// A stream of other data.
	other := layerLike(len(data), 6)
	if s, err := FindSplits(context.Background(), bytes.NewReader(stream), int64(len(stream)), bytes.NewReader(other), int64(len(other)), 6, 2); s != nil || err != nil {
		t.Errorf("stream of other data: %v, %v; want none", s, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := FindSplits(ctx, bytes.NewReader(stream), int64(len(stream)), bytes.NewReader(data), int64(len(data)), 6, 2); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestValidateSplits(t *testing.T) {
	for _, c := range []struct {
		splits []int64
		ok     bool
	}{
		{[]int64{100}, true},
		{[]int64{MinSegment, MinSegment + 1}, true},
		{[]int64{MaxSegment, 2 * MaxSegment}, true},
		{nil, false},
		{[]int64{0}, false},
		{[]int64{-5}, false},
		{[]int64{MinSegment - 1, 2 * MinSegment}, false},
		{[]int64{MaxSegment + 1, MaxSegment + 2}, false},
		{[]int64{MinSegment, MinSegment}, false},
		{[]int64{2 * MinSegment, MinSegment}, false},
		{[]int64{MinSegment, MinSegment + MaxSegment + 1}, false},
	} {
		if err := ValidateSplits(c.splits); (err == nil) != c.ok {
			t.Errorf("ValidateSplits(%v) = %v, want ok %v", c.splits, err, c.ok)
		}
	}
	if _, err := NewWriter(io.Discard, 3, []int64{100}, 1); err == nil {
		t.Error("level 3 accepted")
	}
}

// Walk finds every block of streams from several compressors, sized and located exactly.
func TestWalk(t *testing.T) {
	data := layerLike(3<<20/sizeDiv, 7)
	streams := map[string][]byte{}
	for _, level := range []int{-2, 0, 1, 2, 6, 9} {
		streams[fmt.Sprintf("go level %d", level)] = serial(t, data, level)
	}
	for _, level := range []int{1, 5, 9} {
		var b bytes.Buffer
		kw, _ := kpflate.NewWriter(&b, level)
		kw.Write(data[:len(data)/3])
		kw.Flush()
		kw.Write(data[len(data)/3:])
		kw.Close()
		streams[fmt.Sprintf("klauspost level %d", level)] = b.Bytes()
	}
	var fixed bytes.Buffer
	fw, _ := flate.NewWriter(&fixed, 6)
	fw.Write([]byte("a short text gets a fixed Huffman block"))
	fw.Close()
	streams["fixed"] = fixed.Bytes()
	for name, stream := range streams {
		var total int64
		var last Block
		types := map[int]int{}
		for _, walk := range []func([]byte, func(Block) error) error{
			WalkBytes,
			func(b []byte, fn func(Block) error) error { return Walk(io.MultiReader(bytes.NewReader(b)), fn) },
		} {
			total = 0
			err := walk(stream, func(b Block) error {
				if b.Offset != total || b.Start != last.End && total > 0 {
					t.Fatalf("%s: block at %d/%d does not follow the previous one", name, b.Offset, b.Start)
				}
				if b.Type == Stored && !bytes.Equal(stream[b.DataByte:b.DataByte+b.Size], data[b.Offset:b.Offset+b.Size]) && name != "fixed" {
					t.Fatalf("%s: stored block at %d holds other bytes", name, b.Offset)
				}
				types[b.Type]++
				total += b.Size
				last = b
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !last.Final || (last.End+7)/8 != int64(len(stream)) {
				t.Fatalf("%s: ends at bit %d (final %v) of %d bytes", name, last.End, last.Final, len(stream))
			}
		}
		want := int64(len(data))
		if name == "fixed" {
			want = int64(len("a short text gets a fixed Huffman block"))
		}
		if total != want {
			t.Fatalf("%s: blocks make %d bytes, want %d", name, total, want)
		}
		t.Logf("%s: %v", name, types)
	}
}

// A damaged stream is reported as such or as cut short, never a panic.
func TestWalkCorrupt(t *testing.T) {
	stream := serial(t, layerLike(1<<20/sizeDiv, 8), 6)
	rng := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 300; i++ {
		b := bytes.Clone(stream[:rng.IntN(len(stream))])
		for range rng.IntN(4) {
			if len(b) > 0 {
				b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
			}
		}
		err := WalkBytes(b, func(Block) error { return nil })
		if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("unexpected error kind: %v", err)
		}
	}
	if err := WalkBytes([]byte{0x07}, func(Block) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reserved block type: %v", err)
	}
	if err := WalkBytes([]byte{0x01, 0x05, 0x00, 0x00, 0x00}, func(Block) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Errorf("LEN and NLEN disagree: %v", err)
	}
}

func FuzzWalk(f *testing.F) {
	f.Add(serial(f, layerLike(64<<10, 10), 6))
	f.Add(serial(f, []byte("hello, hello, hello"), 1))
	f.Add(serial(f, layerLike(20000, 11), 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		var total int64
		WalkBytes(b, func(bl Block) error {
			if bl.Offset != total || bl.End < bl.Start {
				t.Fatalf("inconsistent block %+v after %d bytes", bl, total)
			}
			total += bl.Size
			return nil
		})
		var n int64
		Walk(bytes.NewReader(b), func(bl Block) error { n += bl.Size; return nil })
		if n != total {
			t.Fatalf("Walk and WalkBytes disagree: %d and %d bytes", n, total)
		}
	})
}
