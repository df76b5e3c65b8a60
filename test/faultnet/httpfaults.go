package faultnet

import (
	"bytes"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Action turns the handler a request would have reached into the faulty one that serves it
// instead. Actions compose with Chain.
type Action func(next http.Handler) http.Handler

// Rule picks requests and the Action to apply to them.
type Rule struct {
	Method string         // "" matches every method
	Path   *regexp.Regexp // searched for in URL.Path (anchor it with ^…$); nil matches every path
	Skip   int            // let this many matching requests through untouched first
	Times  int            // then act on this many; 0 means on every one
	// Action is applied to the requests the rule takes. A nil Action passes them on unchanged,
	// which makes a rule that only counts.
	Action Action
}

// RuleHandle is a rule installed in an HTTPFaults, with its counters.
type RuleHandle struct {
	f             *HTTPFaults
	rule          Rule
	seen, applied int
}

// Seen counts the requests that matched the rule's method and path and were not taken by an
// earlier rule.
func (h *RuleHandle) Seen() int {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	return h.seen
}

// Applied counts the requests the rule applied its action to.
func (h *RuleHandle) Applied() int {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	return h.applied
}

// Remove uninstalls the rule.
func (h *RuleHandle) Remove() {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	h.f.rules = slices.DeleteFunc(h.f.rules, func(x *RuleHandle) bool { return x == h })
}

func (h *RuleHandle) matches(r *http.Request) bool {
	return (h.rule.Method == "" || h.rule.Method == r.Method) &&
		(h.rule.Path == nil || h.rule.Path.MatchString(r.URL.Path))
}

// HTTPFaults is middleware that serves requests matching its rules with faults and passes the
// rest to the wrapped handler. Rules are tried in the order they were added; the first one
// that matches and has not used up its Times takes the request, so several rules for one path
// make a queue of faults. It is safe for concurrent use, rules included.
type HTTPFaults struct {
	next     http.Handler
	mu       sync.Mutex
	rules    []*RuleHandle
	requests int
}

// NewHTTPFaults wraps next.
func NewHTTPFaults(next http.Handler) *HTTPFaults { return &HTTPFaults{next: next} }

// Add installs r after the rules already there.
func (f *HTTPFaults) Add(r Rule) *RuleHandle {
	h := &RuleHandle{f: f, rule: r}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, h)
	return h
}

// Clear uninstalls every rule.
func (f *HTTPFaults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// Requests counts every request served, faulty or not.
func (f *HTTPFaults) Requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// ServeHTTP implements http.Handler.
func (f *HTTPFaults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := f.next
	f.mu.Lock()
	f.requests++
	for _, rh := range f.rules {
		if !rh.matches(r) {
			continue
		}
		rh.seen++
		if rh.seen <= rh.rule.Skip || (rh.rule.Times > 0 && rh.applied >= rh.rule.Times) {
			continue
		}
		rh.applied++
		if rh.rule.Action != nil {
			h = rh.rule.Action(f.next)
		}
		break
	}
	f.mu.Unlock()
	h.ServeHTTP(w, r)
}

// Chain applies actions in order: Chain(Delay(d), Status(503)) waits, then fails.
func Chain(actions ...Action) Action {
	return func(next http.Handler) http.Handler {
		for i := len(actions) - 1; i >= 0; i-- {
			next = actions[i](next)
		}
		return next
	}
}

// Status answers with code and a one-line text body, without calling the handler.
func Status(code int) Action {
	return func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, http.StatusText(code), code)
		})
	}
}

// RetryAfter answers like Status(code) with a Retry-After header of after, in whole seconds
// rounded up, as a 429 or 503 from a throttling registry would.
func RetryAfter(code int, after time.Duration) Action {
	secs := strconv.Itoa(int(math.Ceil(after.Seconds())))
	return func(next http.Handler) http.Handler {
		st := Status(code)(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", secs)
			st.ServeHTTP(w, r)
		})
	}
}

// Delay holds the request for d (or until the client gives up) before passing it on.
func Delay(d time.Duration) Action {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				next.ServeHTTP(w, r)
			case <-r.Context().Done():
			}
		})
	}
}

// IgnoreRange hides the Range and If-Range headers from the handler, so a range request gets
// 200 and the whole body, as from a server or cache without range support.
func IgnoreRange() Action {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r = r.Clone(r.Context())
			r.Header.Del("Range")
			r.Header.Del("If-Range")
			next.ServeHTTP(w, r)
		})
	}
}

// CorruptBody flips (XOR 0xFF) the response body bytes at offsets, or the first byte if none
// are given. Length and headers are unchanged, so only a digest check can tell.
func CorruptBody(offsets ...int64) Action {
	if len(offsets) == 0 {
		offsets = []int64{0}
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(&corruptWriter{flushWriter: flushWriter{w}, offsets: offsets}, r)
		})
	}
}

// Truncate sends the response's headers and first n body bytes, then drops the connection, as
// a link that dies mid-transfer. A body of n bytes or fewer is sent whole.
func Truncate(n int64) Action {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(&truncWriter{flushWriter: flushWriter{w}, left: n}, r)
		})
	}
}

// LieLength sends a Content-Length of the real body length plus delta. With delta < 0 the
// body is cut to match and the response looks complete; with delta > 0 the whole body is
// sent and the server then closes the connection, short of what it promised. The response
// is buffered to learn its length.
func LieLength(delta int64) Action {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := &bufferWriter{header: w.Header(), code: http.StatusOK}
			next.ServeHTTP(rec, r)
			body := rec.buf.Bytes()
			size := int64(len(body))
			if r.Method == http.MethodHead {
				// No body to measure: trust the length the handler announced.
				size, _ = strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64)
			}
			n := max(size+delta, 0)
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			w.WriteHeader(rec.code)
			_, _ = w.Write(body[:min(n, int64(len(body)))])
		})
	}
}

// Abort drops the connection without any response. Note that Go's http.Transport silently
// retries an idempotent request that fails this way on a reused keep-alive connection.
func Abort() Action {
	return func(http.Handler) http.Handler {
		return http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic(http.ErrAbortHandler)
		})
	}
}

// LoseResponse lets the handler serve the request, then drops the connection without its
// answer: the server has done the work (stored a chunk, say) and the client cannot know.
func LoseResponse() Action {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(httptest.NewRecorder(), r)
			panic(http.ErrAbortHandler)
		})
	}
}

// flushWriter gives a wrapping ResponseWriter the Flush and Unwrap of the one it wraps, so
// streaming handlers and http.ResponseController keep working under a fault.
type flushWriter struct{ http.ResponseWriter }

func (w flushWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w flushWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type corruptWriter struct {
	flushWriter
	offsets []int64
	pos     int64
}

func (w *corruptWriter) Write(b []byte) (int, error) {
	end := w.pos + int64(len(b))
	var out []byte
	for _, o := range w.offsets {
		if o >= w.pos && o < end {
			if out == nil {
				out = bytes.Clone(b) // never modify the handler's buffer
			}
			out[o-w.pos] ^= 0xFF
		}
	}
	if out == nil {
		out = b
	}
	n, err := w.ResponseWriter.Write(out)
	w.pos += int64(n)
	return n, err
}

type truncWriter struct {
	flushWriter
	left int64
}

func (w *truncWriter) Write(b []byte) (int, error) {
	if int64(len(b)) <= w.left {
		w.left -= int64(len(b))
		return w.ResponseWriter.Write(b)
	}
	_, _ = w.ResponseWriter.Write(b[:w.left])
	// Flush so the bytes before the cut reach the client, then abort: net/http closes the
	// connection without completing the response and without logging a panic.
	w.Flush()
	panic(http.ErrAbortHandler)
}

// bufferWriter records a response so LieLength can measure it.
type bufferWriter struct {
	header      http.Header
	code        int
	wroteHeader bool
	buf         bytes.Buffer
}

func (w *bufferWriter) Header() http.Header { return w.header }

func (w *bufferWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
}

func (w *bufferWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.buf.Write(b)
}
