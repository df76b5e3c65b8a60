package tardelta

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"strings"
)

// The scanner is a block-level tar parser written for this package rather
// than a wrapper around archive/tar: archive/tar hides the physical bytes of
// sparse files (it expands holes), reads GNU sparse extension blocks and PAX
// records as a side effect of Next, and stops with an error on the first
// malformed header. Here every byte of the stream has to land in exactly one
// region, so the scanner only classifies bytes; the payloads are never
// interpreted beyond what is needed to find the next header. Entry boundaries
// follow archive/tar's rules (PAX "size" overrides the header field,
// header-only types carry no data, GNU sparse extension blocks belong to the
// header) so that an index lines up with what tar readers see.
//
// A parse failure is never fatal: from the first block that is not a valid
// header (the end-of-archive zero blocks, a bad checksum, a short block) the
// rest of the stream becomes the trailer. A wrong guess can only cost delta
// size, never exactness, because reconstruction is plain concatenation.

const (
	blockSize = 512

	// maxSpecialSize bounds the content of one PAX/GNU long-name extension
	// header that is buffered and parsed (archive/tar uses the same limit).
	// A larger one is treated as an ordinary entry whose content is data.
	maxSpecialSize = 1 << 20

	// maxMeta bounds the header bytes buffered for one entry (chains of
	// extension headers, GNU sparse extension blocks).
	maxMeta = 8 << 20
)

// unit is one element of a tar stream as seen by the scanner: either an
// entry (header bytes, then dataLen bytes of content read through the
// scanner, then padding), or the trailer (everything from the first
// non-header block to EOF, read through the scanner).
type unit struct {
	trailer  bool
	meta     []byte // header bytes; valid until the next call to next
	metaOff  int64  // stream offset of meta (or of the trailer)
	name     string
	linkname string
	typ      byte
	sparse   bool
	dataLen  int64 // declared physical content length; -1 for the trailer
}

type scanner struct {
	br  *bufio.Reader
	off int64 // stream offset of the next byte taken from br
	blk [blockSize]byte

	meta []byte

	pre       []byte // trailer bytes already consumed into meta, replayed by Read
	remain    int64  // content bytes left; -1 means until EOF
	padLen    int64  // padding expected after the content
	truncated bool   // the stream ended inside content or padding
	padBuf    [blockSize]byte
}

func newScanner(r io.Reader) *scanner {
	return &scanner{br: bufio.NewReaderSize(r, 1<<20)}
}

// readFull fills p from the stream and advances the offset. It returns the
// number of bytes read and whether the stream ended early (io.EOF and
// io.ErrUnexpectedEOF are folded into short=true; other errors are returned).
func (s *scanner) readFull(p []byte) (n int, short bool, err error) {
	n, err = io.ReadFull(s.br, p)
	s.off += int64(n)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return n, true, nil
	}
	return n, false, err
}

// next parses the header bytes of the next unit. The previous unit's content
// and padding must have been consumed.
func (s *scanner) next(u *unit) error {
	*u = unit{metaOff: s.off}
	s.meta = s.meta[:0]
	s.truncated = false
	var (
		pax                paxFields
		longName, longLink string
		haveLong, haveLink bool
	)
	for {
		n, short, err := s.readFull(s.blk[:])
		if err != nil {
			return err
		}
		s.meta = append(s.meta, s.blk[:n]...)
		if short {
			return s.startTrailer(u)
		}
		if isZeroBlock(&s.blk) || !validChecksum(&s.blk) {
			return s.startTrailer(u)
		}
		typ := s.blk[156]
		size, ok := parseNumeric(s.blk[124:136])
		if !ok || size < 0 {
			return s.startTrailer(u)
		}
		switch typ {
		case 'x', 'g', 'L', 'K':
			if size > maxSpecialSize {
				break // treated below as an ordinary entry with data
			}
			start := len(s.meta)
			padded := roundUp(size)
			s.meta = append(s.meta, make([]byte, padded)...)
			n, short, err := s.readFull(s.meta[start:])
			if err != nil {
				return err
			}
			if short {
				s.meta = s.meta[:start+n]
				return s.startTrailer(u)
			}
			content := s.meta[start : start+int(size)]
			switch typ {
			case 'x':
				pax = parsePAX(content)
			case 'g':
				// archive/tar reports a global header as an entry of its
				// own; so does the index. It does not affect the next entry.
				u.meta = s.meta
				u.typ = typ
				u.name = headerName(&s.blk)
				s.remain, s.padLen = 0, 0
				return nil
			case 'L':
				longName, haveLong = cString(content), true
			case 'K':
				longLink, haveLink = cString(content), true
			}
			if len(s.meta) > maxMeta {
				// Absurd chain: close it as a header-only unit and go on.
				u.meta = s.meta
				u.typ = typ
				s.remain, s.padLen = 0, 0
				return nil
			}
			continue
		}

		// The main header of an entry.
		name := headerName(&s.blk)
		link := cString(s.blk[157:257])
		if pax.hasPath {
			name = pax.path
		}
		if pax.hasLink {
			link = pax.link
		}
		if haveLong {
			name = longName
		}
		if haveLink {
			link = longLink
		}
		if pax.sparseName != "" {
			// archive/tar applies the real name of a PAX sparse file last.
			name = pax.sparseName
		}
		if pax.hasSize {
			size = pax.size
		}
		if typ == 0 {
			// Legacy archives mark directories with a trailing slash.
			if strings.HasSuffix(name, "/") {
				typ = '5'
			} else {
				typ = '0'
			}
		}
		u.sparse = pax.sparse
		if typ == 'S' {
			u.sparse = true
			// Old GNU sparse: extension blocks holding more of the sparse
			// map follow the header before the data.
			ext := s.blk[482] != 0
			for ext {
				n, short, err := s.readFull(s.blk[:])
				if err != nil {
					return err
				}
				s.meta = append(s.meta, s.blk[:n]...)
				if short || len(s.meta) > maxMeta {
					return s.startTrailer(u)
				}
				ext = s.blk[504] != 0
			}
		}
		if headerOnlyType(typ) {
			size = 0
		}
		u.meta = s.meta
		u.name = name
		u.linkname = link
		u.typ = typ
		u.dataLen = size
		s.remain = size
		s.padLen = roundUp(size) - size
		return nil
	}
}

// startTrailer turns everything buffered so far plus the rest of the stream
// into the trailer.
func (s *scanner) startTrailer(u *unit) error {
	u.trailer = true
	u.meta = nil
	u.dataLen = -1
	u.name, u.linkname, u.typ, u.sparse = "", "", 0, false
	s.pre = s.meta
	s.remain = -1
	s.padLen = 0
	return nil
}

// Read returns content bytes of the current unit, then io.EOF.
func (s *scanner) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(s.pre) > 0 {
		n := copy(p, s.pre)
		s.pre = s.pre[n:]
		return n, nil
	}
	if s.remain == 0 {
		return 0, io.EOF
	}
	if s.remain > 0 && int64(len(p)) > s.remain {
		p = p[:s.remain]
	}
	n, err := s.br.Read(p)
	s.off += int64(n)
	if s.remain > 0 {
		s.remain -= int64(n)
	}
	if err == io.EOF {
		if s.remain > 0 {
			s.truncated = true
		}
		s.remain, s.padLen = 0, 0
		if n > 0 {
			return n, nil
		}
		return 0, io.EOF
	}
	return n, err
}

// more reports whether Read may return more content bytes.
func (s *scanner) more() bool {
	if len(s.pre) > 0 || s.remain > 0 {
		return true
	}
	if s.remain == 0 {
		return false
	}
	_, err := s.br.Peek(1)
	return err == nil
}

// readPad consumes the padding after the content (which must have been read
// completely) and returns it; it is shorter than expected only when the
// stream ends inside it.
func (s *scanner) readPad() ([]byte, error) {
	if s.truncated || s.padLen == 0 {
		s.padLen = 0
		return nil, nil
	}
	n, short, err := s.readFull(s.padBuf[:s.padLen])
	if err != nil {
		return nil, err
	}
	if short {
		s.truncated = true
	}
	s.padLen = 0
	return s.padBuf[:n], nil
}

func roundUp(n int64) int64 { return (n + blockSize - 1) &^ (blockSize - 1) }

func isZeroBlock(b *[blockSize]byte) bool {
	var z [blockSize]byte
	return *b == z
}

func headerOnlyType(t byte) bool {
	switch t {
	case '1', '2', '3', '4', '5', '6':
		return true
	}
	return false
}

// validChecksum accepts both the unsigned and the (historical) signed sum,
// as archive/tar does.
func validChecksum(b *[blockSize]byte) bool {
	want, ok := parseOctal(b[148:156])
	if !ok {
		return false
	}
	var unsigned, signed int64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return want == unsigned || want == signed
}

// parseNumeric reads a tar number field: octal text, or GNU base-256 when
// the high bit of the first byte is set.
func parseNumeric(f []byte) (int64, bool) {
	if len(f) > 0 && f[0]&0x80 != 0 {
		// Base-256, big endian; bit 6 of the first byte is the sign, and a
		// negative number is stored as its one's complement (-a-1 == ^a).
		var inv byte
		if f[0]&0x40 != 0 {
			inv = 0xff
		}
		var x uint64
		for i, c := range f {
			c ^= inv
			if i == 0 {
				c &= 0x7f
			}
			if x>>56 != 0 {
				return 0, false // overflow
			}
			x = x<<8 | uint64(c)
		}
		if x>>63 != 0 {
			return 0, false
		}
		if inv == 0xff {
			return ^int64(x), true
		}
		return int64(x), true
	}
	return parseOctal(f)
}

func parseOctal(f []byte) (int64, bool) {
	// Leading and trailing spaces and NULs are permitted.
	f = bytes.Trim(f, " \x00")
	if len(f) == 0 {
		return 0, true
	}
	x, err := strconv.ParseUint(string(f), 8, 63)
	if err != nil {
		return 0, false
	}
	return int64(x), true
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// headerName returns the name field, joined with the POSIX prefix field when
// the header is USTAR/PAX (GNU headers use that area for other fields).
func headerName(b *[blockSize]byte) string {
	name := cString(b[0:100])
	if string(b[257:263]) == "ustar\x00" {
		if prefix := cString(b[345:500]); prefix != "" {
			name = prefix + "/" + name
		}
	}
	return name
}

type paxFields struct {
	path, link, sparseName string
	size                   int64
	hasPath, hasLink       bool
	hasSize, sparse        bool
}

// parsePAX extracts the few records that change entry boundaries or names.
// Malformed input yields the records parsed so far: a wrong guess here costs
// only efficiency.
func parsePAX(b []byte) paxFields {
	var f paxFields
	for len(b) > 0 {
		sp := bytes.IndexByte(b, ' ')
		if sp <= 0 {
			break
		}
		n, err := strconv.Atoi(string(b[:sp]))
		if err != nil || n <= sp+1 || n > len(b) || b[n-1] != '\n' {
			break
		}
		rec := b[sp+1 : n-1]
		b = b[n:]
		eq := bytes.IndexByte(rec, '=')
		if eq < 0 {
			break
		}
		key, val := string(rec[:eq]), string(rec[eq+1:])
		switch {
		case key == "path":
			f.path, f.hasPath = val, true
		case key == "linkpath":
			f.link, f.hasLink = val, true
		case key == "size":
			if x, err := strconv.ParseInt(val, 10, 64); err == nil && x >= 0 {
				f.size, f.hasSize = x, true
			}
		case strings.HasPrefix(key, "GNU.sparse."):
			f.sparse = true
			if key == "GNU.sparse.name" {
				f.sparseName = val
			}
		}
	}
	return f
}
