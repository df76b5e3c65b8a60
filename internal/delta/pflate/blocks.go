package pflate

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// ErrCorrupt is matched (errors.Is) by the errors of a deflate stream that does not parse.
var ErrCorrupt = errors.New("pflate: corrupt deflate stream")

func corruptf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}

// Block types (RFC 1951 section 3.2.3).
const (
	Stored  = 0
	Fixed   = 1
	Dynamic = 2
)

// A Block is one deflate block of a stream, located in both the compressed bits and the
// uncompressed bytes.
type Block struct {
	// Type is Stored, Fixed or Dynamic; Final tells whether BFINAL is set.
	Type  int
	Final bool
	// Start and End are bit positions in the stream: the first bit of the block's header
	// and the bit after its end-of-block code (for a stored block, after its last byte).
	Start, End int64
	// Offset is where the block's output starts in the uncompressed stream; Size is how
	// many bytes it produces.
	Offset, Size int64
	// DataByte is, for a stored block, the byte offset of its data in the stream (after
	// LEN and NLEN).
	DataByte int64
}

// Walk parses the deflate stream read from r block by block, without producing its output,
// and calls fn for each block in order; the last one has Final set. It stops at the first
// error from r (io.ErrUnexpectedEOF for a stream cut short) or fn, and reports a stream that
// does not parse with an error wrapping ErrCorrupt. The distances of matches are not
// checked against the history: Walk locates blocks, it does not validate content.
func Walk(r io.Reader, fn func(Block) error) error {
	br, ok := r.(io.ByteReader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	w := walker{br: &bitReader{r: br}}
	return w.walk(fn)
}

// WalkBytes is Walk over a stream in memory.
func WalkBytes(b []byte, fn func(Block) error) error {
	w := walker{br: &bitReader{r: &byteSliceReader{b: b}, mem: b}}
	return w.walk(fn)
}

type byteSliceReader struct {
	b []byte
	i int
}

func (s *byteSliceReader) ReadByte() (byte, error) {
	if s.i >= len(s.b) {
		return 0, io.EOF
	}
	c := s.b[s.i]
	s.i++
	return c, nil
}

// bitReader reads a deflate stream least significant bit first.
type bitReader struct {
	r     io.ByteReader
	mem   []byte // the stream, when it is in memory: r reads it, fill takes words from it
	acc   uint64
	n     uint  // bits in acc
	bytes int64 // bytes taken from r
	err   error // sticky error of r
}

// pos is the bit position of the next bit to read.
func (b *bitReader) pos() int64 { return b.bytes*8 - int64(b.n) }

// need makes sure at least k (≤ 56) bits are in acc.
func (b *bitReader) need(k uint) error {
	for b.n < k {
		if b.err != nil {
			return b.err
		}
		c, err := b.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			b.err = err
			return err
		}
		b.acc |= uint64(c) << b.n
		b.n += 8
		b.bytes++
	}
	return nil
}

// fill tops acc up as far as the reader allows, without failing: a Huffman code near the end
// of the stream may be shorter than the bits a table lookup peeks at.
func (b *bitReader) fill() {
	if b.mem != nil && b.bytes+8 <= int64(len(b.mem)) {
		k := (63 - b.n) / 8
		b.acc |= binary.LittleEndian.Uint64(b.mem[b.bytes:]) << b.n
		b.n += k * 8
		b.bytes += int64(k)
		b.r.(*byteSliceReader).i += int(k)
		b.acc &= 1<<b.n - 1 // drop the bits of bytes not taken
		return
	}
	for b.n <= 56 && b.err == nil {
		c, err := b.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			b.err = err
			return
		}
		b.acc |= uint64(c) << b.n
		b.n += 8
		b.bytes++
	}
}

func (b *bitReader) bits(k uint) (uint32, error) {
	if err := b.need(k); err != nil {
		return 0, err
	}
	v := uint32(b.acc & (1<<k - 1))
	b.acc >>= k
	b.n -= k
	return v, nil
}

// align drops the bits up to the next byte boundary.
func (b *bitReader) align() {
	drop := b.n % 8
	b.acc >>= drop
	b.n -= drop
}

// skipBytes skips k whole bytes; the reader must be byte aligned.
func (b *bitReader) skipBytes(k int64) error {
	for k > 0 && b.n >= 8 {
		b.acc >>= 8
		b.n -= 8
		k--
	}
	for ; k > 0; k-- {
		if b.err != nil {
			return b.err
		}
		if _, err := b.r.ReadByte(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			b.err = err
			return err
		}
		b.bytes++
	}
	return nil
}

// huffman decodes one canonical Huffman code: codes of up to primaryBits bits through a
// table indexed by the next primaryBits bits of the stream (entries hold symbol<<4 | code
// length, 0 for a longer or unused code), longer ones canonically, bit by bit.
type huffman struct {
	table [1 << primaryBits]uint32
	count [16]uint16
	syms  [288]uint16 // symbols in code order
}

const primaryBits = 10

// build makes the decoder for the code lengths given per symbol. An over-subscribed code is
// refused; an incomplete one is accepted (RFC 1951 allows a single distance code) and its
// unused codes fail when met.
func (h *huffman) build(lengths []uint8) error {
	h.count = [16]uint16{}
	for _, l := range lengths {
		h.count[l]++
	}
	h.count[0] = 0
	left := 1
	for l := 1; l < 16; l++ {
		left = left<<1 - int(h.count[l])
		if left < 0 {
			return corruptf("over-subscribed Huffman code")
		}
	}
	var offs [16]int
	for l := 1; l < 15; l++ {
		offs[l+1] = offs[l] + int(h.count[l])
	}
	for sym, l := range lengths {
		if l != 0 {
			h.syms[offs[l]] = uint16(sym)
			offs[l]++
		}
	}
	clear(h.table[:])
	code, idx := 0, 0
	for l := 1; l <= primaryBits; l++ {
		for range h.count[l] {
			rev := int(bits.Reverse16(uint16(code)) >> (16 - l))
			entry := uint32(h.syms[idx])<<4 | uint32(l)
			for i := rev; i < len(h.table); i += 1 << l {
				h.table[i] = entry
			}
			code++
			idx++
		}
		code <<= 1
	}
	return nil
}

// decode reads one symbol.
func (h *huffman) decode(b *bitReader) (int, error) {
	if b.n < 15 {
		b.fill() // near the end of the stream there may be fewer bits than a code's
	}
	e := h.table[b.acc&(1<<primaryBits-1)]
	if l := uint(e & 15); l != 0 && l <= b.n {
		b.acc >>= l
		b.n -= l
		return int(e >> 4), nil
	}
	code, first, index := 0, 0, 0
	for l := uint(1); l <= 15; l++ {
		if l > b.n {
			if b.err != nil {
				return 0, b.err
			}
			break
		}
		code |= int(b.acc>>(l-1)) & 1
		count := int(h.count[l])
		if code-count < first {
			b.acc >>= l
			b.n -= l
			return int(h.syms[index+code-first]), nil
		}
		index += count
		first = (first + count) << 1
		code <<= 1
	}
	return 0, corruptf("invalid Huffman code")
}

// Length and distance tables of RFC 1951 section 3.2.5.
var (
	lengthBase = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthBits = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBits   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	// codeLengthOrder is the order of the code length code lengths in a dynamic header.
	codeLengthOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
)

type walker struct {
	br               *bitReader
	lit, dist, clens huffman
	fixedLit         huffman
	fixedDist        huffman
	fixedBuilt       bool
	lengths          [288 + 32]uint8
}

func (w *walker) walk(fn func(Block) error) error {
	var offset int64
	for {
		blk := Block{Start: w.br.pos(), Offset: offset}
		hdr, err := w.br.bits(3)
		if err != nil {
			return err
		}
		blk.Final = hdr&1 == 1
		blk.Type = int(hdr >> 1)
		switch blk.Type {
		case Stored:
			w.br.align()
			v, err := w.br.bits(32)
			if err != nil {
				return err
			}
			n, nn := v&0xffff, v>>16
			if n != ^nn&0xffff {
				return corruptf("stored block at bit %d: LEN %#x and NLEN %#x disagree", blk.Start, n, nn)
			}
			blk.DataByte = w.br.pos() / 8
			if err := w.br.skipBytes(int64(n)); err != nil {
				return err
			}
			blk.Size = int64(n)
		case Fixed, Dynamic:
			lit, dist := &w.fixedLit, &w.fixedDist
			if blk.Type == Fixed {
				w.buildFixed()
			} else {
				if err := w.readDynamicHeader(blk.Start); err != nil {
					return err
				}
				lit, dist = &w.lit, &w.dist
			}
			n, err := w.skipSymbols(lit, dist, blk.Start)
			if err != nil {
				return err
			}
			blk.Size = n
		default:
			return corruptf("block at bit %d has the reserved type 3", blk.Start)
		}
		blk.End = w.br.pos()
		offset += blk.Size
		if err := fn(blk); err != nil {
			return err
		}
		if blk.Final {
			return nil
		}
	}
}

func (w *walker) buildFixed() {
	if w.fixedBuilt {
		return
	}
	var l [288]uint8
	for i := range l {
		switch {
		case i < 144:
			l[i] = 8
		case i < 256:
			l[i] = 9
		case i < 280:
			l[i] = 7
		default:
			l[i] = 8
		}
	}
	_ = w.fixedLit.build(l[:])
	var d [30]uint8
	for i := range d {
		d[i] = 5
	}
	_ = w.fixedDist.build(d[:])
	w.fixedBuilt = true
}

func (w *walker) readDynamicHeader(start int64) error {
	v, err := w.br.bits(14)
	if err != nil {
		return err
	}
	nlit, ndist, nclen := int(v&31)+257, int(v>>5&31)+1, int(v>>10)+4
	if nlit > 286 || ndist > 30 {
		return corruptf("dynamic block at bit %d declares %d literal/length and %d distance codes", start, nlit, ndist)
	}
	var cl [19]uint8
	for i := 0; i < nclen; i++ {
		x, err := w.br.bits(3)
		if err != nil {
			return err
		}
		cl[codeLengthOrder[i]] = uint8(x)
	}
	if err := w.clens.build(cl[:]); err != nil {
		return err
	}
	lengths := w.lengths[:nlit+ndist]
	for i := 0; i < len(lengths); {
		sym, err := w.clens.decode(w.br)
		if err != nil {
			return err
		}
		var rep int
		var val uint8
		switch {
		case sym < 16:
			lengths[i] = uint8(sym)
			i++
			continue
		case sym == 16:
			if i == 0 {
				return corruptf("dynamic block at bit %d repeats a code length before the first", start)
			}
			x, err := w.br.bits(2)
			if err != nil {
				return err
			}
			rep, val = 3+int(x), lengths[i-1]
		case sym == 17:
			x, err := w.br.bits(3)
			if err != nil {
				return err
			}
			rep = 3 + int(x)
		default:
			x, err := w.br.bits(7)
			if err != nil {
				return err
			}
			rep = 11 + int(x)
		}
		if i+rep > len(lengths) {
			return corruptf("dynamic block at bit %d repeats code lengths past their end", start)
		}
		for ; rep > 0; rep-- {
			lengths[i] = val
			i++
		}
	}
	if lengths[256] == 0 {
		return corruptf("dynamic block at bit %d has no end-of-block code", start)
	}
	if err := w.lit.build(lengths[:nlit]); err != nil {
		return err
	}
	return w.dist.build(lengths[nlit:])
}

// skipSymbols decodes a Huffman block's symbols up to its end-of-block code and returns how
// many bytes they produce.
func (w *walker) skipSymbols(lit, dist *huffman, start int64) (int64, error) {
	var n int64
	b := w.br
	for {
		sym, err := lit.decode(b)
		if err != nil {
			return 0, err
		}
		switch {
		case sym < 256:
			n++
		case sym == 256:
			return n, nil
		case sym <= 285:
			i := sym - 257
			extra, err := b.bits(uint(lengthBits[i]))
			if err != nil {
				return 0, err
			}
			n += int64(lengthBase[i]) + int64(extra)
			d, err := dist.decode(b)
			if err != nil {
				return 0, err
			}
			if d >= 30 {
				return 0, corruptf("block at bit %d uses distance code %d", start, d)
			}
			if _, err := b.bits(uint(distBits[d])); err != nil {
				return 0, err
			}
		default:
			return 0, corruptf("block at bit %d uses length code %d", start, sym)
		}
	}
}
