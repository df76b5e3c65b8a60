package pflate

import (
	"bytes"
	stdflate "compress/flate"
	"errors"
	"fmt"
	"io"
	"sync"
)

// How a segment reproduces the serial stream. The serial compressor (compress/flate, levels
// 4 to 9) ends a block every 16,384 tokens. At such a block boundary U its state is, apart
// from its history, the state of a compressor that has just flushed: no pending tokens, no
// byte waiting for a lazy match, the next block's stored-size window starting at U. So a
// compressor given the bytes before U, flushed, and then given the bytes from U on emits the
// serial stream's blocks from U on, provided that
//
//   - it holds the same 32 KiB history: it is started at least 32 KiB before U;
//   - its window slides at the same positions, because a block that straddles a slide cannot
//     be stored: it is started at a multiple of 32 KiB, as the serial compressor was;
//   - the three positions before U, which a flush leaves out of the hash chains, change none
//     of the matches chosen in the 32 KiB after U. That depends on the content, so the
//     parent checks each split point (FindSplits) before sending it.
//
// Its output is byte aligned after the flush, whereas the serial stream's block at U starts
// at any bit; Huffman blocks are copied bit for bit, but a stored block's padding depends on
// where it starts, so the segments' blocks are re-emitted by walking them (Walk) and writing
// stored blocks anew at their real position.

// MinLevel and MaxLevel bound the compress/flate levels the parallel writer reproduces: the
// lazy-matching levels, whose compressor inserts every position into its hash chains (levels
// 2 and 3 skip positions inside long matches, level 1 is another algorithm).
const (
	MinLevel = 4
	MaxLevel = 9
)

// Limits on split points. They bound what a writer buffers (MaxSegment per segment in
// flight) and the overhead of restarting at each split (MinSegment).
const (
	MinSegment = 256 << 10
	MaxSegment = 8 << 20
)

const (
	windowSize = 1 << 15
	// lookahead is how far past a segment's end its compressor is fed: the serial compressor
	// chose the tokens before the boundary looking up to 258+4 bytes ahead.
	lookahead = 4 << 10
)

// ErrMismatch: a segment did not reproduce the serial stream's blocks (a split point that
// was not checked, or input other than the one the split points were found on).
var ErrMismatch = errors.New("pflate: segment does not match the serial stream")

// leadStart is where a segment starting at u begins compressing: the last multiple of 32 KiB
// that leaves at least 32 KiB of history before u.
func leadStart(u int64) int64 {
	if u < windowSize {
		return 0
	}
	return (u - windowSize) / windowSize * windowSize
}

// ValidateSplits checks split points received from elsewhere: strictly increasing, the
// first after 0, segments between MinSegment and MaxSegment bytes, and the last equal to the
// total size of the input.
func ValidateSplits(splits []int64) error {
	if len(splits) == 0 {
		return errors.New("no split points")
	}
	prev := int64(0)
	for i, s := range splits {
		seg := s - prev
		last := i == len(splits)-1
		if seg > MaxSegment || (seg < MinSegment && !last) || seg <= 0 {
			return fmt.Errorf("split point %d at byte %d makes a segment of %d bytes, not %d to %d", i, s, seg, MinSegment, MaxSegment)
		}
		prev = s
	}
	return nil
}

// Writer compresses like compress/flate.NewWriter(w, level) followed by Close, to the same
// bytes, compressing the segments between split points in parallel.
type Writer struct {
	level   int
	bounds  []int64 // segment ends; the last is the input's size
	k       int     // segment being filled
	buf     []byte  // input from bufStart on
	bufAt   int64
	written int64
	jobs    chan *job // in order, to the assembler
	sem     chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	err     error
	closed  bool
	out     *bitWriter
}

type job struct {
	k     int
	data  []byte
	lead  int   // data[:lead] only primes the compressor
	want  int64 // bytes of this segment
	last  bool
	out   []byte
	err   error
	ready chan struct{}
}

// NewWriter returns a writer of the deflate stream of exactly splits[len(splits)-1] bytes,
// compressed at level in segments ending at the split points, workers at a time. The split
// points must satisfy ValidateSplits and have been found by FindSplits on this input; a
// segment that does not reproduce the serial stream makes Write or Close fail with an error
// wrapping ErrMismatch. Close ends the stream (it does not close w) and must be called to
// stop the writer's goroutines.
func NewWriter(w io.Writer, level int, splits []int64, workers int) (*Writer, error) {
	if level < MinLevel || level > MaxLevel {
		return nil, fmt.Errorf("pflate: level %d is not reproduced in parallel (only %d to %d)", level, MinLevel, MaxLevel)
	}
	if err := ValidateSplits(splits); err != nil {
		return nil, fmt.Errorf("pflate: %w", err)
	}
	workers = max(workers, 1)
	pw := &Writer{
		level:  level,
		bounds: splits,
		jobs:   make(chan *job, workers),
		sem:    make(chan struct{}, workers),
		done:   make(chan struct{}),
		out:    newBitWriter(w),
	}
	go pw.assemble()
	return pw, nil
}

func (pw *Writer) failed() error {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.err
}

func (pw *Writer) fail(err error) {
	pw.mu.Lock()
	if pw.err == nil {
		pw.err = err
	}
	pw.mu.Unlock()
}

// Write buffers p and hands each segment to a compressor as soon as its bytes and their
// lookahead are in.
func (pw *Writer) Write(p []byte) (int, error) {
	if pw.closed {
		return 0, errors.New("pflate: write after Close")
	}
	if err := pw.failed(); err != nil {
		return 0, err
	}
	total := pw.bounds[len(pw.bounds)-1]
	if pw.written+int64(len(p)) > total {
		return 0, fmt.Errorf("%w: more than the %d bytes the split points were found on", ErrMismatch, total)
	}
	n := len(p)
	for len(p) > 0 {
		last := pw.k == len(pw.bounds)-1
		end := total
		if !last {
			end = min(pw.bounds[pw.k]+lookahead, total)
		}
		take := min(int64(len(p)), end-pw.written)
		pw.buf = append(pw.buf, p[:take]...)
		pw.written += take
		p = p[take:]
		if pw.written == end && !last {
			pw.dispatch()
		}
	}
	return n, nil
}

// dispatch starts compressing segment k, whose bytes are all in buf, and carries over into
// a new buffer what the next segment needs of them.
func (pw *Writer) dispatch() {
	u := int64(0)
	if pw.k > 0 {
		u = pw.bounds[pw.k-1]
	}
	j := &job{
		k:     pw.k,
		data:  pw.buf,
		lead:  int(u - pw.bufAt),
		want:  pw.bounds[pw.k] - u,
		last:  pw.k == len(pw.bounds)-1,
		ready: make(chan struct{}),
	}
	if !j.last {
		next := leadStart(pw.bounds[pw.k])
		carry := pw.buf[next-pw.bufAt:]
		pw.buf = append(getBuf(int(pw.bounds[pw.k+1]-next+lookahead)), carry...)
		pw.bufAt = next
		pw.k++
	} else {
		pw.buf = nil
	}
	pw.sem <- struct{}{}
	go func() {
		defer func() { <-pw.sem }()
		j.out, j.err = compressSegment(pw.level, j.data, j.lead)
		putBuf(j.data)
		j.data = nil
		close(j.ready)
	}()
	pw.jobs <- j
}

// compressSegment compresses data[lead:] after priming a compressor with data[:lead] and
// returns what it emitted for data[lead:].
func compressSegment(level int, data []byte, lead int) ([]byte, error) {
	// Room for data that does not compress, so that the buffer hardly ever grows.
	n := len(data) - lead
	out := bytes.NewBuffer(getBuf(n + n/32 + 4096))
	fw := getFlate(out, level)
	defer putFlate(fw, level)
	if lead > 0 {
		if _, err := fw.Write(data[:lead]); err != nil {
			return nil, err
		}
		if err := fw.Flush(); err != nil {
			return nil, err
		}
		out.Reset() // the priming's output, sync marker included, is not part of the stream
	}
	if _, err := fw.Write(data[lead:]); err != nil {
		return nil, err
	}
	if err := fw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// bufPool holds the buffers of segments' input and output, a few megabytes each: a rebuild
// goes through hundreds of them.
var bufPool sync.Pool // of *[]byte

// getBuf returns an empty buffer with room for n bytes.
func getBuf(n int) []byte {
	if p, ok := bufPool.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:0]
	}
	return make([]byte, 0, n)
}

func putBuf(b []byte) {
	if cap(b) > 0 && cap(b) <= 2*MaxSegment {
		bufPool.Put(&b)
	}
}

var flatePools [MaxLevel + 1]sync.Pool

func getFlate(w io.Writer, level int) *stdflate.Writer {
	if fw, ok := flatePools[level].Get().(*stdflate.Writer); ok {
		fw.Reset(w)
		return fw
	}
	fw, _ := stdflate.NewWriter(w, level) // the level was checked
	return fw
}

func putFlate(fw *stdflate.Writer, level int) {
	fw.Reset(io.Discard)
	flatePools[level].Put(fw)
}

// assemble writes the segments' blocks in order.
func (pw *Writer) assemble() {
	defer close(pw.done)
	for j := range pw.jobs {
		<-j.ready
		if pw.failed() != nil {
			continue
		}
		err := j.err
		if err == nil {
			err = appendSegment(pw.out, j.out, j.want, j.last)
			putBuf(j.out)
			j.out = nil
		}
		if err == nil {
			err = pw.out.err
		}
		if err != nil {
			pw.fail(fmt.Errorf("segment %d: %w", j.k, err))
		}
	}
}

// appendSegment copies to out the blocks of seg, a segment's compressed output, that make its
// first want bytes, or all of them up to the final block when last.
func appendSegment(out *bitWriter, seg []byte, want int64, last bool) error {
	errEnd := errors.New("end of segment")
	err := WalkBytes(seg, func(b Block) error {
		if !last && b.Offset >= want {
			return errEnd
		}
		if !last && b.Offset+b.Size > want {
			return fmt.Errorf("%w: a block spans bytes %d to %d across the segment's end at %d", ErrMismatch, b.Offset, b.Offset+b.Size, want)
		}
		if b.Type == Stored {
			out.writeStored(b.Final, seg[b.DataByte:b.DataByte+b.Size])
		} else {
			out.copyBits(seg, b.Start, b.End)
		}
		if b.Final && !last {
			return fmt.Errorf("%w: the segment ends the stream", ErrMismatch)
		}
		return nil
	})
	if err == errEnd {
		return nil
	}
	if err != nil && !errors.Is(err, ErrMismatch) {
		// The stream is compress/flate's own: it cannot fail to parse.
		return fmt.Errorf("pflate: walking a segment: %w", err)
	}
	return err
}

// Close compresses the last segment and writes the end of the stream.
func (pw *Writer) Close() error {
	if pw.closed {
		return pw.failed()
	}
	pw.closed = true
	total := pw.bounds[len(pw.bounds)-1]
	if pw.failed() == nil {
		if pw.written != total {
			pw.fail(fmt.Errorf("%w: %d bytes written, the split points were found on %d", ErrMismatch, pw.written, total))
		} else {
			pw.dispatch()
		}
	}
	close(pw.jobs)
	<-pw.done
	if err := pw.failed(); err != nil {
		return err
	}
	return pw.out.close()
}
