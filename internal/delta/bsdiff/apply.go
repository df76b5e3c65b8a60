package bsdiff

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/klauspost/compress/zstd"
)

const (
	// maxStreamWindow is the largest zstd window a stream may use; it
	// bounds each of Apply's decoders. Diff's streams gain nothing from
	// more (measured on executables: within 0.01% from 1 to 8 MiB).
	maxStreamWindow = 1 << 20

	chunkSize   = 32 << 10  // approximate and extra bytes handled per step
	oldReadSize = 128 << 10 // the most old bytes read per ReadAt
)

// ErrCorrupt is matched (errors.Is) by every error Apply and NewSize return
// for a patch that is malformed, truncated or inconsistent with old's size.
var ErrCorrupt = errors.New("bsdiff: corrupt patch")

type corruptError struct{ msg string }

func (e *corruptError) Error() string        { return "bsdiff: corrupt patch: " + e.msg }
func (e *corruptError) Is(target error) bool { return target == ErrCorrupt }

func corruptf(format string, a ...any) error {
	return &corruptError{msg: fmt.Sprintf(format, a...)}
}

var streamNames = [numStreams]string{"control", "runs", "values", "extra"}

type header struct {
	newSize int64
	streams [numStreams][]byte
}

func parseHeader(patch []byte) (header, error) {
	var h header
	p := patch
	next := func(what string) (uint64, error) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, corruptf("bad or truncated %s", what)
		}
		p = p[n:]
		return v, nil
	}
	size, err := next("output size")
	if err != nil {
		return h, err
	}
	if size > math.MaxInt64 {
		return h, corruptf("output size %d out of range", size)
	}
	h.newSize = int64(size)
	var lens [numStreams]uint64
	for i := range lens {
		if lens[i], err = next(streamNames[i] + " stream length"); err != nil {
			return h, err
		}
	}
	for i, n := range lens {
		if n > uint64(len(p)) {
			return h, corruptf("%s stream of %d bytes, %d left in the patch", streamNames[i], n, len(p))
		}
		h.streams[i], p = p[:n], p[n:]
	}
	if len(p) != 0 {
		return h, corruptf("%d bytes after the streams", len(p))
	}
	return h, nil
}

// NewSize returns the size of the output the patch describes, so that a
// caller can check it before Apply writes anything.
func NewSize(patch []byte) (int64, error) {
	h, err := parseHeader(patch)
	return h.newSize, err
}

// applier is Apply's working memory, pooled: the decoders keep their
// window buffers between uses.
type applier struct {
	dec       [numStreams]*zstd.Decoder
	src       [numStreams]bytes.Reader
	ctrl      *bufio.Reader
	runs      *bufio.Reader
	buf, old  []byte
	zeros, nz uint64 // left of the current run code
}

var appliers sync.Pool

func getApplier() (*applier, error) {
	if a, ok := appliers.Get().(*applier); ok {
		return a, nil
	}
	a := &applier{buf: make([]byte, chunkSize), old: make([]byte, oldReadSize)}
	for i := range a.dec {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1), // synchronous: no goroutines
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxStreamWindow),
			zstd.WithDecoderMaxMemory(maxStreamWindow),
			zstd.WithDecodeBuffersBelow(0))
		if err != nil {
			for _, d := range a.dec[:i] {
				d.Close()
			}
			return nil, errors.Join(errors.New("bsdiff: creating zstd decoder"), err)
		}
		a.dec[i] = d
	}
	a.ctrl = bufio.NewReaderSize(a.dec[sCtrl], 4<<10)
	a.runs = bufio.NewReaderSize(a.dec[sRuns], 4<<10)
	return a, nil
}

func (a *applier) release() {
	for i, d := range a.dec {
		_ = d.Reset(nil) // drop the reference to the patch
		a.src[i].Reset(nil)
	}
	a.ctrl.Reset(a.dec[sCtrl])
	a.runs.Reset(a.dec[sRuns])
	appliers.Put(a)
}

// Apply writes to w the output the patch describes, reading old (oldSize
// bytes) through ReaderAt. It returns the number of bytes written.
//
// Memory stays bounded whatever the patch claims: at most 4×1 MiB of zstd
// windows (less for small patches) and 200 KiB of buffers, beyond the
// patch itself. Work is linear in the sizes of the patch and the output,
// since every control triple and run code produces output; the output
// size is the patch's claim, so check NewSize first when the patch is not
// trusted (a few bytes of zstd can decode to 128 KiB). A malformed
// patch yields an error matching ErrCorrupt, never a panic; since output
// is streamed, w may already hold a prefix then. Errors from old or w are
// returned wrapped, not as ErrCorrupt.
func Apply(old io.ReaderAt, oldSize int64, patch []byte, w io.Writer) (int64, error) {
	if oldSize < 0 {
		return 0, fmt.Errorf("bsdiff: negative old size %d", oldSize)
	}
	h, err := parseHeader(patch)
	if err != nil {
		return 0, err
	}
	a, err := getApplier()
	if err != nil {
		return 0, err
	}
	defer a.release()
	for i := range a.dec {
		a.src[i].Reset(h.streams[i])
		if err := a.dec[i].Reset(&a.src[i]); err != nil {
			return 0, fmt.Errorf("bsdiff: %w", err)
		}
	}
	a.ctrl.Reset(a.dec[sCtrl])
	a.runs.Reset(a.dec[sRuns])
	a.zeros, a.nz = 0, 0
	or := oldReader{r: old, size: oldSize, buf: a.old}
	var written, cursor int64
	for written < h.newSize {
		seek, err := binary.ReadVarint(a.ctrl)
		if err != nil {
			return written, streamErr(sCtrl, err)
		}
		diffN, err := binary.ReadUvarint(a.ctrl)
		if err != nil {
			return written, streamErr(sCtrl, err)
		}
		extraN, err := binary.ReadUvarint(a.ctrl)
		if err != nil {
			return written, streamErr(sCtrl, err)
		}
		if seek < -cursor || seek > oldSize-cursor {
			return written, corruptf("seek %+d from %d outside old (%d bytes)", seek, cursor, oldSize)
		}
		cursor += seek
		left := uint64(h.newSize - written)
		switch {
		case diffN == 0 && extraN == 0:
			return written, corruptf("empty control triple at output %d", written)
		case diffN > uint64(oldSize-cursor):
			return written, corruptf("%d approximate bytes at %d overrun old (%d bytes)", diffN, cursor, oldSize)
		case diffN > left || extraN > left-diffN:
			return written, corruptf("triple of %d+%d bytes at output %d overruns the output size %d", diffN, extraN, written, h.newSize)
		}
		carry := 0
		for n := int64(diffN); n > 0; {
			k := int(min(n, chunkSize))
			ob, err := or.slice(cursor, k, n)
			if err != nil {
				return written, err
			}
			b := a.buf[:k]
			if err := a.differences(b); err != nil {
				return written, err
			}
			for i, v := range b {
				s := int(ob[i]) + int(int8(v)) + carry
				b[i] = byte(s)
				carry = s >> 8
			}
			if err := write(w, b); err != nil {
				return written, err
			}
			written += int64(k)
			cursor += int64(k)
			n -= int64(k)
		}
		for n := int64(extraN); n > 0; {
			k := int(min(n, chunkSize))
			b := a.buf[:k]
			if _, err := io.ReadFull(a.dec[sExtra], b); err != nil {
				return written, streamErr(sExtra, err)
			}
			if err := write(w, b); err != nil {
				return written, err
			}
			written += int64(k)
			n -= int64(k)
		}
	}
	// Every stream must end exactly here: leftovers mean the patch is not
	// one Diff wrote.
	if a.zeros != 0 || a.nz != 0 {
		return written, corruptf("a run of %d zeros and %d values goes past the output", a.zeros, a.nz)
	}
	for i, br := range [2]*bufio.Reader{a.ctrl, a.runs} {
		if _, err := br.ReadByte(); err != io.EOF {
			return written, streamEnd(i, err)
		}
	}
	for _, i := range [2]int{sValues, sExtra} {
		var one [1]byte
		if _, err := io.ReadFull(a.dec[i], one[:]); err != io.EOF {
			return written, streamEnd(i, err)
		}
	}
	for i := range a.src {
		if a.src[i].Len() != 0 {
			return written, corruptf("%d undecoded bytes in the %s stream", a.src[i].Len(), streamNames[i])
		}
	}
	return written, nil
}

// differences fills b with the next difference bytes, from the run codes
// and values.
func (a *applier) differences(b []byte) error {
	for len(b) > 0 {
		if a.zeros > 0 {
			k := int(min(a.zeros, uint64(len(b))))
			clear(b[:k])
			b = b[k:]
			a.zeros -= uint64(k)
			continue
		}
		if a.nz > 0 {
			k := int(min(a.nz, uint64(len(b))))
			if _, err := io.ReadFull(a.dec[sValues], b[:k]); err != nil {
				return streamErr(sValues, err)
			}
			b = b[k:]
			a.nz -= uint64(k)
			continue
		}
		c, err := a.runs.ReadByte()
		if err == io.EOF {
			// Past the last run, differences are zero.
			clear(b)
			return nil
		}
		if err != nil {
			return streamErr(sRuns, err)
		}
		switch {
		case c < packedZeros<<2:
			a.zeros, a.nz = uint64(c>>2), uint64(c&3)+1
		case c == runEscape:
			if a.zeros, err = binary.ReadUvarint(a.runs); err != nil {
				return streamErr(sRuns, err)
			}
			if a.nz, err = binary.ReadUvarint(a.runs); err != nil {
				return streamErr(sRuns, err)
			}
			if a.nz == 0 {
				return corruptf("empty run of values")
			}
		default:
			return corruptf("invalid run code 0x%02x", c)
		}
	}
	return nil
}

func write(w io.Writer, b []byte) error {
	n, err := w.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("bsdiff: writing output: %w", err)
	}
	return nil
}

// streamErr reports a failed read of a decoded stream. The streams are in
// memory, so every failure is the patch's: truncated, or not zstd.
func streamErr(i int, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return corruptf("%s stream ends early", streamNames[i])
	}
	return corruptf("%s stream: %v", streamNames[i], err)
}

func streamEnd(i int, err error) error {
	if err == nil {
		return corruptf("%s stream has data past the output", streamNames[i])
	}
	return corruptf("%s stream: %v", streamNames[i], err)
}

// oldReader serves ranges of old from a buffer that reads ahead up to the
// end of the current approximate region: reading further would mostly
// waste, since the next triple usually seeks (measured on two Go builds,
// reading a fixed 128 KiB ahead read old 64 times over).
type oldReader struct {
	r    io.ReaderAt
	size int64
	buf  []byte
	off  int64 // old offset of buf[:n]
	n    int
}

// slice returns old[off:off+n], reading up to ahead bytes (ahead >= n) if
// they are not buffered; n <= len(buf) and the range lies in old.
func (o *oldReader) slice(off int64, n int, ahead int64) ([]byte, error) {
	if off >= o.off && off+int64(n) <= o.off+int64(o.n) {
		return o.buf[off-o.off:][:n], nil
	}
	k := int(min(int64(len(o.buf)), ahead))
	m, err := o.r.ReadAt(o.buf[:k], off)
	if m < k {
		o.n = 0
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("bsdiff: reading old at %d: %w", off, err)
	}
	o.off, o.n = off, k
	return o.buf[:n], nil
}
