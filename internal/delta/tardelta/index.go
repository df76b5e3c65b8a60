package tardelta

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
)

// SegmentSize is the unit in which large contents are hashed, matched and
// patched. It bounds the zstd dictionaries and windows on both sides.
const SegmentSize = 16 << 20

// Region is a byte range of a tar stream and the sha256 of its bytes.
type Region struct {
	Offset int64
	Size   int64
	Sum    [32]byte // zero when Size is 0
}

// Entry describes one tar entry: its header bytes (including any PAX or GNU
// extension headers and GNU sparse extension blocks before the main header),
// its content as stored in the stream, and the padding after it. For sparse
// files Data is the physical (stored) content, sparse map included, not the
// expanded file.
type Entry struct {
	Name     string
	Linkname string
	Type     byte // typeflag of the main header, normalised as archive/tar does
	Sparse   bool

	Header Region
	Data   Region
	// Segments holds the sha256 of each SegmentSize piece of Data (the last
	// may be shorter); present only when Data.Size > SegmentSize.
	Segments [][32]byte

	PadSize int64
	PadZero bool // the padding is all zero bytes
}

// Index is the layout of one uncompressed tar stream: every byte belongs to
// exactly one header, data or padding region of an entry, or to the trailer.
type Index struct {
	Size    int64
	Entries []Entry
	// Trailer covers everything after the last entry: the end-of-archive
	// zero blocks, any bytes after them, and anything the scanner could not
	// parse as tar. Only its Data and Segments fields are used.
	Trailer Entry
}

// BuildIndex reads a tar stream once and returns its index. Malformed input is
// not an error: the unparsable remainder becomes the trailer. Only read errors
// are returned. Memory is proportional to the number of entries.
func BuildIndex(r io.Reader) (*Index, error) {
	sc := newScanner(r)
	idx := &Index{}
	buf := make([]byte, 256<<10)
	var h contentHasher
	var u unit
	for {
		if err := sc.next(&u); err != nil {
			return nil, err
		}
		var e Entry
		if !u.trailer {
			e = Entry{
				Name:     u.name,
				Linkname: u.linkname,
				Type:     u.typ,
				Sparse:   u.sparse,
				Header:   Region{Offset: u.metaOff, Size: int64(len(u.meta)), Sum: sha256.Sum256(u.meta)},
			}
		}
		e.Data.Offset = u.metaOff + int64(len(u.meta))
		h.reset(u.dataLen)
		for {
			n, err := sc.Read(buf)
			h.Write(buf[:n])
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
		}
		e.Data.Size, e.Data.Sum, e.Segments = h.finish()
		if u.trailer {
			idx.Trailer = e
			break
		}
		pad, err := sc.readPad()
		if err != nil {
			return nil, err
		}
		e.PadSize, e.PadZero = int64(len(pad)), allZero(pad)
		idx.Entries = append(idx.Entries, e)
	}
	idx.Size = sc.off
	return idx, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// contentHasher computes the sha256 of a content region and, for contents
// that may exceed SegmentSize, of each segment.
type contentHasher struct {
	whole, seg hash.Hash
	n, segN    int64
	segmented  bool
	segs       [][32]byte
}

// reset prepares for a content of the declared size (-1 if unknown).
func (h *contentHasher) reset(declared int64) {
	if h.whole == nil {
		h.whole, h.seg = sha256.New(), sha256.New()
	}
	h.whole.Reset()
	h.seg.Reset()
	h.n, h.segN, h.segs = 0, 0, nil
	h.segmented = declared < 0 || declared > SegmentSize
}

func (h *contentHasher) Write(p []byte) {
	h.whole.Write(p)
	h.n += int64(len(p))
	if !h.segmented {
		return
	}
	for len(p) > 0 {
		k := min(int64(len(p)), SegmentSize-h.segN)
		h.seg.Write(p[:k])
		h.segN += k
		p = p[k:]
		if h.segN == SegmentSize {
			h.segs = append(h.segs, sumOf(h.seg))
			h.seg.Reset()
			h.segN = 0
		}
	}
}

func (h *contentHasher) finish() (size int64, sum [32]byte, segs [][32]byte) {
	if h.n == 0 {
		return 0, sum, nil
	}
	if h.segmented && h.n > SegmentSize {
		if h.segN > 0 {
			h.segs = append(h.segs, sumOf(h.seg))
		}
		segs = h.segs
	}
	return h.n, sumOf(h.whole), segs
}

func sumOf(h hash.Hash) (s [32]byte) {
	h.Sum(s[:0])
	return s
}

// numSegments is how many SegmentSize pieces a content of size n has.
func numSegments(n int64) int64 { return (n + SegmentSize - 1) / SegmentSize }

// Serialised index layout (all integers unsigned LEB128 varints):
//
//	"OTDI" version(1) segmentSize size entryCount
//	entry*:  type flags(bit0 sparse, bit1 padZero)
//	         sharedNamePrefix nameSuffixLen nameSuffix linkLen link
//	         headerSize headerSum[32]
//	         dataSize [dataSum[32] [segmentSum[32]*]] padSize
//	trailer: dataSize [dataSum[32] [segmentSum[32]*]]
//
// Offsets are implied: regions are contiguous and cover the whole stream.
const (
	indexMagic   = "OTDI"
	indexVersion = 1
)

// ErrBadIndex reports a serialised index that cannot be decoded.
var ErrBadIndex = errors.New("tardelta: malformed index")

// MarshalBinary encodes the index compactly (names are prefix-compressed
// against the previous entry's).
func (x *Index) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 64+len(x.Entries)*96)
	b = append(b, indexMagic...)
	b = append(b, indexVersion)
	b = binary.AppendUvarint(b, SegmentSize)
	b = binary.AppendUvarint(b, uint64(x.Size))
	b = binary.AppendUvarint(b, uint64(len(x.Entries)))
	prev := ""
	for i := range x.Entries {
		e := &x.Entries[i]
		var flags byte
		if e.Sparse {
			flags |= 1
		}
		if e.PadZero {
			flags |= 2
		}
		b = append(b, e.Type, flags)
		p := sharedPrefix(prev, e.Name)
		b = binary.AppendUvarint(b, uint64(p))
		b = binary.AppendUvarint(b, uint64(len(e.Name)-p))
		b = append(b, e.Name[p:]...)
		b = binary.AppendUvarint(b, uint64(len(e.Linkname)))
		b = append(b, e.Linkname...)
		b = binary.AppendUvarint(b, uint64(e.Header.Size))
		b = append(b, e.Header.Sum[:]...)
		b = appendData(b, e)
		b = binary.AppendUvarint(b, uint64(e.PadSize))
		prev = e.Name
	}
	b = appendData(b, &x.Trailer)
	return b, nil
}

func appendData(b []byte, e *Entry) []byte {
	b = binary.AppendUvarint(b, uint64(e.Data.Size))
	if e.Data.Size > 0 {
		b = append(b, e.Data.Sum[:]...)
	}
	for _, s := range e.Segments {
		b = append(b, s[:]...)
	}
	return b
}

func sharedPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// UnmarshalBinary decodes an index written by MarshalBinary, validating it
// completely: a cached index may be damaged, and a wrong index would make
// Encode emit references to the wrong bytes.
func (x *Index) UnmarshalBinary(data []byte) error {
	d := idxDecoder{b: data}
	if len(data) < len(indexMagic)+1 || string(data[:len(indexMagic)]) != indexMagic {
		return fmt.Errorf("%w: bad magic", ErrBadIndex)
	}
	if data[len(indexMagic)] != indexVersion {
		return fmt.Errorf("%w: unsupported version %d", ErrBadIndex, data[len(indexMagic)])
	}
	d.b = data[len(indexMagic)+1:]
	if seg := d.uvarint(); seg != SegmentSize {
		if d.err == nil {
			return fmt.Errorf("%w: segment size %d, want %d", ErrBadIndex, seg, SegmentSize)
		}
	}
	size := d.int63()
	n := d.uvarint()
	// Each entry takes at least 39 bytes; refuse counts the input cannot hold
	// before allocating for them.
	if d.err == nil && n > uint64(len(d.b))/39 {
		return fmt.Errorf("%w: entry count %d too large", ErrBadIndex, n)
	}
	var out Index
	out.Size = size
	out.Entries = make([]Entry, 0, n)
	var off int64
	prev := ""
	for i := uint64(0); i < n && d.err == nil; i++ {
		var e Entry
		e.Type = d.byte()
		flags := d.byte()
		e.Sparse, e.PadZero = flags&1 != 0, flags&2 != 0
		p := d.uvarint()
		if p > uint64(len(prev)) {
			d.fail("name prefix")
			break
		}
		suffix := d.bytes(d.uvarint())
		e.Name = prev[:p] + string(suffix)
		e.Linkname = string(d.bytes(d.uvarint()))
		e.Header = Region{Offset: off, Size: d.int63()}
		copy(e.Header.Sum[:], d.bytes(32))
		off = addOff(&d, off, e.Header.Size)
		d.data(&e, off)
		off = addOff(&d, off, e.Data.Size)
		e.PadSize = d.int63()
		if e.PadSize >= blockSize {
			d.fail("padding size")
		}
		off = addOff(&d, off, e.PadSize)
		out.Entries = append(out.Entries, e)
		prev = e.Name
	}
	d.data(&out.Trailer, off)
	off = addOff(&d, off, out.Trailer.Data.Size)
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err == nil && off != size {
		d.fail(fmt.Sprintf("regions cover %d bytes, stream has %d", off, size))
	}
	if d.err != nil {
		return d.err
	}
	if err := out.validate(); err != nil {
		return err
	}
	*x = out
	return nil
}

// validate checks the invariants Encode relies on: regions are contiguous,
// cover the stream, and segment sums are present exactly when needed.
func (x *Index) validate() error {
	var off int64
	check := func(e *Entry, what string) error {
		if e.Header.Offset != off || e.Header.Size < 0 {
			return fmt.Errorf("%w: %s: header region misplaced", ErrBadIndex, what)
		}
		off += e.Header.Size
		if e.Data.Offset != off || e.Data.Size < 0 {
			return fmt.Errorf("%w: %s: data region misplaced", ErrBadIndex, what)
		}
		off += e.Data.Size
		want := 0
		if e.Data.Size > SegmentSize {
			want = int(numSegments(e.Data.Size))
		}
		if len(e.Segments) != want {
			return fmt.Errorf("%w: %s: %d segment sums, want %d", ErrBadIndex, what, len(e.Segments), want)
		}
		if e.PadSize < 0 || e.PadSize >= blockSize {
			return fmt.Errorf("%w: %s: bad padding size", ErrBadIndex, what)
		}
		off += e.PadSize
		if off < 0 || off > 1<<62 {
			return fmt.Errorf("%w: %s: offset overflow", ErrBadIndex, what)
		}
		return nil
	}
	for i := range x.Entries {
		if err := check(&x.Entries[i], fmt.Sprintf("entry %d", i)); err != nil {
			return err
		}
	}
	t := x.Trailer
	t.Header.Offset = off
	if t.Header.Size != 0 || t.PadSize != 0 {
		return fmt.Errorf("%w: trailer has header or padding", ErrBadIndex)
	}
	if err := check(&t, "trailer"); err != nil {
		return err
	}
	if off != x.Size {
		return fmt.Errorf("%w: regions cover %d bytes, stream has %d", ErrBadIndex, off, x.Size)
	}
	return nil
}

type idxDecoder struct {
	b   []byte
	err error
}

func (d *idxDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrBadIndex, what)
	}
}

func (d *idxDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *idxDecoder) int63() int64 {
	v := d.uvarint()
	if v > 1<<62 {
		d.fail("value out of range")
		return 0
	}
	return int64(v)
}

func (d *idxDecoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *idxDecoder) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("truncated")
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *idxDecoder) data(e *Entry, off int64) {
	e.Data = Region{Offset: off, Size: d.int63()}
	if d.err != nil || e.Data.Size == 0 {
		return
	}
	copy(e.Data.Sum[:], d.bytes(32))
	if e.Data.Size > SegmentSize {
		ns := numSegments(e.Data.Size)
		if uint64(ns) > uint64(len(d.b))/32 {
			d.fail("truncated segment sums")
			return
		}
		e.Segments = make([][32]byte, ns)
		for i := range e.Segments {
			copy(e.Segments[i][:], d.bytes(32))
		}
	}
}

func addOff(d *idxDecoder, off, n int64) int64 {
	if off+n < off || off+n > 1<<62 {
		d.fail("offset overflow")
		return off
	}
	return off + n
}

// entryAtHeaderOffset returns the index of the entry whose header starts at
// off, or -1.
func (x *Index) entryAtHeaderOffset(off int64) int {
	i := sort.Search(len(x.Entries), func(i int) bool { return x.Entries[i].Header.Offset >= off })
	if i < len(x.Entries) && x.Entries[i].Header.Offset == off && x.Entries[i].Header.Size > 0 {
		return i
	}
	return -1
}
