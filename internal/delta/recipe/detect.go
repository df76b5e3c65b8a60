package recipe

import (
	"bufio"
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// Detection decompresses a prefix of the blob and recompresses it with each candidate,
// comparing the output with the blob's bytes as it is produced (see matcher). Only output a
// candidate emitted before being closed is compared: encoders emit a block once they have
// buffered enough input and do not revise it, so that output is a prefix of what they would
// write for the whole blob, whereas closing would end the stream where the prefix ends. Wrong
// candidates differ within their first block, so trying several dozen costs little more than
// running the right one over the prefix.

// The prefix sizes are variables so that tests under the race detector, which slows the
// encoders tenfold, can shrink them.
var (
	// trialPlain is how much uncompressed data candidates are tried on.
	trialPlain = 4 << 20
	// trialCompressed caps the blob bytes read to get it (deflate streams of empty blocks
	// could otherwise make a small prefix cost any amount of reading).
	trialCompressed = 8 << 20
)

const (
	// trialChunk is the size of the writes during a trial; a failed candidate is noticed
	// between them.
	trialChunk = 32 << 10
	// maxConfirm is how many candidates that the prefix cannot tell apart DetectAndConfirm
	// confirms at once (each costs a full recompression).
	maxConfirm = 3
)

// pgzip block sizes tried: pgzip's default (1 MiB) first, then other sizes callers of
// SetConcurrency tend to choose.
var pgzipBlockSizes = []int{1 << 20, 256 << 10, 512 << 10, 2 << 20}

// Detect reads the beginning of a blob from r (at most about 8 MiB) and returns the recipe
// whose output matches it, found by trying candidate compressors on the first 4 MiB of
// content. Detect's answer is a hypothesis: confirm it on the whole blob with Confirm, or use
// DetectAndConfirm. Blobs that no candidate reproduces, such as GNU gzip or pigz output,
// multi-member gzip or data after the stream, give an error wrapping ErrUnsupported; damaged
// ones an error wrapping ErrCorrupt.
func Detect(ctx context.Context, r io.Reader) (Recipe, error) {
	cands, _, _, err := detect(ctx, r)
	if err != nil {
		return Recipe{}, err
	}
	return cands[0], nil
}

// detectMiss is what detect learnt of a blob that no candidate reproduces: the history of
// what it read (from the start of the blob), the content the candidates were tried on, and
// for gzip the blob's header and the candidate whose output matched the most, for zstd the
// candidates.
type detectMiss struct {
	h       *history
	plain   []byte
	header  []byte
	closest Recipe
	zstd    []Recipe
}

// detect returns the candidates that reproduce the prefix, most common first, and the
// history of the blob bytes it read, from the start of the blob; its eof is set when that is
// the whole blob, in which case the candidates reproduce it entirely. When no candidate
// reproduces a blob, the error wraps ErrUnsupported and miss says what was learnt.
func detect(ctx context.Context, r io.Reader) (cands []Recipe, h *history, miss *detectMiss, err error) {
	h = &history{}
	rr := &recordingReader{r: r, h: h, limit: int64(trialCompressed)}
	br := bufio.NewReaderSize(rr, 64<<10)
	if magic, _ := br.Peek(4); len(magic) == 4 && string(magic) == string(zstdMagic) {
		fh, lead, err := peekZstdHeader(br)
		if err != nil {
			return nil, nil, nil, err
		}
		if cands = zstdCandidates(fh, lead); len(cands) == 0 {
			return nil, nil, nil, unsupported("zstd window of %d bytes: a rebuild uses a power of two from %d to %d bytes", fh.window, MinWindowSize, MaxWindowSize)
		}
	}
	dec, header, err := newDecoder(br)
	if err != nil {
		return nil, nil, nil, err
	}
	defer dec.Close()
	if header != nil {
		cands = gzipCandidates(header)
	}
	plain, complete, err := readPrefix(ctx, dec, rr)
	if err != nil {
		return nil, nil, nil, err
	}
	h.eof = complete

	results, err := runTrials(ctx, cands, plain, h)
	if err != nil {
		return nil, nil, nil, err
	}
	var best int64
	for _, res := range results {
		if res.err == nil {
			best = max(best, res.matched)
		}
	}
	// Keep the candidates that matched all they wrote, unless they wrote much less than the
	// best: one that emitted nothing yet (a pgzip block larger than the prefix) proves
	// nothing.
	var survivors []Recipe
	for _, res := range results {
		if !res.skipped && res.err == nil && res.matched*2 >= best && res.matched > int64(len(header)) {
			res.rc.Toolchain = family(res.rc.Compressor, res.rc.Level)
			survivors = append(survivors, res.rc)
		}
	}
	if len(survivors) == 0 {
		var closest trialResult
		for _, res := range results {
			if res.matched > closest.matched {
				closest = res
			}
		}
		switch {
		case header != nil:
			miss = &detectMiss{h: h, plain: plain, header: header, closest: closest.rc}
		case len(cands) > 0 && cands[0].Format == FormatZstd:
			miss = &detectMiss{h: h, plain: plain, zstd: cands}
		}
		if closest.err == nil {
			return nil, nil, miss, unsupported("no candidate compressor reproduces the blob")
		}
		return nil, nil, miss, unsupported("no candidate compressor reproduces the blob (closest: %s, %v)", closest.rc, closest.err)
	}
	return survivors, h, nil, nil
}

// readPrefix decompresses up to trialPlain bytes. complete reports that this is the whole
// content and the decoder has checked the end of the blob.
func readPrefix(ctx context.Context, dec io.Reader, rr *recordingReader) (plain []byte, complete bool, err error) {
	plain = make([]byte, 0, 1<<20)
	for len(plain) < trialPlain {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		if len(plain) == cap(plain) {
			plain = append(plain, 0)[:len(plain)]
		}
		n, err := dec.Read(plain[len(plain):min(cap(plain), trialPlain)])
		plain = plain[:len(plain)+n]
		switch {
		case err == io.EOF:
			return plain, !rr.hit, nil
		case err != nil && rr.hit:
			// The prefix ends inside the stream; whatever it decoded to is what we have.
			return plain, false, nil
		case err != nil:
			return nil, false, err
		}
	}
	return plain, false, nil
}

// trialResult is the outcome of trying one candidate.
type trialResult struct {
	rc      Recipe
	matched int64 // blob bytes its output matched
	fed     int   // content bytes it had been given when it failed; -1 if at Close
	err     error // why it failed; nil if it matched all it wrote
	skipped bool  // not tried: another trial showed it fails
}

// runTrials tries the candidates in parallel (a trial only reads plain and the history).
//
// On a whole blob, a candidate that reproduces it is right, so the trials stop at the first in
// candidate order that does: most small layers cost a single recompression. On a prefix every
// candidate is tried, to find the ties. A pgzip candidate writes exactly what klauspost-gzip at
// the same level writes until its first block ends, so when klauspost-gzip failed before that,
// the pgzip candidate is known to fail too and is skipped; the slow levels make that worth
// running the pgzip candidates in a second round.
func runTrials(ctx context.Context, cands []Recipe, plain []byte, h *history) ([]trialResult, error) {
	results := make([]trialResult, len(cands))
	var found atomic.Int64 // lowest index that reproduced the whole blob
	found.Store(int64(len(cands)))
	run := func(pick func(i int) bool) {
		work := make(chan int)
		var wg sync.WaitGroup
		for range runtime.GOMAXPROCS(0) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					if h.eof && int64(i) > found.Load() {
						results[i] = trialResult{rc: cands[i], skipped: true, err: errors.New("an earlier candidate reproduces the blob")}
						continue
					}
					results[i] = trial(ctx, cands[i], plain, h)
					for h.eof && results[i].err == nil {
						if f := found.Load(); int64(i) >= f || found.CompareAndSwap(f, int64(i)) {
							break
						}
					}
				}
			}()
		}
		for i := range cands {
			if pick(i) {
				work <- i
			}
		}
		close(work)
		wg.Wait()
	}
	run(func(i int) bool { return cands[i].Compressor != CompressorPgzip })
	kpFailedAt := map[int]int{} // level → content fed when klauspost-gzip failed
	for _, res := range results {
		if res.rc.Compressor == CompressorKlauspostGzip && res.err != nil && !res.skipped {
			kpFailedAt[res.rc.Level] = res.fed
		}
	}
	oneBlock := map[int]bool{} // levels tried with a block size larger than the content
	run(func(i int) bool {
		rc := cands[i]
		if rc.Compressor != CompressorPgzip {
			return false
		}
		skip := func(why string) bool {
			results[i] = trialResult{rc: rc, skipped: true, err: errors.New(why)}
			return false
		}
		if h.eof && int64(i) > found.Load() {
			return skip("an earlier candidate reproduces the blob")
		}
		if fed, ok := kpFailedAt[rc.Level]; ok && fed >= 0 && fed <= rc.BlockSize {
			return skip("fails as klauspost-gzip at the same level does")
		}
		if rc.BlockSize > len(plain) {
			// A prefix within the first block shows nothing of it; on a whole blob every
			// block size larger than the content gives the same single block.
			if !h.eof || oneBlock[rc.Level] {
				return skip("block size larger than the content tried")
			}
			oneBlock[rc.Level] = true
		}
		return true
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return results, nil
}

// trial recompresses plain with rc, comparing the output with the history. On a complete blob
// the candidate is closed and must reproduce it entirely.
func trial(ctx context.Context, rc Recipe, plain []byte, h *history) trialResult {
	m := &matcher{h: h, prefix: !h.eof}
	w := newWriter(m, rc, writerOptions{workers: 1})
	fed := 0
	for fed < len(plain) && m.err == nil {
		if err := ctx.Err(); err != nil {
			m.err = err
			break
		}
		n := min(trialChunk, len(plain)-fed)
		w.Write(plain[fed : fed+n])
		fed += n
	}
	if h.eof && m.err == nil {
		fed = -1 // what Close writes differs between klauspost-gzip and pgzip
		w.Close()
		m.finish()
	}
	res := trialResult{rc: rc, matched: m.off, fed: fed, err: m.err}
	if !h.eof {
		// Returns pooled encoders; what it writes is past the prefix and not looked at.
		m.err = errPrefixEnd
		w.Close()
	}
	if errors.Is(res.err, errPrefixEnd) {
		res.err = nil
	}
	return res
}

// peekZstdHeader parses the frame header at the start of br without consuming it, and
// returns the size of the frame's lead block (see Recipe.LeadBlock), 0 if it has none.
func peekZstdHeader(br *bufio.Reader) (zstdFrameHeader, int, error) {
	b, err := br.Peek(5)
	if err != nil {
		return zstdFrameHeader{}, 0, corrupt("zstd frame header truncated")
	}
	n := zstdHeaderLen(b[4])
	if b, err = br.Peek(n); err != nil {
		return zstdFrameHeader{}, 0, corrupt("zstd frame header truncated")
	}
	fh, err := parseZstdFrameHeader(b)
	if err != nil {
		return fh, 0, err
	}
	lead := 0
	if b, err := br.Peek(n + 3); err == nil {
		lead = zstdLeadBlock(b[n:])
	}
	return fh, lead, nil
}

// zstdLeadBlock returns the size of the content of the first block, whose 3-byte header is
// bh, when it shows that the encoder was flushed early: a block stored raw or as a run (so its
// content size is in its header) that is not the frame's last and is shorter than any block
// klauspost's encoder ends by itself (64 KiB at SpeedFastest, 128 KiB otherwise). Otherwise 0.
// A short first block in another form is not recognised, and its blob not reproduced.
func zstdLeadBlock(bh []byte) int {
	h := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
	last, kind, size := h&1 != 0, (h>>1)&3, int(h>>3)
	if last || kind > 1 || size == 0 || size >= 64<<10 {
		return 0
	}
	return size
}

// gzipCandidates lists the gzip recipes to try, most common first: Go's compress/gzip at its
// default level (Docker, BuildKit, containerd) and at BestSpeed (go-containerregistry: crane,
// ko, kaniko), pgzip with its defaults (containers/image: podman, buildah, skopeo), then every
// other level of each compressor and other pgzip block sizes.
func gzipCandidates(header []byte) []Recipe {
	var out []Recipe
	seen := map[string]bool{}
	add := func(compressor string, level, blockSize int) {
		rc := Recipe{Format: FormatGzip, Compressor: compressor, Level: level, BlockSize: blockSize, Header: header}
		if key := rc.String(); !seen[key] {
			seen[key] = true
			out = append(out, rc)
		}
	}
	add(CompressorGoGzip, 6, 0)
	add(CompressorGoGzip, 1, 0)
	add(CompressorPgzip, 5, 1<<20)
	add(CompressorKlauspostGzip, 5, 0)
	add(CompressorGoGzip, 9, 0)
	levels := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 0, -2}
	for _, l := range levels {
		add(CompressorGoGzip, l, 0)
	}
	for _, l := range levels {
		add(CompressorKlauspostGzip, l, 0)
	}
	for _, bs := range pgzipBlockSizes {
		for _, l := range levels {
			add(CompressorPgzip, l, bs)
		}
	}
	return out
}

// zstdCandidates lists the klauspost encoder levels to try with the window and checksum the
// frame header shows, and the lead block the first block shows: SpeedDefault first
// (containerd, containers/image and BuildKit map the default zstd level 3 to it), then the
// others.
func zstdCandidates(fh zstdFrameHeader, lead int) []Recipe {
	var out []Recipe
	for _, level := range []int{2, 1, 3, 4} {
		window := int(fh.window)
		if fh.single {
			// klauspost writes a single-segment frame when the whole content fits one
			// block; the header then gives no window, so assume the level's default.
			window = zstdDefaultWindow(level)
		}
		rc := Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: level, WindowSize: window, Checksum: fh.checksum, LeadBlock: lead}
		rc.Toolchain = "x" // for Validate only
		if rc.Validate() == nil {
			rc.Toolchain = ""
			out = append(out, rc)
		}
	}
	return out
}
