package recipe

import (
	"errors"
	"fmt"
	"io"
)

// Detection and confirmation both recompress the blob's content and compare what comes out
// with the blob's own bytes as it is produced, so a wrong candidate is dropped at its first
// differing byte instead of after a whole recompression. The comparison is against a window
// of the blob (history) that the decompressor fills as it reads; candidates lag behind the
// decompressor by their internal buffering, which bounds the window.

// history holds the blob's bytes [base, base+len(buf)).
type history struct {
	buf  []byte
	base int64
	eof  bool // buf ends where the blob ends
}

func (h *history) end() int64 { return h.base + int64(len(h.buf)) }

// Write appends the blob's next bytes.
func (h *history) Write(p []byte) (int, error) {
	h.buf = append(h.buf, p...)
	return len(p), nil
}

// trim forgets the bytes before off, which no candidate needs any more. The copy happens only
// once at least half the buffer can go, which keeps it linear.
func (h *history) trim(off int64) {
	k := int(off - h.base)
	if k <= 0 || k < len(h.buf)/2 {
		return
	}
	h.buf = h.buf[:copy(h.buf, h.buf[k:])]
	h.base = off
}

// recordingReader copies what it reads from r into the history.
type recordingReader struct {
	r     io.Reader
	h     *history
	limit int64 // stop with errLimit once the history ends here; 0 for no limit
	hit   bool  // the limit was reached
}

var errLimit = errors.New("recipe: prefix limit reached")

func (rr *recordingReader) Read(p []byte) (int, error) {
	if rr.limit > 0 {
		room := rr.limit - rr.h.end()
		if room <= 0 {
			rr.hit = true
			return 0, errLimit
		}
		if int64(len(p)) > room {
			p = p[:room]
		}
	}
	n, err := rr.r.Read(p)
	rr.h.Write(p[:n])
	return n, err
}

// maxLead bounds how far a candidate's output may run ahead of the blob bytes read so far.
// The decompressor reads ahead of what it has produced, so a correct candidate never leads
// by more than the few bits of a block end.
const maxLead = 1 << 20

// matcher is where a candidate writes its output; it compares it with the blob.
type matcher struct {
	h       *history
	off     int64  // blob offset of the next byte to compare
	pending []byte // output beyond the history's end, compared when the history grows
	// prefix marks a trial on a prefix of the blob: output beyond the known bytes ends
	// the trial (with errPrefixEnd) instead of waiting.
	prefix bool
	err    error // why the candidate failed, or errPrefixEnd
}

// errPrefixEnd stops a trial whose candidate has matched every byte of the prefix.
var errPrefixEnd = errors.New("recipe: candidate matched the whole prefix")

func (m *matcher) Write(p []byte) (int, error) {
	if m.err != nil {
		return 0, m.err
	}
	if len(m.pending) > 0 {
		m.pending = append(m.pending, p...)
		m.catchUp()
	} else if n := m.compare(p); n < len(p) && m.err == nil {
		m.pending = append(m.pending, p[n:]...)
		m.catchUp()
	}
	if m.err != nil {
		return 0, m.err
	}
	return len(p), nil
}

// compare checks p against the history from m.off and returns how many bytes it could check.
func (m *matcher) compare(p []byte) int {
	have := m.h.buf[m.off-m.h.base:]
	n := min(len(p), len(have))
	for i := range n {
		if p[i] != have[i] {
			m.err = fmt.Errorf("%w: first difference at byte %d", ErrMismatch, m.off+int64(i))
			return i
		}
	}
	m.off += int64(n)
	return n
}

// catchUp compares pending output with bytes the history has gained since.
func (m *matcher) catchUp() {
	if m.err != nil || len(m.pending) == 0 {
		return
	}
	n := m.compare(m.pending)
	if m.err != nil {
		return
	}
	m.pending = m.pending[:copy(m.pending, m.pending[n:])]
	switch {
	case len(m.pending) == 0:
	case m.h.eof:
		m.err = fmt.Errorf("%w: output continues past the end of the blob (%d bytes)", ErrMismatch, m.h.end())
	case m.prefix:
		m.err = errPrefixEnd
	case len(m.pending) > maxLead:
		m.err = fmt.Errorf("%w: output runs %d bytes ahead of the blob at byte %d", ErrMismatch, len(m.pending), m.off)
	}
}

// finish checks, once the candidate is closed and the whole blob read, that the output had
// the blob's length.
func (m *matcher) finish() error {
	m.catchUp()
	if m.err == nil && m.off != m.h.end() {
		m.err = fmt.Errorf("%w: output ends at byte %d of %d", ErrMismatch, m.off, m.h.end())
	}
	return m.err
}
