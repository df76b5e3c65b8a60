package recipe

import (
	"bytes"
	"io"
	"sync"
)

// pgzip (github.com/klauspost/pgzip) cuts its input into blocks of blockSize bytes and
// compresses each with klauspost's deflate encoder, primed with the last pgzipTail bytes of
// the previous block, ending it with a sync flush (an empty stored block). The last block,
// which may be empty, is flushed and then closed. Because each block depends only on its own
// bytes and its predecessor's tail, the stream does not depend on how many blocks pgzip
// compressed at once, only on the block size; the engines below rebuild that layout rather
// than drive pgzip.Writer, which would write its own header.

// pgzipTail is how much of the previous block primes the next (pgzip's tailSize).
const pgzipTail = 16 << 10

// pgzipSerial compresses blocks one after the other, streaming each block's input into the
// encoder as it arrives so that a trial comparison can stop at the first differing byte
// rather than after a whole block.
type pgzipSerial struct {
	w         io.Writer
	level     int
	blockSize int
	fw        *kpDeflate // encoder of the current block, nil between blocks
	n         int        // input bytes in the current block
	tail      []byte     // the last input bytes of the current block, at most 2*pgzipTail
	dict      []byte     // the previous block's tail, nil for the first block
	err       error
}

func newPgzipSerial(w io.Writer, level, blockSize int) *pgzipSerial {
	return &pgzipSerial{w: w, level: level, blockSize: blockSize}
}

func (s *pgzipSerial) start() {
	if s.fw == nil {
		s.fw = getKpFlateDict(s.w, s.level, s.dict)
	}
}

func (s *pgzipSerial) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n := len(p)
	for len(p) > 0 {
		s.start()
		k := min(len(p), s.blockSize-s.n)
		if _, err := s.fw.Write(p[:k]); err != nil {
			s.err = err
			return 0, err
		}
		s.keepTail(p[:k])
		s.n += k
		p = p[k:]
		if s.n == s.blockSize {
			// pgzip compresses a block as soon as it is full, not when more input arrives.
			if err := s.fw.Flush(); err != nil {
				s.err = err
				return 0, err
			}
			putFlate(s.fw)
			s.fw = nil
			s.dict = append(s.dict[:0], s.tail[len(s.tail)-pgzipTail:]...)
			s.tail = s.tail[:0]
			s.n = 0
		}
	}
	return n, nil
}

// keepTail remembers the last pgzipTail bytes of the block (blocks are longer than that).
func (s *pgzipSerial) keepTail(p []byte) {
	if len(p) >= pgzipTail {
		s.tail = append(s.tail[:0], p[len(p)-pgzipTail:]...)
		return
	}
	if len(s.tail)+len(p) > 2*pgzipTail {
		s.tail = append(s.tail[:0], s.tail[len(s.tail)-(pgzipTail-len(p)):]...)
	}
	s.tail = append(s.tail, p...)
}

func (s *pgzipSerial) Close() error {
	if s.err != nil {
		return s.err
	}
	s.start()
	if err := s.fw.Flush(); err != nil {
		s.err = err
		return err
	}
	s.err = s.fw.Close()
	putFlate(s.fw)
	s.fw = nil
	return s.err
}

// pgzipParallel compresses workers blocks at once, each in a goroutine, and writes
// their output in order from the caller's goroutine (within Write and Close), so w never sees
// concurrent writes.
type pgzipParallel struct {
	w         io.Writer
	level     int
	blockSize int
	workers   int
	cur       []byte
	dict      []byte // the last pgzipTail bytes of the previous block
	queue     []*pgzipJob
	err       error
	closed    bool
}

type pgzipJob struct {
	in, dict []byte
	final    bool
	out      *bytes.Buffer
	err      error
	done     chan struct{}
}

// pgzipBuffers recycles block-sized buffers (input blocks and compressed output).
var pgzipBuffers sync.Pool // of *[]byte

func getBlockBuffer(size int) []byte {
	if b, ok := pgzipBuffers.Get().(*[]byte); ok && cap(*b) >= size {
		return (*b)[:0]
	}
	return make([]byte, 0, size)
}

func putBlockBuffer(b []byte) {
	if cap(b) > 0 {
		b = b[:0]
		pgzipBuffers.Put(&b)
	}
}

func newPgzipParallel(w io.Writer, level, blockSize, workers int) *pgzipParallel {
	return &pgzipParallel{w: w, level: level, blockSize: blockSize, workers: workers}
}

func (p *pgzipParallel) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n := len(b)
	for len(b) > 0 {
		if p.cur == nil {
			p.cur = getBlockBuffer(p.blockSize)
		}
		k := min(len(b), p.blockSize-len(p.cur))
		p.cur = append(p.cur, b[:k]...)
		b = b[k:]
		if len(p.cur) == p.blockSize {
			p.submit(false)
			if p.err != nil {
				return 0, p.err
			}
		}
	}
	return n, nil
}

// submit starts compressing the current block and, when enough blocks are already under way,
// first writes out the oldest. One block more than workers is in flight, so that every core
// stays busy while this goroutine waits for the oldest.
func (p *pgzipParallel) submit(final bool) {
	for len(p.queue) > p.workers && p.err == nil {
		p.writeOldest()
	}
	if p.err != nil {
		return
	}
	job := &pgzipJob{in: p.cur, dict: p.dict, final: final, done: make(chan struct{})}
	// Incompressible input grows by a few bytes per 64 KiB stored block.
	job.out = bytes.NewBuffer(getBlockBuffer(len(p.cur) + len(p.cur)>>6 + 64))
	if len(p.cur) > pgzipTail {
		p.dict = append([]byte(nil), p.cur[len(p.cur)-pgzipTail:]...)
	} else {
		p.dict = nil
	}
	p.cur = nil
	p.queue = append(p.queue, job)
	go job.run(p.level)
}

func (j *pgzipJob) run(level int) {
	defer close(j.done)
	fw := getKpFlateDict(j.out, level, j.dict)
	defer putFlate(fw)
	if _, j.err = fw.Write(j.in); j.err != nil {
		return
	}
	if j.err = fw.Flush(); j.err != nil {
		return
	}
	if j.final {
		j.err = fw.Close()
	}
}

// writeOldest waits for the oldest block and writes its output.
func (p *pgzipParallel) writeOldest() {
	job := p.queue[0]
	p.queue[0] = nil
	p.queue = p.queue[1:]
	<-job.done
	putBlockBuffer(job.in)
	if p.err == nil {
		p.err = job.err
	}
	if p.err == nil {
		_, p.err = p.w.Write(job.out.Bytes())
	}
	putBlockBuffer(job.out.Bytes())
}

func (p *pgzipParallel) Close() error {
	if p.closed {
		return p.err
	}
	p.closed = true
	if p.err == nil {
		if p.cur == nil {
			p.cur = getBlockBuffer(0)
		}
		p.submit(true)
	}
	// Wait for every block even after an error, so no goroutine outlives the writer.
	for len(p.queue) > 0 {
		p.writeOldest()
	}
	return p.err
}
