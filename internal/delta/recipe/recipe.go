// Package recipe finds and replays the compressor settings that reproduce a layer blob byte for byte.
package recipe

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// A layer blob is a compressed tar. A child that rebuilt the uncompressed tar by delta has to
// recompress it into exactly the bytes of the parent's blob, or the digest will not match. The
// parent therefore runs DetectAndConfirm on each blob: it tries candidate compressors on a
// prefix of the decompressed stream, compares what they emit with the blob's own bytes, and
// confirms the winner on the whole blob. The resulting Recipe travels to the child, which
// hands it to NewWriter and must still check the digest of what comes out.
//
// Only compressors that have a bit-exact Go implementation are supported: Go's compress/gzip
// (Docker, BuildKit, containerd, go-containerregistry), klauspost/compress gzip, klauspost/pgzip
// (podman, buildah, skopeo) and klauspost/compress zstd. Blobs written by zlib-based tools
// (GNU gzip, pigz) or by the C zstd are reported as ErrUnsupported; they need the fallback of
// sending the blob itself.

// Formats of a compressed blob.
const (
	FormatGzip = "gzip"
	FormatZstd = "zstd"
)

// Compressors a Recipe can name.
const (
	// CompressorGoGzip is Go's compress/gzip (compress/flate).
	CompressorGoGzip = "go-gzip"
	// CompressorKlauspostGzip is github.com/klauspost/compress/gzip used as a stream.
	CompressorKlauspostGzip = "klauspost-gzip"
	// CompressorPgzip is github.com/klauspost/pgzip: independent deflate blocks of BlockSize
	// input bytes, each primed with the last 16 KiB of the previous block and ended by a sync
	// flush.
	CompressorPgzip = "pgzip"
	// CompressorKlauspostZstd is github.com/klauspost/compress/zstd used as a stream.
	CompressorKlauspostZstd = "klauspost-zstd"
)

// Limits on what a Recipe may ask for. They keep a recipe received from the network from
// making a node allocate without bound.
const (
	// MaxHeaderSize caps the verbatim gzip header (10 bytes plus FEXTRA, FNAME, FCOMMENT and FHCRC).
	MaxHeaderSize = 64 << 10
	// MinBlockSize and MaxBlockSize bound a pgzip block; pgzip itself refuses blocks of
	// 16 KiB or less because each block is primed with the previous block's last 16 KiB.
	MinBlockSize = pgzipTail + 1
	MaxBlockSize = 32 << 20
	// MinWindowSize and MaxWindowSize bound a zstd window (always a power of two here).
	// klauspost's encoders default to 4 or 8 MiB; each one allocates twice its window,
	// and detection runs several.
	MinWindowSize = 1 << 10
	MaxWindowSize = 16 << 20
	// maxToolchain caps the length of Recipe.Toolchain.
	maxToolchain = 64
)

// Errors callers can test for with errors.Is. The errors returned wrap them with the reason.
var (
	// ErrUnsupported: the blob cannot be reproduced by any supported recipe (unknown format,
	// multi-member gzip, trailing data, a compressor without a Go equivalent), or the recipe
	// cannot be reproduced by this binary (its toolchain family differs).
	ErrUnsupported = errors.New("recipe: unsupported")
	// ErrMismatch: recompressing with the recipe does not give the blob's bytes.
	ErrMismatch = errors.New("recipe: recompressed output differs from the blob")
	// ErrCorrupt: the blob is not a valid gzip or zstd stream (bad checksum, truncated, ...).
	ErrCorrupt = errors.New("recipe: corrupt blob")
	// ErrInvalid: a recipe is malformed (unknown names, out-of-range values, bad header).
	ErrInvalid = errors.New("recipe: invalid recipe")
)

// Recipe describes how a blob was compressed, precisely enough to compress its uncompressed
// content into the same bytes again. Its JSON form is part of the parent–child protocol; the
// field names are stable.
type Recipe struct {
	// Format is FormatGzip or FormatZstd.
	Format string `json:"format"`
	// Compressor is one of the Compressor constants; it must belong to Format.
	Compressor string `json:"compressor"`
	// Toolchain names the output family of the compressor implementation that reproduced the
	// blob (for example "go1.8" for Go's compress/flate as of Go 1.8 to 1.26). A node whose
	// own family differs refuses the recipe instead of producing different bytes. See
	// [Toolchain].
	Toolchain string `json:"toolchain"`
	// Level is the compression level, as the compressor's own API numbers it and never its
	// "default" alias: for the gzip compressors -2 (Huffman only), 0 (stored) or 1 to 9 (Go's
	// default is 6, klauspost's and pgzip's 5); for klauspost-zstd the zstd.EncoderLevel, 1
	// (fastest) to 4 (best); zstd's numeric level 3, the default, is 2.
	Level int `json:"level"`
	// BlockSize is the pgzip block size in uncompressed bytes (pgzip's default is 1 MiB).
	// The output does not depend on how many blocks pgzip compressed at once.
	BlockSize int `json:"blockSize,omitempty"`
	// WindowSize is the zstd encoder window in bytes (a power of two).
	WindowSize int `json:"windowSize,omitempty"`
	// Checksum tells whether the zstd frame ends with a content checksum.
	Checksum bool `json:"checksum,omitempty"`
	// LeadBlock is, for zstd, the size of a first block the compressor was made to end
	// early; 0 if there is none. containers/image (podman, buildah, skopeo) reads the first 8
	// bytes of a layer to detect its compression, writes them to the encoder and hands it the
	// rest with io.Copy, whose ReadFrom flushes those 8 bytes as a block of their own.
	LeadBlock int `json:"leadBlock,omitempty"`
	// Header is the gzip header exactly as the blob has it: 10 bytes, then FEXTRA, FNAME,
	// FCOMMENT and FHCRC when its flags say so. It is replayed verbatim, never regenerated,
	// because the modification time, OS and XFL bytes differ between tools.
	Header []byte `json:"header,omitempty"`
}

// String gives a short human-readable form, for logs.
func (rc Recipe) String() string {
	var b bytes.Buffer
	b.WriteString(rc.Compressor)
	b.WriteString(" level ")
	b.WriteString(strconv.Itoa(rc.Level))
	if rc.BlockSize != 0 {
		fmt.Fprintf(&b, " block %d", rc.BlockSize)
	}
	if rc.WindowSize != 0 {
		fmt.Fprintf(&b, " window %d", rc.WindowSize)
	}
	if rc.Format == FormatZstd {
		fmt.Fprintf(&b, " checksum %t", rc.Checksum)
	}
	if rc.LeadBlock != 0 {
		fmt.Fprintf(&b, " lead block %d", rc.LeadBlock)
	}
	if rc.Toolchain != "" {
		b.WriteString(" (" + rc.Toolchain + ")")
	}
	return b.String()
}

// Validate checks that rc is well formed: known format and compressor, levels and sizes in
// range, fields that do not belong to the compressor left empty, and a gzip header that parses
// to exactly its length. Call it on every recipe received from elsewhere; NewWriter and Confirm
// do. It does not check that this binary can reproduce the recipe; NewWriter does that.
func (rc Recipe) Validate() error {
	invalid := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	switch rc.Compressor {
	case CompressorGoGzip, CompressorKlauspostGzip, CompressorPgzip:
		if rc.Format != FormatGzip {
			return invalid("compressor %q writes gzip, not format %q", rc.Compressor, rc.Format)
		}
		if rc.Level == -1 {
			return invalid("level -1 is an alias; record the level it stands for (%d)", defaultLevel(rc.Compressor))
		}
		if rc.Level < -2 || rc.Level > 9 {
			return invalid("%s level %d out of range -2..9", rc.Compressor, rc.Level)
		}
		if rc.WindowSize != 0 || rc.Checksum || rc.LeadBlock != 0 {
			return invalid("windowSize, checksum and leadBlock are zstd settings, not %s", rc.Compressor)
		}
		if rc.Compressor == CompressorPgzip {
			if rc.BlockSize < MinBlockSize || rc.BlockSize > MaxBlockSize {
				return invalid("pgzip block size %d out of range %d..%d", rc.BlockSize, MinBlockSize, MaxBlockSize)
			}
		} else if rc.BlockSize != 0 {
			return invalid("blockSize is a pgzip setting, not %s", rc.Compressor)
		}
		if len(rc.Header) > MaxHeaderSize {
			return invalid("gzip header of %d bytes exceeds %d", len(rc.Header), MaxHeaderSize)
		}
		n, err := parseGzipHeader(rc.Header)
		if err != nil {
			return invalid("gzip header: %v", err)
		}
		if n != len(rc.Header) {
			return invalid("gzip header has %d bytes after its end", len(rc.Header)-n)
		}
	case CompressorKlauspostZstd:
		if rc.Format != FormatZstd {
			return invalid("compressor %q writes zstd, not format %q", rc.Compressor, rc.Format)
		}
		if rc.Level < 1 || rc.Level > 4 {
			return invalid("zstd encoder level %d out of range 1..4", rc.Level)
		}
		if rc.WindowSize < MinWindowSize || rc.WindowSize > MaxWindowSize || rc.WindowSize&(rc.WindowSize-1) != 0 {
			return invalid("zstd window size %d is not a power of two in %d..%d", rc.WindowSize, MinWindowSize, MaxWindowSize)
		}
		if rc.BlockSize != 0 || len(rc.Header) != 0 {
			return invalid("blockSize and header are gzip settings, not %s", rc.Compressor)
		}
		if rc.LeadBlock < 0 || rc.LeadBlock >= zstdMaxBlock {
			return invalid("zstd lead block of %d bytes out of range 0..%d", rc.LeadBlock, zstdMaxBlock-1)
		}
	case "":
		return invalid("no compressor")
	default:
		return invalid("unknown compressor %q", rc.Compressor)
	}
	if rc.Toolchain == "" {
		return invalid("no toolchain family")
	}
	if len(rc.Toolchain) > maxToolchain {
		return invalid("toolchain family longer than %d bytes", maxToolchain)
	}
	for i := 0; i < len(rc.Toolchain); i++ {
		if c := rc.Toolchain[i]; c <= ' ' || c > '~' {
			return invalid("toolchain family %q has a byte outside printable ASCII", rc.Toolchain)
		}
	}
	return nil
}

// ParseRecipe decodes a recipe from its JSON form strictly: unknown fields and trailing data
// are refused (a field this version does not know might change the output), and the result is
// validated. Recipes decoded leniently as part of a larger document must go through Validate
// before use; NewWriter does that itself.
func ParseRecipe(data []byte) (Recipe, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var rc Recipe
	if err := dec.Decode(&rc); err != nil {
		return Recipe{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Recipe{}, fmt.Errorf("%w: data after the recipe", ErrInvalid)
	}
	if err := rc.Validate(); err != nil {
		return Recipe{}, err
	}
	return rc, nil
}

// defaultLevel is the level a compressor's "default compression" (-1) stands for.
func defaultLevel(compressor string) int {
	if compressor == CompressorGoGzip {
		return 6
	}
	return 5
}
