package recipe

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"

	kpflate "github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// NewReader decompresses a blob the way Confirm reads it: exactly one gzip member or one zstd
// frame, with its checksums verified. A second member or frame, skippable frames or any data
// after the end fail with an error wrapping ErrUnsupported when the reader gets there; a
// damaged stream with one wrapping ErrCorrupt. (compress/gzip is the lenient choice, for
// instance to compute the diff-id of a multi-member blob.)
func NewReader(r io.Reader) (io.ReadCloser, error) {
	d, _, err := newDecoder(bufio.NewReaderSize(r, 64<<10))
	return d, err
}

// newDecoder starts decompressing br, whose format it recognises from the magic bytes. For
// gzip it also returns the header, which it has consumed.
func newDecoder(br *bufio.Reader) (io.ReadCloser, []byte, error) {
	magic, err := br.Peek(4)
	switch {
	case len(magic) >= 2 && bytes.Equal(magic[:2], gzipMagic):
		header, err := readGzipHeader(br)
		if err != nil {
			return nil, nil, err
		}
		return &gzipDecoder{br: br, fr: kpflate.NewReader(br)}, header, nil
	case len(magic) == 4 && bytes.Equal(magic, zstdMagic):
		d := &zstdDecoder{src: br}
		d.wr = &walkingReader{r: br, walk: &d.walk}
		d.dec, err = zstd.NewReader(d.wr,
			// Synchronous decoding reads the source only from Read, so the walker is
			// never touched by another goroutine; zstd decodes far faster than we
			// recompress anyway.
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxWindow(MaxWindowSize))
		if err != nil {
			return nil, nil, err
		}
		return d, nil, nil
	case err != nil && err != io.EOF:
		return nil, nil, err
	case len(magic) == 4 && binary.LittleEndian.Uint32(magic)&zstdSkippableMask == zstdSkippableID:
		return nil, nil, unsupported("blob starts with a zstd skippable frame")
	default:
		return nil, nil, unsupported("blob is neither gzip nor zstd")
	}
}

// gzipDecoder inflates one gzip member after its header and checks the trailer and that
// nothing follows. br must be the reader the header came from: the inflater reads it byte by
// byte as an io.ByteReader, so it stops exactly at the end of the deflate stream.
type gzipDecoder struct {
	br   *bufio.Reader
	fr   io.ReadCloser
	crc  uint32
	size uint32
	err  error
}

func (d *gzipDecoder) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.fr.Read(p)
	d.crc = crc32.Update(d.crc, crc32.IEEETable, p[:n])
	d.size += uint32(n)
	switch {
	case err == nil:
	case err == io.EOF:
		if err = d.finish(); err == nil {
			err = io.EOF
		}
	case errors.Is(err, io.ErrUnexpectedEOF):
		err = corrupt("gzip stream truncated")
	default:
		var ce kpflate.CorruptInputError
		if errors.As(err, &ce) {
			err = corrupt("deflate stream: %v", err)
		}
	}
	d.err = err
	return n, err
}

// finish checks the trailer and that the blob ends with it.
func (d *gzipDecoder) finish() error {
	var trailer [8]byte
	if _, err := io.ReadFull(d.br, trailer[:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return corrupt("gzip trailer truncated")
		}
		return err
	}
	if crc := binary.LittleEndian.Uint32(trailer[:4]); crc != d.crc {
		return corrupt("gzip CRC-32 %#08x, content has %#08x", crc, d.crc)
	}
	if size := binary.LittleEndian.Uint32(trailer[4:]); size != d.size {
		return corrupt("gzip size %d, content has %d (modulo 2^32)", size, d.size)
	}
	next, err := d.br.Peek(2)
	switch {
	case len(next) == 0 && err == io.EOF:
		return nil
	case len(next) == 0:
		return err
	case bytes.Equal(next, gzipMagic):
		return unsupported("multi-member gzip")
	default:
		return unsupported("data after the gzip member")
	}
}

func (d *gzipDecoder) Close() error {
	if d.err == nil {
		d.err = errClosedReader
	}
	return d.fr.Close()
}

var errClosedReader = errors.New("recipe: read after Close")

// zstdDecoder decodes one zstd frame, with a walker checking the frame structure on the way.
type zstdDecoder struct {
	src  io.Reader
	wr   *walkingReader
	dec  *zstd.Decoder
	walk zstdWalker
	err  error
}

func (d *zstdDecoder) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.dec.Read(p)
	switch {
	case err == nil:
	case d.walk.err != nil:
		err = d.walk.err
	case d.wr.err != nil:
		err = d.wr.err // reading the blob failed
	case err == io.EOF:
		// The decoder looked for a next frame and found none; anything it did not read
		// still has to pass the walker.
		if _, cerr := io.Copy(io.Discard, &walkingReader{r: d.src, walk: &d.walk}); cerr != nil {
			err = cerr
		} else if ferr := d.walk.finish(); ferr != nil {
			err = ferr
		}
	case errors.Is(err, io.ErrUnexpectedEOF):
		err = corrupt("zstd stream truncated")
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		err = unsupported("zstd: %v", err)
	default:
		err = corrupt("zstd: %v", err)
	}
	d.err = err
	return n, err
}

func (d *zstdDecoder) Close() error {
	if d.err == nil {
		d.err = errClosedReader
	}
	d.dec.Close()
	return nil
}

// walkingReader shows everything read from r to a zstd walker.
type walkingReader struct {
	r    io.Reader
	walk *zstdWalker
	err  error // the first error reading r other than io.EOF
}

func (w *walkingReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 {
		if _, werr := w.walk.Write(p[:n]); werr != nil {
			return 0, werr
		}
	}
	if err != nil && err != io.EOF && w.err == nil {
		w.err = err
	}
	return n, err
}
