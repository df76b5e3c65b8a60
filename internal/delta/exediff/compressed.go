package exediff

import (
	"bytes"
	"compress/zlib"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"

	"github.com/outpost-registry/outpost/internal/iocount"
)

// Compressed sections. Go's linker compresses an unstripped binary's DWARF
// (SHF_COMPRESSED, zlib): a small change anywhere changes the compressed
// bytes throughout, so a patch of them is nearly their whole size (7.3 MB
// of a 37 MB outpost binary one commit apart, where the stripped binary's
// patch is 6 KB). The patch is therefore made between "expanded" files:
// each such section's zlib stream replaced by the bytes it decompresses to
// (its Chdr stays). The child expands the old file the same way, applies
// the patch, and compresses the new file's expanded sections back with
// the zlib level the parent found to reproduce them byte for byte (Go's
// linker uses BestSpeed); a section no level reproduces stays compressed,
// as any other bytes.

// zsection is a compressed section: where it lies in the file (its Chdr
// first), the size it decompresses to and, in a new file, the zlib level
// that reproduces it.
type zsection struct {
	off, size uint64
	rawSize   uint64
	level     int
}

const (
	chdrSize = 24 // elf.Chdr64
	// maxExpand bounds the decompressed bytes of a file's expanded
	// sections (the parent holds both files expanded in memory).
	maxExpand = 128 << 20
)

// zlibLevels are tried, in order, to reproduce a new file's section: Go's
// linker writes BestSpeed. (Other linkers use C zlib, whose output Go's
// compress/flate does not reproduce: their sections stay compressed.)
var zlibLevels = []int{zlib.BestSpeed}

// expandInMemory: the child holds the old file's decompressed sections in
// memory up to this size, and in a temporary file (in os.TempDir, removed
// as it is opened) beyond, so that its memory stays bounded. (A variable
// for the tests.)
var expandInMemory uint64 = 16 << 20

// growth is how much larger expanding z makes a file.
func (z zsection) growth() int64 { return int64(chdrSize+z.rawSize) - int64(z.size) }

// compressedCandidates returns the SHF_COMPRESSED sections of a file of
// size bytes that may be expanded, in section-table order: those after
// every allocated section, so that code and data keep their file offsets
// in the expanded file.
func compressedCandidates(secs []*elf.Section, size uint64) []zsection {
	allocEnd := uint64(0)
	for _, s := range secs {
		if s.Flags&elf.SHF_ALLOC != 0 && s.Type != elf.SHT_NOBITS && s.Offset <= size && s.Size <= size-s.Offset {
			allocEnd = max(allocEnd, s.Offset+s.Size)
		}
	}
	var zs []zsection
	for _, s := range secs {
		if s.Flags&elf.SHF_COMPRESSED == 0 || s.Type == elf.SHT_NOBITS || s.Offset > size || s.FileSize > size-s.Offset || s.FileSize <= chdrSize || s.Offset < allocEnd {
			continue
		}
		zs = append(zs, zsection{off: s.Offset, size: s.FileSize})
	}
	return zs
}

// compressedSections lists the zlib-compressed sections of r (whose model
// m is) in file order, up to maxExpand decompressed bytes in all. It reads
// each candidate's Chdr.
func (m *model) compressedSections(r io.ReaderAt) ([]zsection, error) {
	var zs []zsection
	total := uint64(0)
	for _, z := range m.zcand {
		var h [chdrSize]byte
		if _, err := r.ReadAt(h[:], int64(z.off)); err != nil {
			return nil, fmt.Errorf("exediff: reading the section at %#x: %w", z.off, err)
		}
		le := binary.LittleEndian
		raw := le.Uint64(h[8:])
		if elf.CompressionType(le.Uint32(h[:])) != elf.COMPRESS_ZLIB || raw == 0 || raw > maxExpand-total {
			continue
		}
		total += raw
		z.rawSize = raw
		zs = append(zs, z)
	}
	sort.Slice(zs, func(i, j int) bool { return zs[i].off < zs[j].off })
	out := zs[:0]
	end := uint64(0)
	for _, z := range zs {
		if z.off >= end { // overlapping sections are left compressed
			out = append(out, z)
			end = z.off + z.size
		}
	}
	return out, nil
}

// inflate returns the bytes z's zlib stream in r decompresses to.
func inflate(r io.ReaderAt, z zsection) ([]byte, error) {
	zr, err := zlib.NewReader(io.NewSectionReader(r, int64(z.off+chdrSize), int64(z.size-chdrSize)))
	if err != nil {
		return nil, err
	}
	raw := make([]byte, z.rawSize)
	if _, err := io.ReadFull(zr, raw); err != nil {
		return nil, err
	}
	var one [1]byte
	if n, err := zr.Read(one[:]); n != 0 {
		return nil, fmt.Errorf("more than the %d bytes its header says", z.rawSize)
	} else if err != io.EOF {
		return nil, fmt.Errorf("after its %d bytes: %v", z.rawSize, err) // a bad checksum, say
	}
	return raw, zr.Close()
}

// reproduces is expandBytes's test for a new file's sections: some zlib
// level compresses raw back to exactly the section's compressed bytes;
// it records that level in z.
func reproduces(z *zsection, compressed, raw []byte) bool {
	var buf bytes.Buffer
	for _, level := range zlibLevels {
		buf.Reset()
		zw, err := zlib.NewWriterLevel(&buf, level)
		if err != nil {
			continue
		}
		zw.Write(raw)
		if zw.Close() == nil && bytes.Equal(buf.Bytes(), compressed) {
			z.level = level
			return true
		}
	}
	return false
}

// expandBytes returns b with zs expanded and the sections it expanded:
// those that decompress as their header says and, if keep is not nil,
// that keep accepts (it may set the section's level).
func expandBytes(b []byte, zs []zsection, keep func(z *zsection, compressed, raw []byte) bool) ([]byte, []zsection) {
	var out []byte
	var used []zsection
	at := uint64(0)
	for _, z := range zs {
		raw, err := inflate(bytes.NewReader(b), z)
		if err != nil || (keep != nil && !keep(&z, b[z.off+chdrSize:z.off+z.size], raw)) {
			continue
		}
		out = append(out, b[at:z.off+chdrSize]...)
		out = append(out, raw...)
		at = z.off + z.size
		used = append(used, z)
	}
	if len(used) == 0 {
		return b, nil
	}
	return append(out, b[at:]...), used
}

// expandedReader reads a file with zs expanded, their decompressed bytes
// held in memory or in a temporary file.
type expandedReader struct {
	size  int64 // expanded
	segs  []segment
	spill *os.File
}

// segment is a run of the expanded file, read from r at off.
type segment struct {
	start, n int64 // in the expanded file
	r        io.ReaderAt
	off      int64
}

func newExpandedReader(r io.ReaderAt, size int64, zs []zsection) (e *expandedReader, err error) {
	e = &expandedReader{}
	total := uint64(0)
	for _, z := range zs {
		total += z.rawSize
	}
	if total > expandInMemory {
		if e.spill, err = os.CreateTemp("", "outpost-exediff-*"); err != nil {
			return nil, fmt.Errorf("exediff: a file for %d decompressed bytes: %w", total, err)
		}
		os.Remove(e.spill.Name()) // gone with the last descriptor
		defer func() {
			if err != nil {
				e.Close()
			}
		}()
	}
	at, exp, spilled := int64(0), int64(0), int64(0)
	for _, z := range zs {
		head := int64(z.off) + chdrSize - at
		e.segs = append(e.segs, segment{start: exp, n: head, r: r, off: at})
		exp += head
		raw := segment{start: exp, n: int64(z.rawSize)}
		if e.spill != nil {
			if err := inflateTo(r, z, io.NewOffsetWriter(e.spill, spilled)); err != nil {
				return nil, err
			}
			raw.r, raw.off = e.spill, spilled
			spilled += raw.n
		} else {
			b, err := inflate(r, z)
			if err != nil {
				return nil, corruptf("the old file's section at %#x: %v", z.off, err)
			}
			raw.r = bytes.NewReader(b)
		}
		e.segs = append(e.segs, raw)
		exp += raw.n
		at = int64(z.off + z.size)
	}
	e.segs = append(e.segs, segment{start: exp, n: size - at, r: r, off: at})
	e.size = exp + size - at
	return e, nil
}

// inflateTo writes the bytes z's zlib stream in r decompresses to into w.
func inflateTo(r io.ReaderAt, z zsection, w io.Writer) error {
	zr, err := zlib.NewReader(io.NewSectionReader(r, int64(z.off+chdrSize), int64(z.size-chdrSize)))
	if err != nil {
		return corruptf("the old file's section at %#x: %v", z.off, err)
	}
	n, err := io.Copy(w, io.LimitReader(zr, int64(z.rawSize)+1))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("exediff: %w", err) // the temporary file: not the patch's fault
		}
		return corruptf("the old file's section at %#x: %v", z.off, err)
	}
	if n != int64(z.rawSize) {
		return corruptf("the old file's section at %#x decompresses to %d bytes, not %d", z.off, n, z.rawSize)
	}
	return zr.Close()
}

// Close removes the temporary file, if any.
func (e *expandedReader) Close() error {
	if e.spill == nil {
		return nil
	}
	return e.spill.Close()
}

func (e *expandedReader) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("exediff: negative offset %d", off)
	}
	i := sort.Search(len(e.segs), func(i int) bool { return e.segs[i].start+e.segs[i].n > off })
	n := 0
	for ; n < len(b) && i < len(e.segs); i++ {
		s := e.segs[i]
		from := off + int64(n) - s.start
		want := min(int64(len(b)-n), s.n-from)
		m, err := s.r.ReadAt(b[n:n+int(want)], s.off+from)
		n += m
		if err != nil && !(err == io.EOF && int64(m) == want) {
			return n, err
		}
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// contractor writes a file given its expanded bytes: it compresses each
// expanded section back and checks that the result has the section's
// size.
type contractor struct {
	w    iocount.Writer // the new file
	zs   []zsection
	pos  int64 // in the expanded file
	next int   // the first section not yet written whole
	zw   *zlib.Writer
	cw   iocount.Writer
}

// out returns the bytes written to w.
func (c *contractor) out() int64 { return c.w.N }

// payload returns where section k's decompressed bytes lie in the
// expanded file.
func (c *contractor) payload(k int) (start, end int64) {
	shift := int64(0)
	for _, z := range c.zs[:k] {
		shift += z.growth()
	}
	start = int64(c.zs[k].off) + chdrSize + shift
	return start, start + int64(c.zs[k].rawSize)
}

func (c *contractor) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if c.next >= len(c.zs) {
			n, err := c.w.Write(p)
			c.pos += int64(n)
			return written + n, err
		}
		start, end := c.payload(c.next)
		var k int
		var err error
		switch {
		case c.pos < start:
			k = int(min(int64(len(p)), start-c.pos))
			k, err = c.w.Write(p[:k])
		default:
			if c.zw == nil {
				c.cw = iocount.Writer{W: &c.w}
				if c.zw, err = zlib.NewWriterLevel(&c.cw, c.zs[c.next].level); err != nil {
					return written, err
				}
			}
			k = int(min(int64(len(p)), end-c.pos))
			k, err = c.zw.Write(p[:k])
		}
		written, c.pos, p = written+k, c.pos+int64(k), p[k:]
		if err != nil {
			return written, err
		}
		if c.zw != nil && c.pos == end {
			if err := c.zw.Close(); err != nil {
				return written, err
			}
			z := c.zs[c.next]
			if want := int64(z.size - chdrSize); c.cw.N != want {
				return written, corruptf("section at %#x compressed back to %d bytes, not %d: this node's zlib differs from the patch maker's", z.off, c.cw.N, want)
			}
			c.zw, c.next = nil, c.next+1
		}
	}
	return written, nil
}

// done reports an error unless every section was written whole.
func (c *contractor) done() error {
	if c.next != len(c.zs) {
		return corruptf("the patch ended inside the new file's section at %#x", c.zs[c.next].off)
	}
	return nil
}
