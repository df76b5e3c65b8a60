package recipe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"

	"github.com/outpost-registry/outpost/internal/delta/pflate"
)

// Go's compress/flate at the levels Docker and BuildKit use is the slowest encoder a child
// replays (about 30 MiB/s of tar on one core) and a deflate stream is sequential. For those
// recipes the parent also finds split points (FindSplits): block boundaries where a
// compressor restarted with the same history emits the same bits, checked on the blob. With
// them a child compresses the segments on all its cores (NewWriterSplits).

// parallelRecipe tells whether FindSplits and NewWriterSplits apply to rc.
func parallelRecipe(rc Recipe) bool {
	return rc.Compressor == CompressorGoGzip && rc.Level >= pflate.MinLevel && rc.Level <= pflate.MaxLevel
}

// FindSplits returns split points for NewWriterSplits: where blob (blobSize bytes, which rc
// reproduces) can be recompressed in parallel from tar, its content (tarSize bytes). It
// returns nil for recipes other than go-gzip levels 4 to 9, for short tars and for blobs no
// split point reproduces.
func FindSplits(ctx context.Context, blob io.ReaderAt, blobSize int64, rc Recipe, tar io.ReaderAt, tarSize int64) ([]int64, error) {
	if !parallelRecipe(rc) {
		return nil, nil
	}
	// The deflate stream lies between the header and the CRC-32 and size trailer.
	start, end := int64(len(rc.Header)), blobSize-8
	if end <= start {
		return nil, fmt.Errorf("%w: a %d-byte blob cannot hold a %d-byte gzip header and trailer", ErrCorrupt, blobSize, start)
	}
	return pflate.FindSplits(ctx, io.NewSectionReader(blob, start, end-start), end-start, tar, tarSize, rc.Level, runtime.GOMAXPROCS(0))
}

// NewWriterSplits is NewWriter compressing in parallel at split points from FindSplits. The
// input must be the tar the split points were found on; anything else makes Write or Close
// fail with an error wrapping ErrMismatch. Without split points it is NewWriter.
func NewWriterSplits(w io.Writer, rc Recipe, splits []int64) (io.WriteCloser, error) {
	if len(splits) == 0 {
		return NewWriter(w, rc)
	}
	if err := rc.Validate(); err != nil {
		return nil, err
	}
	if err := checkToolchain(rc); err != nil {
		return nil, err
	}
	if !parallelRecipe(rc) {
		return nil, fmt.Errorf("%w: split points for %s, which is not compressed in parallel", ErrInvalid, rc)
	}
	if err := pflate.ValidateSplits(splits); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	// pflate buffers its output itself; the header is written before the first segment
	// and the trailer after the last, from this goroutine.
	body, err := pflate.NewWriter(w, rc.Level, splits, runtime.GOMAXPROCS(0))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return &gzipWriter{w: w, header: rc.Header, body: mismatchAs(body)}, nil
}

// mismatchAs reports a segment that does not reproduce the blob as ErrMismatch.
func mismatchAs(w io.WriteCloser) io.WriteCloser { return mismatchWriter{w} }

type mismatchWriter struct{ io.WriteCloser }

func (m mismatchWriter) Write(p []byte) (int, error) {
	n, err := m.WriteCloser.Write(p)
	return n, wrapMismatch(err)
}

func (m mismatchWriter) Close() error { return wrapMismatch(m.WriteCloser.Close()) }

func wrapMismatch(err error) error {
	if errors.Is(err, pflate.ErrMismatch) {
		return fmt.Errorf("%w: %w", ErrMismatch, err)
	}
	return err
}

// DetectAndConfirmSplits is DetectAndConfirm followed by FindSplits, for a blob whose content
// is at hand: tar, tarSize bytes, as NewReader decompressed it (so the blob is one gzip member,
// its trailer checked, nothing after it). For a go-gzip recipe at levels 4 to 9 the last check
// of FindSplits, recompressing the whole stream in parallel and comparing it with the blob,
// also confirms the recipe, which saves DetectAndConfirm's serial recompression; when that
// finds no split points, or for other recipes, it is DetectAndConfirm then FindSplits. The
// errors are DetectAndConfirm's; a failure to find split points only leaves them nil.
func DetectAndConfirmSplits(ctx context.Context, blob io.ReaderAt, blobSize int64, tar io.ReaderAt, tarSize int64) (Recipe, []int64, error) {
	if rc, err := Detect(ctx, io.NewSectionReader(blob, 0, blobSize)); err == nil && parallelRecipe(rc) {
		// The header is the blob's own, verbatim; the trailer is that of the content.
		if splits, err := FindSplits(ctx, blob, blobSize, rc, tar, tarSize); err == nil && splits != nil {
			return rc, splits, nil
		}
		if err := ctx.Err(); err != nil {
			return Recipe{}, nil, err
		}
	}
	rc, err := DetectAndConfirm(ctx, io.NewSectionReader(blob, 0, blobSize))
	if err != nil {
		return Recipe{}, nil, err
	}
	splits, _ := FindSplits(ctx, blob, blobSize, rc, tar, tarSize)
	return rc, splits, ctx.Err()
}
