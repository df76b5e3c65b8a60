package recipe

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// gzip header flags (RFC 1952 section 2.3.1).
const (
	flagHCRC     = 1 << 1
	flagExtra    = 1 << 2
	flagName     = 1 << 3
	flagComment  = 1 << 4
	flagReserved = 0xe0
)

// corrupt wraps the description of a broken blob in ErrCorrupt.
func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}

// unsupported wraps the reason a blob cannot be reproduced in ErrUnsupported.
func unsupported(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUnsupported, fmt.Sprintf(format, a...))
}

// readGzipHeader reads one gzip member header from r and returns its bytes verbatim. It reads
// byte by byte so that it never consumes anything past the header.
func readGzipHeader(r io.ByteReader) ([]byte, error) {
	h := make([]byte, 0, 10)
	next := func() (byte, error) {
		if len(h) >= MaxHeaderSize {
			return 0, unsupported("gzip header longer than %d bytes", MaxHeaderSize)
		}
		c, err := r.ReadByte()
		if err == io.EOF {
			return 0, corrupt("gzip header truncated after %d bytes", len(h))
		}
		if err != nil {
			return 0, err
		}
		h = append(h, c)
		return c, nil
	}
	for range 10 {
		if _, err := next(); err != nil {
			return nil, err
		}
	}
	if h[0] != gzipMagic[0] || h[1] != gzipMagic[1] {
		return nil, unsupported("not a gzip stream")
	}
	if h[2] != 8 {
		return nil, unsupported("gzip compression method %d is not deflate", h[2])
	}
	flags := h[3]
	if flags&flagReserved != 0 {
		return nil, unsupported("gzip header sets reserved flags %#x", flags&flagReserved)
	}
	if flags&flagExtra != 0 {
		lo, err := next()
		if err != nil {
			return nil, err
		}
		hi, err := next()
		if err != nil {
			return nil, err
		}
		for range int(lo) | int(hi)<<8 {
			if _, err := next(); err != nil {
				return nil, err
			}
		}
	}
	for _, f := range []byte{flagName, flagComment} {
		if flags&f == 0 {
			continue
		}
		for {
			c, err := next()
			if err != nil {
				return nil, err
			}
			if c == 0 {
				break
			}
		}
	}
	if flags&flagHCRC != 0 {
		want := uint16(crc32.ChecksumIEEE(h))
		lo, err := next()
		if err != nil {
			return nil, err
		}
		hi, err := next()
		if err != nil {
			return nil, err
		}
		if got := uint16(lo) | uint16(hi)<<8; got != want {
			return nil, corrupt("gzip header checksum %#04x, want %#04x", got, want)
		}
	}
	return h, nil
}

// parseGzipHeader parses the gzip header at the start of b and returns its length.
func parseGzipHeader(b []byte) (int, error) {
	h, err := readGzipHeader(bytes.NewReader(b))
	return len(h), err
}

// zstd frame layout (RFC 8878 section 3.1.1).
const (
	zstdMaxBlock      = 128 << 10
	zstdSkippableMask = 0xfffffff0
	zstdSkippableID   = 0x184d2a50
)

// zstdFrameHeader is what a frame header says about the encoder that wrote it.
type zstdFrameHeader struct {
	single      bool   // Single_Segment_Flag: no window descriptor, window = content size
	checksum    bool   // Content_Checksum_Flag
	hasSize     bool   // Frame_Content_Size present
	contentSize uint64 // Frame_Content_Size when hasSize
	window      uint64 // window size from the descriptor; 0 when single
	dictID      uint32
}

// zstdHeaderLen returns the length of a frame header (magic included) from its frame header
// descriptor, the byte after the magic.
func zstdHeaderLen(fhd byte) int {
	n := 5
	if fhd&0x20 == 0 {
		n++ // window descriptor
	}
	n += [4]int{0, 1, 2, 4}[fhd&3]
	fcs := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcs == 0 && fhd&0x20 != 0 {
		fcs = 1
	}
	return n + fcs
}

// parseZstdFrameHeader parses a complete frame header, as long as zstdHeaderLen says.
func parseZstdFrameHeader(b []byte) (zstdFrameHeader, error) {
	var fh zstdFrameHeader
	if len(b) < 5 || !bytes.Equal(b[:4], zstdMagic) {
		if len(b) >= 4 && binary.LittleEndian.Uint32(b)&zstdSkippableMask == zstdSkippableID {
			return fh, unsupported("zstd skippable frame")
		}
		return fh, unsupported("not a zstd frame")
	}
	fhd := b[4]
	if fhd&0x08 != 0 {
		return fh, corrupt("zstd frame header sets the reserved bit")
	}
	if len(b) != zstdHeaderLen(fhd) {
		return fh, corrupt("zstd frame header of %d bytes, want %d", len(b), zstdHeaderLen(fhd))
	}
	fh.single = fhd&0x20 != 0
	fh.checksum = fhd&0x04 != 0
	p := b[5:]
	if !fh.single {
		wd := p[0]
		p = p[1:]
		exp := uint(wd>>3) + 10
		base := uint64(1) << exp
		fh.window = base + base/8*uint64(wd&7)
	}
	switch fhd & 3 {
	case 1:
		fh.dictID = uint32(p[0])
		p = p[1:]
	case 2:
		fh.dictID = uint32(binary.LittleEndian.Uint16(p))
		p = p[2:]
	case 3:
		fh.dictID = binary.LittleEndian.Uint32(p)
		p = p[4:]
	}
	switch len(p) {
	case 1:
		fh.contentSize = uint64(p[0])
	case 2:
		fh.contentSize = uint64(binary.LittleEndian.Uint16(p)) + 256
	case 4:
		fh.contentSize = uint64(binary.LittleEndian.Uint32(p))
	case 8:
		fh.contentSize = binary.LittleEndian.Uint64(p)
	}
	fh.hasSize = len(p) > 0
	if fh.single {
		fh.window = fh.contentSize
	}
	return fh, nil
}

// zstdWalker follows the structure of a zstd stream as its bytes go by, without decoding:
// frame header, block headers (skipping block contents) and the checksum. It refuses
// everything a single klauspost frame never contains, such as a second frame, skippable frames
// (zstd:chunked, padding) and dictionaries, which the decoder would accept silently.
type zstdWalker struct {
	state   int
	buf     []byte // header bytes collected so far
	skip    int    // block content (or checksum) bytes still to pass
	last    bool   // the current block is the frame's last
	header  zstdFrameHeader
	hasHead bool
	err     error
}

const (
	walkFrameHeader = iota
	walkBlockHeader
	walkBlockBody
	walkChecksum
	walkDone
)

// Write feeds the next bytes of the stream.
func (z *zstdWalker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && z.err == nil {
		switch z.state {
		case walkFrameHeader:
			z.buf = append(z.buf, p[0])
			p = p[1:]
			if len(z.buf) < 5 || len(z.buf) < zstdHeaderLen(z.buf[4]) {
				if len(z.buf) == 4 && !bytes.Equal(z.buf, zstdMagic) {
					_, z.err = parseZstdFrameHeader(z.buf)
				}
				continue
			}
			z.header, z.err = parseZstdFrameHeader(z.buf)
			if z.err != nil {
				break
			}
			switch {
			case z.header.dictID != 0:
				z.err = unsupported("zstd frame uses dictionary %d", z.header.dictID)
			case !z.header.single && z.header.window > MaxWindowSize:
				z.err = unsupported("zstd window of %d bytes exceeds %d", z.header.window, MaxWindowSize)
			case z.header.single && z.header.contentSize > MaxWindowSize:
				z.err = unsupported("single-segment zstd frame of %d bytes exceeds %d", z.header.contentSize, MaxWindowSize)
			}
			z.hasHead = true
			z.buf = z.buf[:0]
			z.state = walkBlockHeader
		case walkBlockHeader:
			z.buf = append(z.buf, p[0])
			p = p[1:]
			if len(z.buf) < 3 {
				continue
			}
			bh := uint32(z.buf[0]) | uint32(z.buf[1])<<8 | uint32(z.buf[2])<<16
			z.buf = z.buf[:0]
			z.last = bh&1 != 0
			size := int(bh >> 3)
			switch (bh >> 1) & 3 {
			case 0: // raw
				z.skip = size
			case 1: // RLE: one byte regenerates size bytes
				z.skip = 1
			case 2: // compressed
				z.skip = size
			default:
				z.err = corrupt("zstd block of reserved type")
			}
			if size > zstdMaxBlock {
				z.err = corrupt("zstd block of %d bytes exceeds %d", size, zstdMaxBlock)
			}
			z.state = walkBlockBody
			z.endOfPart()
		case walkBlockBody, walkChecksum:
			k := min(z.skip, len(p))
			z.skip -= k
			p = p[k:]
			z.endOfPart()
		case walkDone:
			if len(p) >= 4 && binary.LittleEndian.Uint32(p)&zstdSkippableMask == zstdSkippableID {
				z.err = unsupported("zstd skippable frame after the frame")
			} else if len(p) >= 4 && bytes.Equal(p[:4], zstdMagic) {
				z.err = unsupported("more than one zstd frame")
			} else {
				z.err = unsupported("data after the zstd frame")
			}
		}
	}
	if z.err != nil {
		return 0, z.err
	}
	return n, nil
}

// endOfPart moves on once the current block body or checksum has been passed.
func (z *zstdWalker) endOfPart() {
	if z.skip > 0 {
		return
	}
	switch {
	case z.state == walkBlockBody && !z.last:
		z.state = walkBlockHeader
	case z.state == walkBlockBody && z.header.checksum:
		z.state = walkChecksum
		z.skip = 4
	default:
		z.state = walkDone
	}
}

// finish reports whether the stream ended exactly at the end of a frame.
func (z *zstdWalker) finish() error {
	if z.err != nil {
		return z.err
	}
	if z.state != walkDone {
		return corrupt("zstd stream truncated")
	}
	return nil
}
