package recipe

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
)

// maxLag bounds the blob bytes kept for comparison: from the candidate furthest behind to
// what the decompressor has read. A correct candidate lags by its internal buffering (at most
// a few pgzip blocks in flight); one that stays silent for longer is dropped rather than
// letting the window grow to the size of the blob.
const maxLag = 96 << 20

// Confirm reads the whole blob from r, recompresses its content with rc and checks that the
// output is the blob, byte for byte, comparing as it goes with bounded memory. It returns nil
// if it is; an error wrapping ErrMismatch (with the offset of the first difference) if not;
// ErrUnsupported if the blob has more than one gzip member or zstd frame, data after the
// stream, or if this binary cannot reproduce rc; ErrCorrupt if the blob is damaged; ErrInvalid
// if rc does not validate.
func Confirm(ctx context.Context, r io.Reader, rc Recipe) error {
	if err := rc.Validate(); err != nil {
		return err
	}
	if err := checkToolchain(rc); err != nil {
		return err
	}
	_, err := confirm(ctx, r, []Recipe{rc})
	return err
}

// DetectAndConfirm finds the recipe of the blob read from r, reading it once: it detects
// candidates on a prefix as Detect does, then confirms them on the whole blob as Confirm
// does. Memory stays bounded (the prefix it replays is at most about 8 MiB). When the prefix
// cannot tell several candidates apart (content that hardly compresses, for instance), up to
// three are confirmed together and the most common one that reproduces the blob wins. The
// errors are those of Detect, plus ErrUnsupported when the candidates that matched the prefix
// do not reproduce the whole blob.
func DetectAndConfirm(ctx context.Context, r io.Reader) (Recipe, error) {
	cands, h, miss, err := detect(ctx, r)
	if miss != nil {
		return confirmLegacy(ctx, r, miss, err)
	}
	if err != nil {
		return Recipe{}, err
	}
	if h.eof {
		// The whole blob was in the prefix and the candidates reproduced all of it.
		return cands[0], nil
	}
	if len(cands) > maxConfirm {
		cands = cands[:maxConfirm]
	}
	i, err := confirm(ctx, io.MultiReader(bytes.NewReader(h.buf), r), cands)
	if errors.Is(err, ErrMismatch) {
		return Recipe{}, fmt.Errorf("%w: %s reproduces the start of the blob but not all of it: %w",
			ErrUnsupported, confirmLabel(cands), err)
	}
	if err != nil {
		return Recipe{}, err
	}
	return cands[i], nil
}

// confirmLegacy looks for the recipe of a blob that this binary's encoders do not
// reproduce (detectErr says why) among the legacy helpers': it tries them on the content
// detect decompressed, and confirms the likeliest on the whole blob, reading it from the
// history detect kept and then from r. Without a helper, or when none of their recipes
// reproduces the blob either, the answer is detectErr.
func confirmLegacy(ctx context.Context, r io.Reader, miss *detectMiss, detectErr error) (Recipe, error) {
	cands := legacyCandidates(miss)
	if len(cands) == 0 {
		return Recipe{}, detectErr
	}
	results := make([]trialResult, len(cands))
	work := make(chan int)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range work {
				results[i] = trialLegacy(ctx, cands[i], miss.plain, miss.h)
			}
		})
	}
	for i := range cands {
		work <- i
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Recipe{}, err
	}
	if miss.h.eof {
		// The trials ran on the whole blob: one that matched it reproduces it.
		for _, res := range results {
			if res.err == nil {
				return res.rc, nil
			}
		}
		return Recipe{}, fmt.Errorf("%w; nor does %s of the legacy helpers", detectErr, confirmLabel(cands))
	}
	// A trial closes the stream where the prefix ends, so even the right recipe differs from
	// the blob in its last block: the likeliest are those whose output matched longest.
	slices.SortStableFunc(results, func(a, b trialResult) int { return cmp.Compare(b.matched, a.matched) })
	var likely []Recipe
	for _, res := range results {
		if len(likely) < maxConfirm && res.matched > int64(len(miss.header))+64 && res.matched*2 >= results[0].matched {
			likely = append(likely, res.rc)
		}
	}
	if len(likely) == 0 {
		return Recipe{}, fmt.Errorf("%w; nor does %s of the legacy helpers", detectErr, confirmLabel(cands))
	}
	i, err := confirm(ctx, io.MultiReader(bytes.NewReader(miss.h.buf), r), likely)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return Recipe{}, ctxErr
		}
		if errors.Is(err, ErrMismatch) || errors.Is(err, ErrUnsupported) {
			return Recipe{}, fmt.Errorf("%w; nor does %s of the legacy helpers: %v", detectErr, confirmLabel(likely), err)
		}
		return Recipe{}, err
	}
	return likely[i], nil
}

// trialLegacy runs the helper for rc on plain, closing the stream at its end, and compares
// the output with the history as far as it goes. Unlike trial, it closes the stream while still
// comparing, on a prefix too: a pgzip helper writes a block only when it is full or closed, so
// without the output the close flushes a pgzip candidate would show too short a match to be
// confirmed. It also always closes, which reaps the helper.
func trialLegacy(ctx context.Context, rc Recipe, plain []byte, h *history) trialResult {
	m := &matcher{h: h, prefix: !h.eof}
	w := newWriter(m, rc, writerOptions{workers: 1})
	for fed := 0; fed < len(plain) && ctx.Err() == nil; {
		n := min(trialChunk, len(plain)-fed)
		if _, err := w.Write(plain[fed : fed+n]); err != nil {
			break
		}
		fed += n
	}
	w.Close()
	if h.eof {
		m.finish()
	}
	res := trialResult{rc: rc, matched: m.off, err: m.err}
	if errors.Is(res.err, errPrefixEnd) {
		res.err = nil
	}
	return res
}

// confirm recompresses the blob from r with each recipe at once and returns the index of the
// first that reproduces it. The recipes must be valid; their toolchain is not checked.
func confirm(ctx context.Context, r io.Reader, rcs []Recipe) (int, error) {
	h := &history{}
	rr := &recordingReader{r: r, h: h}
	dec, _, err := newDecoder(bufio.NewReaderSize(rr, 64<<10))
	if err != nil {
		return -1, err
	}
	defer dec.Close()

	type candidate struct {
		m *matcher
		w io.WriteCloser
	}
	cands := make([]candidate, len(rcs))
	// The writers must write from this goroutine only (the history is not locked), so
	// zstd runs synchronously; pgzip's parallel writer does its writes from Write and Close.
	opt := writerOptions{workers: min(runtime.GOMAXPROCS(0), 2)}
	for i, rc := range rcs {
		m := &matcher{h: h}
		cands[i] = candidate{m, newWriter(m, rc, opt)}
	}
	closeAll := func() {
		for _, c := range cands {
			if c.w != nil {
				c.w.Close()
			}
		}
	}

	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			closeAll()
			return -1, err
		}
		n, rerr := dec.Read(buf)
		if n > 0 {
			live := false
			low := h.end()
			for _, c := range cands {
				if c.m.err == nil {
					c.w.Write(buf[:n])
				}
				// The decoder has read more of the blob: output that was ahead can be
				// compared now.
				c.m.catchUp()
				if c.m.err == nil {
					live = true
					low = min(low, c.m.off)
					if h.end()-c.m.off > maxLag {
						c.m.err = fmt.Errorf("%w: output lags more than %d bytes behind the blob at byte %d", ErrMismatch, maxLag, c.m.off)
					}
				}
			}
			if !live {
				closeAll()
				return -1, cands[0].m.err
			}
			h.trim(low)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			closeAll()
			return -1, rerr
		}
	}
	// The decoder has checked the end of the stream and that nothing follows it, so the
	// history now ends where the blob does.
	h.eof = true
	for _, c := range cands {
		if c.m.err == nil {
			if err := c.w.Close(); err != nil && c.m.err == nil {
				c.m.err = err
			}
			c.m.finish()
		} else {
			c.w.Close()
		}
	}
	for i, c := range cands {
		if c.m.err == nil {
			return i, nil
		}
	}
	return -1, cands[0].m.err
}

// confirmLabel describes candidates for an error message.
func confirmLabel(rcs []Recipe) string {
	if len(rcs) == 1 {
		return rcs[0].String()
	}
	return fmt.Sprintf("%s (and %d other candidates)", rcs[0], len(rcs)-1)
}
