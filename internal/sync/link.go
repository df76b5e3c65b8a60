package sync

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	stdsync "sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// ErrWindowClosed is returned for any request to the parent while no sync window is open.
var ErrWindowClosed = errors.New("the sync window is closed")

// ErrStalled is returned when a response body delivers no byte for the stall timeout: the
// connection is open but the link carries nothing. The request is abandoned and retried.
var ErrStalled = errors.New("the link to the parent stalled")

// Gate says whether the link to the parent may be used now. Every request to the parent passes
// through it, so nothing at all is sent outside a window.
type Gate struct {
	mu     stdsync.Mutex
	until  time.Time // the open window's end; zero time with open=true means no end
	open   bool
	closed chan struct{} // closed when the window closes, replaced when one opens
}

// NewGate returns a closed gate.
func NewGate() *Gate {
	c := make(chan struct{})
	close(c)
	return &Gate{closed: c}
}

// Open opens the window until end (zero: until Close).
func (g *Gate) Open(end time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open {
		g.closed = make(chan struct{})
	}
	g.open, g.until = true, end
}

// Close closes the window.
func (g *Gate) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open {
		g.open = false
		close(g.closed)
	}
}

// IsOpen reports whether the link may be used now; it closes the gate when its end has passed.
func (g *Gate) IsOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open && !g.until.IsZero() && !time.Now().Before(g.until) {
		g.open = false
		close(g.closed)
	}
	return g.open
}

// Until is the end of the open window (zero when unbounded or closed).
func (g *Gate) Until() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.until
}

// Context returns a context cancelled when the window closes (or parent ends).
func (g *Gate) Context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	g.mu.Lock()
	closed, until, open := g.closed, g.until, g.open
	g.mu.Unlock()
	if !open {
		cancel(ErrWindowClosed)
		return ctx, func() { cancel(context.Canceled) }
	}
	go func() {
		for {
			var timer <-chan time.Time
			var t *time.Timer
			if !until.IsZero() {
				t = time.NewTimer(time.Until(until))
				timer = t.C
			}
			select {
			case <-closed:
				cancel(ErrWindowClosed)
			case <-timer:
				if g.IsOpen() { // closes the gate unless a firing extended the window: follow it
					until = g.Until()
					continue
				}
				cancel(ErrWindowClosed)
			case <-ctx.Done():
			}
			if t != nil {
				t.Stop()
			}
			return
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

// Meter counts the bytes sent to and received from the parent.
type Meter struct {
	in, out atomic.Int64
	onIn    func(int64)
}

// In is the bytes received from the parent so far (bodies and headers' bodies; not TLS framing).
func (m *Meter) In() int64 { return m.in.Load() }

// Out is the bytes of request bodies sent so far.
func (m *Meter) Out() int64 { return m.out.Load() }

// linkTransport is the bottom of the parent client: it refuses requests while the gate is closed,
// caps bandwidth, and counts bytes. Auth layers sit above it, so token requests are gated,
// capped and counted too.
type linkTransport struct {
	inner   http.RoundTripper
	gate    *Gate
	limiter *rate.Limiter // nil: no cap
	meter   *Meter
	stall   time.Duration // a body silent this long is abandoned; zero: never
	conns   connSet       // the connections inner dialled, when NewParent made inner
}

// connSet holds the open connections to the parent, so that a window that closes mid-transfer
// can close them. Cancelling a request is not enough over HTTP/2: it resets the stream and keeps
// the connection, and what the parent had already queued on it (up to the stream's flow-control
// window) still crosses the metered link after the window's end. A closed connection makes the
// parent's TCP stack drop its unsent bytes.
type connSet struct {
	mu stdsync.Mutex
	m  map[*trackedConn]struct{}
}

// dialer wraps dial so that every connection it makes is in the set until it is closed.
func (s *connSet) dialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, set: s}
		s.mu.Lock()
		if s.m == nil {
			s.m = map[*trackedConn]struct{}{}
		}
		s.m[tc] = struct{}{}
		s.mu.Unlock()
		return tc, nil
	}
}

// closeAll closes every open connection and returns how many there were.
func (s *connSet) closeAll() int {
	s.mu.Lock()
	open := make([]*trackedConn, 0, len(s.m))
	for c := range s.m {
		open = append(open, c)
	}
	s.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
	return len(open)
}

// trackedConn leaves its set when closed.
type trackedConn struct {
	net.Conn
	set *connSet
}

func (c *trackedConn) Close() error {
	c.set.mu.Lock()
	delete(c.set.m, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
}

func (t *linkTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.gate.IsOpen() {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, ErrWindowClosed
	}
	if req.Body != nil && req.Body != http.NoBody {
		req = req.Clone(req.Context())
		req.Body = &meteredBody{ReadCloser: req.Body, ctx: req.Context(), limiter: t.limiter, count: &t.meter.out}
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	resp, err := t.inner.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel(nil)
		return nil, err
	}
	body := &meteredBody{ReadCloser: resp.Body, ctx: ctx, limiter: t.limiter, count: &t.meter.in, onRead: t.meter.onIn, cancel: cancel}
	if t.stall > 0 {
		body.stall = t.stall
		body.watchdog = time.AfterFunc(t.stall, func() { cancel(ErrStalled) })
	}
	resp.Body = body
	return resp, nil
}

// meteredBody counts and rate-limits the bytes read through it, and abandons the request when
// no byte arrives for stall.
type meteredBody struct {
	io.ReadCloser
	ctx      context.Context
	limiter  *rate.Limiter
	count    *atomic.Int64
	onRead   func(int64)
	cancel   context.CancelCauseFunc // nil for request bodies
	stall    time.Duration
	watchdog *time.Timer
}

// maxBurst bounds one read so that the limiter's burst can always cover it.
const maxBurst = 32 << 10

func (b *meteredBody) Read(p []byte) (int, error) {
	if b.limiter != nil && len(p) > maxBurst {
		p = p[:maxBurst]
	}
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.count.Add(int64(n))
		if b.onRead != nil {
			b.onRead(int64(n))
		}
		if b.limiter != nil {
			if werr := b.limiter.WaitN(b.ctx, n); werr != nil && err == nil {
				err = werr
			}
		}
		if b.watchdog != nil {
			b.watchdog.Reset(b.stall)
		}
	}
	if err != nil && errors.Is(context.Cause(b.ctx), ErrStalled) {
		err = ErrStalled
	}
	return n, err
}

func (b *meteredBody) Close() error {
	if b.watchdog != nil {
		b.watchdog.Stop()
	}
	err := b.ReadCloser.Close()
	if b.cancel != nil {
		b.cancel(nil)
	}
	return err
}

// newLimiter returns a limiter for kiBps KiB/s, or nil for no cap.
func newLimiter(kiBps int) *rate.Limiter {
	if kiBps <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(kiBps*1024), maxBurst)
}
