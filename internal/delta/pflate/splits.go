package pflate

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// splitEvery is the segment length FindSplits aims at: long enough that restarting a
// compressor 32 to 64 KiB before each split costs about 2% more work, short enough that a few
// segments in flight stay within a few megabytes. Tests under the race detector lower it.
var splitEvery int64 = 2 << 20

// maxTries bounds the candidates checked for each split point, and probeBudget the bytes
// all probes compress, as a multiple of the input: a layer crafted so that candidates keep
// failing must not cost its parent more than a few compressions of it.
const (
	maxTries    = 24
	probeBudget = 2
)

// FindSplits finds split points for NewWriter: block boundaries of the deflate stream
// (deflateSize bytes read from deflate, written by compress/flate at level) at which a
// compressor restarted reproduces the stream, about 2 MiB apart, for the input it
// compresses (tarSize bytes read from tar). Each candidate is checked on the blocks that
// follow it up to the first Huffman block 32 KiB or more after it (a segment that reproduces
// those has forgotten the three hash-chain positions its flush left out, so its state is the
// serial compressor's from then on), and the whole set by compressing everything as NewWriter would and comparing with
// the stream, using workers goroutines. It returns nil and no error when no set of split
// points reproduces the stream or the input is too short to split; an error if the stream
// does not parse or is not the input's, or if reading fails.
func FindSplits(ctx context.Context, deflate io.ReaderAt, deflateSize int64, tar io.ReaderAt, tarSize int64, level, workers int) ([]int64, error) {
	if level < MinLevel || level > MaxLevel || tarSize < 2*splitEvery {
		return nil, nil
	}
	var blocks []Block
	err := Walk(io.NewSectionReader(deflate, 0, deflateSize), func(b Block) error {
		if len(blocks)%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		blocks = append(blocks, b)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if last := blocks[len(blocks)-1]; last.Offset+last.Size != tarSize {
		return nil, fmt.Errorf("pflate: the deflate stream holds %d bytes, the input %d", last.Offset+last.Size, tarSize)
	}

	var splits []int64
	prev := int64(0)
	i := 0 // next candidate block
	budget := probeBudget*tarSize + 2*MaxSegment
	for tarSize-prev > splitEvery*3/2 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		target := prev + splitEvery
		for i < len(blocks) && blocks[i].Offset < target {
			i++
		}
		found := false
		for tries := 0; tries < maxTries && i < len(blocks) && !blocks[i].Final; tries, i = tries+1, i+1 {
			u := blocks[i].Offset
			if u-prev > MaxSegment || tarSize-u < MinSegment {
				break
			}
			ok, cost, err := probe(deflate, blocks, i, tar, tarSize, level)
			if err != nil {
				return nil, err
			}
			if budget -= cost; budget < 0 {
				return nil, nil
			}
			if ok {
				found = true
				break
			}
		}
		if !found {
			if tarSize-prev <= MaxSegment {
				break // the rest is one last segment
			}
			return nil, nil
		}
		splits = append(splits, blocks[i].Offset)
		prev = blocks[i].Offset
	}
	if tarSize-prev > MaxSegment {
		return nil, nil
	}
	splits = append(splits, tarSize)
	if len(splits) < 2 {
		return nil, nil
	}
	if err := verify(ctx, deflate, deflateSize, tar, tarSize, level, splits, workers); err != nil {
		if errors.Is(err, ErrMismatch) {
			return nil, nil
		}
		return nil, err
	}
	return splits, nil
}

// probe checks a candidate split at blocks[i]: a compressor restarted there must emit the
// stream's own blocks up to and including the first Huffman block that starts 32 KiB or more
// after it.
// It returns the bytes it compressed too.
func probe(deflate io.ReaderAt, blocks []Block, i int, tar io.ReaderAt, tarSize int64, level int) (ok bool, cost int64, err error) {
	u := blocks[i].Offset
	last := i
	for last < len(blocks) && (blocks[last].Offset < u+windowSize+8 || blocks[last].Type == Stored) {
		last++
	}
	if last == len(blocks) || blocks[last].Offset+blocks[last].Size-u > MaxSegment {
		return false, 0, nil // too far to check, or the stream ends first
	}
	s := leadStart(u)
	end := min(blocks[last].Offset+blocks[last].Size+lookahead, tarSize)
	data := make([]byte, end-s)
	if _, err := tar.ReadAt(data, s); err != nil && !(errors.Is(err, io.EOF) && end == tarSize) {
		return false, 0, err
	}
	cost = end - s
	seg, err := compressSegment(level, data, int(u-s))
	if err != nil {
		return false, cost, err
	}
	j := i
	done := errors.New("done")
	var orig []byte
	err = WalkBytes(seg, func(b Block) error {
		ob := blocks[j]
		if ob.Offset != u+b.Offset || ob.Size != b.Size || ob.Type != b.Type || ob.Final != b.Final {
			return ErrMismatch
		}
		if b.Type != Stored {
			first := ob.Start / 8
			orig = append(orig[:0], make([]byte, (ob.End+7)/8-first)...)
			if _, err := deflate.ReadAt(orig, first); err != nil {
				return err
			}
			if !bitsEqual(orig, ob.Start-first*8, ob.End-first*8, seg, b.Start, b.End) {
				return ErrMismatch
			}
		}
		if j == last {
			return done
		}
		j++
		return nil
	})
	switch {
	case err == done:
		return true, cost, nil
	case err == nil, errors.Is(err, ErrMismatch):
		return false, cost, nil
	default:
		return false, cost, err
	}
}

// bitsEqual compares the bits [as, ae) of a with [bs, be) of b.
func bitsEqual(a []byte, as, ae int64, b []byte, bs, be int64) bool {
	if ae-as != be-bs {
		return false
	}
	for ae-as >= 32 {
		if uint32(loadBits(a, as)) != uint32(loadBits(b, bs)) {
			return false
		}
		as += 32
		bs += 32
	}
	m := uint64(1)<<uint(ae-as) - 1
	return loadBits(a, as)&m == loadBits(b, bs)&m
}

// verify compresses the whole input as NewWriter does with splits and compares the result
// with the stream.
func verify(ctx context.Context, deflate io.ReaderAt, deflateSize int64, tar io.ReaderAt, tarSize int64, level int, splits []int64, workers int) error {
	cmp := &comparer{want: bufio.NewReaderSize(io.NewSectionReader(deflate, 0, deflateSize), 256<<10)}
	pw, err := NewWriter(cmp, level, splits, workers)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < tarSize; {
		if err := ctx.Err(); err != nil {
			pw.Close()
			return err
		}
		n, err := tar.ReadAt(buf[:min(int64(len(buf)), tarSize-off)], off)
		if n > 0 {
			if _, werr := pw.Write(buf[:n]); werr != nil {
				pw.Close()
				return werr
			}
		}
		off += int64(n)
		if err != nil && !(errors.Is(err, io.EOF) && off == tarSize) {
			pw.Close()
			return err
		}
	}
	if err := pw.Close(); err != nil {
		return err
	}
	if cmp.err != nil {
		return cmp.err
	}
	if cmp.n != deflateSize {
		return fmt.Errorf("%w: %d bytes written, the stream has %d", ErrMismatch, cmp.n, deflateSize)
	}
	return nil
}

// comparer checks what is written to it against a reader.
type comparer struct {
	want *bufio.Reader
	n    int64
	buf  []byte
	err  error
}

func (c *comparer) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if cap(c.buf) < len(p) {
		c.buf = make([]byte, len(p))
	}
	got := c.buf[:len(p)]
	if _, err := io.ReadFull(c.want, got); err != nil {
		c.err = fmt.Errorf("%w: the output is longer than the stream's %d bytes", ErrMismatch, c.n)
		return 0, c.err
	}
	if !bytes.Equal(got, p) {
		for i := range p {
			if p[i] != got[i] {
				c.err = fmt.Errorf("%w: at byte %d of the stream", ErrMismatch, c.n+int64(i))
				break
			}
		}
		return 0, c.err
	}
	c.n += int64(len(p))
	return len(p), nil
}
