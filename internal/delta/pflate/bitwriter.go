package pflate

import (
	"encoding/binary"
	"io"
)

// bitWriter writes a deflate stream least significant bit first, buffering whole bytes.
type bitWriter struct {
	w    io.Writer
	buf  []byte
	acc  uint64
	n    uint // bits in acc, < 8 between calls
	bits int64
	err  error
}

const bitWriterFlush = 64 << 10

func newBitWriter(w io.Writer) *bitWriter {
	return &bitWriter{w: w, buf: make([]byte, 0, bitWriterFlush+64)}
}

// writeBits appends the k (≤ 32) low bits of v.
func (b *bitWriter) writeBits(v uint64, k uint) {
	b.acc |= (v & (1<<k - 1)) << b.n
	b.n += k
	b.bits += int64(k)
	for b.n >= 8 {
		b.buf = append(b.buf, byte(b.acc))
		b.acc >>= 8
		b.n -= 8
	}
	if len(b.buf) >= bitWriterFlush {
		b.flushBuf()
	}
}

// copyBits appends the bits [start, end) of src.
func (b *bitWriter) copyBits(src []byte, start, end int64) {
	if start%8 == 0 && b.n == 0 && end-start >= 64 {
		// Both byte aligned: whole bytes go through as they are.
		whole := (end - start) / 8
		b.writeBytes(src[start/8 : start/8+whole])
		start += whole * 8
	}
	// 48 bits at a time: with fewer than 8 bits pending, acc never overflows.
	for end-start >= 48 {
		b.acc |= (loadBits(src, start) & (1<<48 - 1)) << b.n
		b.buf = binary.LittleEndian.AppendUint32(b.buf, uint32(b.acc))
		b.buf = binary.LittleEndian.AppendUint16(b.buf, uint16(b.acc>>32))
		b.acc >>= 48
		b.bits += 48
		start += 48
		if len(b.buf) >= bitWriterFlush {
			b.flushBuf()
		}
	}
	for end-start >= 32 {
		b.writeBits(loadBits(src, start), 32)
		start += 32
	}
	if k := uint(end - start); k > 0 {
		b.writeBits(loadBits(src, start), k)
	}
}

// loadBits returns the (at least 56) bits of src from bit position pos on; bits past the end
// of src read as zero.
func loadBits(src []byte, pos int64) uint64 {
	i, s := pos>>3, uint(pos&7)
	if i+8 <= int64(len(src)) {
		return binary.LittleEndian.Uint64(src[i:]) >> s
	}
	var v uint64
	for j := int64(0); j < 8 && i+j < int64(len(src)); j++ {
		v |= uint64(src[i+j]) << (8 * j)
	}
	return v >> s
}

// align pads with zero bits up to the next byte boundary.
func (b *bitWriter) align() {
	if b.n > 0 {
		b.bits += int64(8 - b.n)
		b.buf = append(b.buf, byte(b.acc))
		b.acc, b.n = 0, 0
	}
}

// writeBytes appends whole bytes; the writer must be byte aligned.
func (b *bitWriter) writeBytes(p []byte) {
	b.bits += int64(len(p)) * 8
	if len(b.buf)+len(p) <= cap(b.buf) {
		b.buf = append(b.buf, p...)
		return
	}
	b.flushBuf()
	if b.err == nil {
		_, b.err = b.w.Write(p)
	}
}

// writeStored appends a stored block holding data, as compress/flate writes one: the
// 3-bit header, padding to a byte boundary, LEN and NLEN.
func (b *bitWriter) writeStored(final bool, data []byte) {
	var hdr uint64
	if final {
		hdr = 1
	}
	b.writeBits(hdr, 3)
	b.align()
	n := uint64(len(data))
	b.writeBits(n|(^n&0xffff)<<16, 32)
	b.writeBytes(data)
}

func (b *bitWriter) flushBuf() {
	if len(b.buf) > 0 && b.err == nil {
		_, b.err = b.w.Write(b.buf)
	}
	b.buf = b.buf[:0]
}

// close pads the last byte and writes out what is buffered.
func (b *bitWriter) close() error {
	b.align()
	b.flushBuf()
	return b.err
}
