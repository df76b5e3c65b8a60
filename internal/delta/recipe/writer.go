package recipe

import (
	"bufio"
	stdflate "compress/flate"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	kpflate "github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// Throughput on 2 cores (BenchmarkNewWriter; MiB/s of tar, measured on a tar of Go's source
// tree): go-gzip level 6, the Docker default, is the bottleneck at about 38 MiB/s (Go's
// compress/gzip alone: 37), because a deflate stream is sequential and compress/flate is the
// slowest encoder; level 9 is about 16 on mixed content. So NewWriter runs the sequential gzip
// encoders in a goroutine of their own, leaving the other core to the caller rebuilding the
// tar. go-gzip level 1 and klauspost-gzip level 5 reach about 135-140 MiB/s; pgzip about 265,
// compressing its blocks in parallel; klauspost zstd at its default level about 235.

// NewWriter returns a writer that compresses what is written to it into exactly the bytes rc
// describes, whatever the sizes of the writes. Close writes the end of the stream (it does not
// close w) and must be called even after an error, to stop the goroutines the writer uses.
// NewWriter refuses, with an error wrapping ErrUnsupported, a recipe whose toolchain family
// this binary does not reproduce; ErrInvalid if rc does not validate.
func NewWriter(w io.Writer, rc Recipe) (io.WriteCloser, error) {
	if err := rc.Validate(); err != nil {
		return nil, err
	}
	if err := checkToolchain(rc); err != nil {
		return nil, err
	}
	procs := runtime.GOMAXPROCS(0)
	return newWriter(w, rc, writerOptions{async: procs > 1, workers: procs, buffer: true}), nil
}

// writerOptions choose how a writer works, never which bytes it writes.
type writerOptions struct {
	// async lets the encoder write to w from goroutines of its own: a sequential gzip
	// encoder (go-gzip, klauspost-gzip) runs in one, and the zstd encoder gets workers as its
	// concurrency. Without it everything is written to w from within Write and Close, which
	// the comparisons during detection and confirmation rely on.
	async bool
	// workers is the number of pgzip blocks compressed at once (1: one after the other, as
	// the input arrives), and the zstd encoder's concurrency when async.
	workers int
	// buffer collects the encoder's small writes before they reach w.
	buffer bool
}

// newWriter builds the writer for a recipe that has been validated.
func newWriter(w io.Writer, rc Recipe, opt writerOptions) io.WriteCloser {
	var bw *bufio.Writer
	if opt.buffer {
		bw = bufio.NewWriterSize(w, 64<<10)
		w = bw
	}
	if rc.Format == FormatZstd {
		if helper := legacyHelperFor(rc); helper != "" {
			return &helperStream{body: newHelperBody(helper, w, rc, opt.workers), bw: bw}
		}
		concurrency := 1
		if opt.async {
			concurrency = opt.workers
		}
		enc, err := zstd.NewWriter(w, zstdOptions(rc, concurrency)...)
		if err != nil {
			// Validate admits only options the encoder accepts.
			panic("recipe: zstd options of a valid recipe refused: " + err.Error())
		}
		return &zstdWriter{enc: enc, bw: bw, lead: rc.LeadBlock}
	}
	gw := &gzipWriter{w: w, bw: bw, header: rc.Header}
	switch helper := legacyHelperFor(rc); {
	case helper != "":
		// Another process: nothing to gain from the asynchronous writer.
		gw.body = newHelperBody(helper, w, rc, opt.workers)
		return gw
	case rc.Compressor == CompressorGoGzip:
		gw.body = getStdFlate(w, rc.Level)
	case rc.Compressor == CompressorKlauspostGzip:
		gw.body = getKpFlate(w, rc.Level)
	case rc.Compressor == CompressorPgzip:
		if opt.workers > 1 {
			gw.body = newPgzipParallel(w, rc.Level, rc.BlockSize, opt.workers)
		} else {
			gw.body = newPgzipSerial(w, rc.Level, rc.BlockSize)
		}
	}
	if opt.async && rc.Compressor != CompressorPgzip {
		return newAsyncWriter(gw)
	}
	return gw
}

// gzipWriter writes one gzip member: the verbatim header, the deflate stream of an engine
// and the CRC-32 and size trailer. Using the engines directly rather than a gzip.Writer is
// what lets the header be replayed byte for byte.
type gzipWriter struct {
	w           io.Writer
	bw          *bufio.Writer // flushed by Close; nil when w is not buffered
	header      []byte
	wroteHeader bool
	body        io.WriteCloser
	crc         uint32
	size        uint32 // ISIZE is the size modulo 2^32
	err         error
	closed      bool
}

var errClosed = errors.New("recipe: write after Close")

func (g *gzipWriter) writeHeader() {
	if !g.wroteHeader && g.err == nil {
		g.wroteHeader = true
		_, g.err = g.w.Write(g.header)
	}
}

func (g *gzipWriter) Write(p []byte) (int, error) {
	if g.closed {
		return 0, errClosed
	}
	g.writeHeader()
	if g.err != nil {
		return 0, g.err
	}
	g.crc = crc32.Update(g.crc, crc32.IEEETable, p)
	g.size += uint32(len(p))
	if _, err := g.body.Write(p); err != nil {
		g.err = err
		return 0, err
	}
	return len(p), nil
}

func (g *gzipWriter) Close() error {
	if g.closed {
		return g.err
	}
	g.closed = true
	g.writeHeader()
	if err := g.body.Close(); g.err == nil {
		g.err = err
	}
	putFlate(g.body)
	if g.err != nil {
		return g.err
	}
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], g.crc)
	binary.LittleEndian.PutUint32(trailer[4:], g.size)
	if _, g.err = g.w.Write(trailer[:]); g.err == nil && g.bw != nil {
		g.err = g.bw.Flush()
	}
	return g.err
}

// helperStream is the legacy helper writing a whole stream; Close flushes the buffer behind it.
type helperStream struct {
	body *helperBody
	bw   *bufio.Writer
}

func (s *helperStream) Write(p []byte) (int, error) { return s.body.Write(p) }

func (s *helperStream) Close() error {
	err := s.body.Close()
	if err == nil && s.bw != nil {
		err = s.bw.Flush()
	}
	return err
}

// zstdWriter ends the recipe's lead block and flushes the buffer behind the encoder on Close.
type zstdWriter struct {
	enc    *zstd.Encoder
	bw     *bufio.Writer
	lead   int // bytes of the lead block still to write
	closed bool
	err    error
}

func (z *zstdWriter) Write(p []byte) (int, error) {
	if z.closed {
		return 0, errClosed
	}
	n := 0
	if z.lead > 0 {
		k := min(z.lead, len(p))
		if _, err := z.enc.Write(p[:k]); err != nil {
			return 0, err
		}
		n, p, z.lead = k, p[k:], z.lead-k
		if z.lead == 0 {
			// What the encoder's ReadFrom does with data written before it: a block of
			// its own.
			if err := z.enc.Flush(); err != nil {
				return n, err
			}
		}
	}
	m, err := z.enc.Write(p)
	return n + m, err
}

func (z *zstdWriter) Close() error {
	if z.closed {
		return z.err
	}
	z.closed = true
	z.err = z.enc.Close()
	if z.err == nil && z.bw != nil {
		z.err = z.bw.Flush()
	}
	return z.err
}

// zstdDefaultWindow is the window klauspost's encoder picks for a level when none is given.
func zstdDefaultWindow(level int) int {
	if zstd.EncoderLevel(level) == zstd.SpeedFastest {
		return 4 << 20
	}
	return 8 << 20
}

// zstdOptions configures an encoder the way containerd and containers/image do
// (zstd.NewWriter with WithEncoderLevel), plus the window and checksum the blob's frame header
// shows. The window option comes after the level, and only when it is not the level's
// default: WithWindowSize given first would also stop SpeedFastest from choosing its smaller
// blocks.
func zstdOptions(rc Recipe, concurrency int) []zstd.EOption {
	opts := []zstd.EOption{
		zstd.WithEncoderLevel(zstd.EncoderLevel(rc.Level)),
		zstd.WithEncoderCRC(rc.Checksum),
		zstd.WithEncoderConcurrency(max(concurrency, 1)),
	}
	if rc.WindowSize != zstdDefaultWindow(rc.Level) {
		opts = append(opts, zstd.WithWindowSize(rc.WindowSize))
	}
	return opts
}

// Deflate encoders allocate around a megabyte of state; detection tries dozens of them, so
// they are pooled per implementation and level.
var (
	stdFlatePools [12]sync.Pool // of *stdDeflate, index level+2
	kpFlatePools  [12]sync.Pool // of *kpDeflate, index level+2
)

// stdDeflate is a pooled Go deflate encoder.
type stdDeflate struct {
	*stdflate.Writer
	level int
}

// kpDeflate is a pooled klauspost deflate encoder.
type kpDeflate struct {
	*kpflate.Writer
	level int
}

func getStdFlate(w io.Writer, level int) *stdDeflate {
	if fw, ok := stdFlatePools[level+2].Get().(*stdDeflate); ok {
		fw.Reset(w)
		return fw
	}
	fw, err := stdflate.NewWriter(w, level)
	if err != nil {
		panic("recipe: compress/flate refused the level of a valid recipe: " + err.Error())
	}
	return &stdDeflate{fw, level}
}

// getKpFlate returns a klauspost deflate encoder writing to w.
func getKpFlate(w io.Writer, level int) *kpDeflate {
	return getKpFlateDict(w, level, nil)
}

// getKpFlateDict returns a klauspost deflate encoder primed with dict. Like pgzip's, it is
// created without a dictionary and then reset with the one it needs.
func getKpFlateDict(w io.Writer, level int, dict []byte) *kpDeflate {
	fw, ok := kpFlatePools[level+2].Get().(*kpDeflate)
	if !ok {
		w, err := kpflate.NewWriter(io.Discard, level)
		if err != nil {
			panic("recipe: klauspost flate refused the level of a valid recipe: " + err.Error())
		}
		fw = &kpDeflate{w, level}
	}
	fw.ResetDict(w, dict)
	return fw
}

// putFlate returns a deflate encoder to its pool once it is done with; other writers are
// ignored. The encoder is detached from its destination so the pool keeps nothing alive.
func putFlate(w io.WriteCloser) {
	switch fw := w.(type) {
	case *kpDeflate:
		fw.ResetDict(io.Discard, nil)
		kpFlatePools[fw.level+2].Put(fw)
	case *stdDeflate:
		fw.Reset(io.Discard)
		stdFlatePools[fw.level+2].Put(fw)
	}
}

// asyncWriter hands what is written to a goroutine that feeds dst, in chunks, so that a
// sequential encoder runs beside the caller. Errors surface on a later Write or on Close.
type asyncWriter struct {
	dst    io.WriteCloser
	cur    []byte
	work   chan []byte
	free   chan []byte
	done   chan struct{}
	mu     sync.Mutex
	err    error // guarded by mu until done is closed
	closed bool
	cerr   error
}

const (
	asyncChunk = 256 << 10
	asyncDepth = 4
)

func newAsyncWriter(dst io.WriteCloser) *asyncWriter {
	a := &asyncWriter{
		dst:  dst,
		work: make(chan []byte, asyncDepth),
		free: make(chan []byte, asyncDepth+1),
		done: make(chan struct{}),
	}
	for range asyncDepth + 1 {
		a.free <- nil // allocated on first use
	}
	go a.run()
	return a
}

func (a *asyncWriter) run() {
	defer close(a.done)
	for b := range a.work {
		if a.failed() == nil {
			if _, err := a.dst.Write(b); err != nil {
				a.mu.Lock()
				a.err = err
				a.mu.Unlock()
			}
		}
		a.free <- b[:0]
	}
}

func (a *asyncWriter) failed() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *asyncWriter) Write(p []byte) (int, error) {
	if a.closed {
		return 0, errClosed
	}
	if err := a.failed(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		if a.cur == nil {
			a.cur = <-a.free
			if a.cur == nil {
				a.cur = make([]byte, 0, asyncChunk)
			}
		}
		k := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur = a.cur[:len(a.cur)+k]
		p = p[k:]
		if len(a.cur) == cap(a.cur) {
			a.work <- a.cur
			a.cur = nil
		}
	}
	return n, nil
}

func (a *asyncWriter) Close() error {
	if a.closed {
		return a.cerr
	}
	a.closed = true
	if len(a.cur) > 0 {
		a.work <- a.cur
	}
	a.cur = nil
	close(a.work)
	<-a.done
	a.cerr = a.failed()
	if err := a.dst.Close(); a.cerr == nil {
		a.cerr = err
	}
	return a.cerr
}
