// Package faultnet simulates slow, lossy, intermittent links for tests: a TCP proxy and HTTP fault middleware.
package faultnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Direction names one way through the proxy. The proxy sits between a child (the client that
// connects to it) and its parent (the target it dials).
type Direction int

const (
	// Upstream is child to parent: requests.
	Upstream Direction = iota
	// Downstream is parent to child: responses, and so image content.
	Downstream
	// Both means Upstream and Downstream: for setters, both get the value; for WaitBytes and
	// StallAt, the count is the sum of the two.
	Both
)

func (d Direction) String() string {
	switch d {
	case Upstream:
		return "upstream"
	case Downstream:
		return "downstream"
	case Both:
		return "both"
	}
	return "Direction(?)"
}

// dirs expands Both so setters can loop over the real directions.
func (d Direction) dirs() []Direction {
	if d == Both {
		return []Direction{Upstream, Downstream}
	}
	return []Direction{d}
}

// queueLen bounds the chunks in flight on one direction of one connection (at most
// queueLen*maxChunk bytes). It must cover bandwidth×latency for the pipe to stay full.
const queueLen = 256

// Option configures a Proxy at creation; each has a setter that does the same while it runs.
type Option func(*Proxy)

// WithBandwidth caps the aggregate rate of dir in bytes per second (0: unlimited).
func WithBandwidth(dir Direction, bytesPerSec int64) Option {
	return func(p *Proxy) { p.SetBandwidth(dir, bytesPerSec) }
}

// WithLatency delays every chunk travelling in dir by d.
func WithLatency(dir Direction, d time.Duration) Option {
	return func(p *Proxy) { p.SetLatency(dir, d) }
}

// WithResetAfter resets each connection once n downstream bytes have passed on it.
func WithResetAfter(n int64) Option {
	return func(p *Proxy) { p.SetResetAfter(n) }
}

// WithResetEvery resets all open connections every d.
func WithResetEvery(d time.Duration) Option {
	return func(p *Proxy) { p.SetResetEvery(d) }
}

// WithCorruption flips downstream bytes as c says.
func WithCorruption(c Corruption) Option {
	return func(p *Proxy) { p.SetCorruption(c) }
}

// WithDialTimeout bounds dialling the target for each new connection (default 5 s).
func WithDialTimeout(d time.Duration) Option {
	return func(p *Proxy) { p.dialTimeout = d }
}

// Stats are the proxy's counters since it started.
type Stats struct {
	BytesUp      int64 // delivered to the target
	BytesDown    int64 // delivered to clients
	Conns        int   // connections forwarded (accepted and dialled)
	Active       int   // connections open now
	Refused      int   // connections turned away while down
	DialFailures int   // connections dropped because the target could not be dialled
	Resets       int   // open connections reset by an injected fault
	Corrupted    int64 // bytes flipped
}

// ConnStats describes one forwarded connection, open or closed.
type ConnStats struct {
	ID        int // 1 for the first connection forwarded, and so on
	Opened    time.Time
	BytesUp   int64
	BytesDown int64
	Closed    bool
	Reset     bool // ended by an injected fault rather than by its peers
}

// dirState is the per-direction half of the proxy's settings and counters.
type dirState struct {
	bucket    *bucket
	latency   atomic.Int64 // nanoseconds
	delivered atomic.Int64
	claimed   int64 // bytes handed to writers so far; guarded by Proxy.mu
}

type waiter struct {
	dir Direction
	n   int64
	ch  chan struct{}
}

// Proxy is a TCP proxy on 127.0.0.1 that forwards to a target through a simulated link. All
// methods are safe for concurrent use, and settings take effect on open connections.
type Proxy struct {
	target      string
	ln          net.Listener
	dialTimeout time.Duration
	ctx         context.Context // cancelled by Close, to abort dials in progress
	cancel      context.CancelFunc
	closing     chan struct{}
	wg          sync.WaitGroup

	dir        [2]dirState
	resetAfter atomic.Int64
	corruption atomic.Pointer[corruptConfig]

	refused, dialFailures, resets atomic.Int64
	corrupted                     atomic.Int64

	mu         sync.Mutex
	closed     bool
	down       bool
	conns      map[*conn]struct{}
	history    []*conn
	stalled    bool
	release    chan struct{} // closed when a stall ends
	stallTimer *time.Timer
	stallGen   int      // bumped by every stall and release, to retire StallFor timers
	stallAt    [3]int64 // per Direction incl. Both; 0 means none

	resetEveryMu sync.Mutex // serialises SetResetEvery, which cannot hold mu while it stops a schedule
	resetEvery   *Schedule

	waitMu   sync.Mutex
	waiters  []*waiter
	nWaiters atomic.Int32
}

// NewProxy listens on 127.0.0.1 on a free port and forwards every connection to target
// (host:port) through a link shaped by opts. Close it when done.
func NewProxy(target string, opts ...Option) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target:      target,
		ln:          ln,
		dialTimeout: 5 * time.Second,
		ctx:         ctx,
		cancel:      cancel,
		closing:     make(chan struct{}),
		conns:       make(map[*conn]struct{}),
		release:     make(chan struct{}),
	}
	close(p.release)
	for i := range p.dir {
		p.dir[i].bucket = newBucket()
	}
	for _, o := range opts {
		o(p)
	}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's host:port, for clients to connect to instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is "http://" + Addr(), for HTTP clients.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Close stops listening, resets every connection, stops schedules and waits for all of the
// proxy's goroutines to end. It must not be called from a schedule's step.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	conns := p.openConnsLocked()
	if p.stallTimer != nil {
		p.stallTimer.Stop()
	}
	p.mu.Unlock()

	p.cancel()
	close(p.closing)
	err := p.ln.Close()
	for _, c := range conns {
		c.close(true)
	}
	p.wg.Wait()
	return err
}

// SetBandwidth caps dir at bytesPerSec, shared by all connections; 0 removes the cap.
func (p *Proxy) SetBandwidth(dir Direction, bytesPerSec int64) {
	for _, d := range dir.dirs() {
		p.dir[d].bucket.setRate(bytesPerSec)
	}
}

// SetLatency delays delivery of each chunk in dir by d after it has crossed the bandwidth cap,
// like the propagation delay of a long link: throughput is unchanged, only later.
func (p *Proxy) SetLatency(dir Direction, d time.Duration) {
	for _, x := range dir.dirs() {
		p.dir[x].latency.Store(int64(max(d, 0)))
	}
}

// SetResetAfter makes every connection reset (RST) once n downstream bytes have been delivered
// on it; 0 turns it off. On Linux the proxy first waits (up to 2 s) for the peer to have
// received those n bytes, so a client reads exactly n bytes and then gets ECONNRESET;
// elsewhere it may read fewer.
func (p *Proxy) SetResetAfter(n int64) { p.resetAfter.Store(max(n, 0)) }

// SetResetEvery resets all open connections every d, starting d from now; 0 turns it off.
func (p *Proxy) SetResetEvery(d time.Duration) {
	p.resetEveryMu.Lock()
	defer p.resetEveryMu.Unlock()
	if p.resetEvery != nil {
		p.resetEvery.Stop()
		p.resetEvery = nil
	}
	if d > 0 {
		p.resetEvery = p.Loop(Step{After: d, Do: (*Proxy).ResetAll})
	}
}

// ResetAll resets (RST) every open connection now.
func (p *Proxy) ResetAll() {
	p.mu.Lock()
	conns := p.openConnsLocked()
	p.mu.Unlock()
	for _, c := range conns {
		c.reset()
	}
}

// Down starts an outage: open connections are reset and new ones are reset as soon as they
// are accepted, until Up.
func (p *Proxy) Down() {
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	p.ResetAll()
}

// Up ends an outage started by Down.
func (p *Proxy) Up() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// IsDown reports whether an outage is in progress.
func (p *Proxy) IsDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

// Freeze turns the open connections into black holes: they stay open and accept bytes but
// never deliver another, as a connection whose path died without a reset (a NAT entry lost, a
// satellite handover). Connections made afterwards are unaffected.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	conns := p.openConnsLocked()
	p.mu.Unlock()
	for _, c := range conns {
		c.frozen.Store(true)
	}
}

// Stall stops all forwarding, both ways, until Release: connections stay open and idle, as
// on a link that silently stops carrying packets.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stallLocked()
}

// StallFor stalls for d, then releases.
func (p *Proxy) StallFor(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stallLocked()
	gen := p.stallGen
	// Unlike Release, the timer leaves StallAt points armed. It checks the generation because
	// a timer that fired just as a later Stall or Release stopped it must do nothing.
	p.stallTimer = time.AfterFunc(d, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.stallGen == gen {
			p.unstallLocked()
		}
	})
}

// StallAt stalls the proxy at the moment exactly total bytes have been delivered in dir since
// it started (now, if that many already have), so a test can act at a precise point of a
// transfer. Use WaitBytes to learn when it happened.
func (p *Proxy) StallAt(dir Direction, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.claimedLocked(dir) >= total {
		p.stallLocked()
		return
	}
	p.stallAt[dir] = total
}

// Release ends a stall and cancels any StallAt point not yet reached.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stallAt = [3]int64{}
	p.unstallLocked()
}

func (p *Proxy) unstallLocked() {
	p.stallGen++
	if p.stallTimer != nil {
		p.stallTimer.Stop()
		p.stallTimer = nil
	}
	if p.stalled {
		p.stalled = false
		close(p.release)
	}
}

// Stalled reports whether forwarding is stalled.
func (p *Proxy) Stalled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stalled
}

func (p *Proxy) stallLocked() {
	p.stallGen++
	if p.stallTimer != nil {
		p.stallTimer.Stop()
		p.stallTimer = nil
	}
	if !p.stalled {
		p.stalled = true
		p.release = make(chan struct{})
	}
}

func (p *Proxy) claimedLocked(dir Direction) int64 {
	if dir == Both {
		return p.dir[Upstream].claimed + p.dir[Downstream].claimed
	}
	return p.dir[dir].claimed
}

// waitUnstalled blocks while the proxy is stalled; false if done closed first.
func (p *Proxy) waitUnstalled(done <-chan struct{}) bool {
	for {
		p.mu.Lock()
		stalled, release := p.stalled, p.release
		p.mu.Unlock()
		if !stalled {
			return true
		}
		select {
		case <-release:
		case <-done:
			return false
		}
	}
}

// claim waits out any stall, then lets a writer deliver up to n bytes in dir: fewer if a
// StallAt point comes first, in which case the stall starts right behind those bytes. Doing
// the stall check and the count under one lock is what makes StallAt exact even with many
// connections writing at once.
func (p *Proxy) claim(dir Direction, n int, done <-chan struct{}) (int, bool) {
	for {
		p.mu.Lock()
		if p.stalled {
			release := p.release
			p.mu.Unlock()
			select {
			case <-release:
				continue
			case <-done:
				return 0, false
			}
		}
		k := int64(n)
		for _, d := range []Direction{dir, Both} {
			if at := p.stallAt[d]; at > 0 {
				k = min(k, at-p.claimedLocked(d))
			}
		}
		p.dir[dir].claimed += k
		for _, d := range []Direction{dir, Both} {
			if at := p.stallAt[d]; at > 0 && p.claimedLocked(d) >= at {
				p.stallAt[d] = 0
				p.stallLocked()
			}
		}
		p.mu.Unlock()
		return int(k), true
	}
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{
		BytesUp:      p.dir[Upstream].delivered.Load(),
		BytesDown:    p.dir[Downstream].delivered.Load(),
		Conns:        len(p.history),
		Active:       len(p.conns),
		Refused:      int(p.refused.Load()),
		DialFailures: int(p.dialFailures.Load()),
		Resets:       int(p.resets.Load()),
		Corrupted:    p.corrupted.Load(),
	}
}

// Conns describes every connection forwarded so far, in the order they were set up.
func (p *Proxy) Conns() []ConnStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ConnStats, 0, len(p.history))
	for _, c := range p.history {
		_, open := p.conns[c]
		out = append(out, ConnStats{
			ID:        c.id,
			Opened:    c.opened,
			BytesUp:   c.bytes[Upstream].Load(),
			BytesDown: c.bytes[Downstream].Load(),
			Closed:    !open,
			Reset:     c.wasReset.Load(),
		})
	}
	return out
}

// WaitBytes blocks until at least n bytes have been delivered in dir since the proxy started.
// It returns ctx's error if ctx ends first, and net.ErrClosed if the proxy is closed.
func (p *Proxy) WaitBytes(ctx context.Context, dir Direction, n int64) error {
	w := &waiter{dir: dir, n: n, ch: make(chan struct{})}
	p.waitMu.Lock()
	p.waiters = append(p.waiters, w)
	p.nWaiters.Add(1)
	p.waitMu.Unlock()
	p.notify() // it may already have happened
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		p.dropWaiter(w)
		return ctx.Err()
	case <-p.closing:
		p.dropWaiter(w)
		return net.ErrClosed
	}
}

func (p *Proxy) delivered(dir Direction) int64 {
	if dir == Both {
		return p.dir[Upstream].delivered.Load() + p.dir[Downstream].delivered.Load()
	}
	return p.dir[dir].delivered.Load()
}

// notify wakes the waiters whose count has been reached. It is called after every write, so
// it costs one atomic load when nobody waits.
func (p *Proxy) notify() {
	if p.nWaiters.Load() == 0 {
		return
	}
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	kept := p.waiters[:0]
	for _, w := range p.waiters {
		if p.delivered(w.dir) >= w.n {
			close(w.ch)
			p.nWaiters.Add(-1)
		} else {
			kept = append(kept, w)
		}
	}
	clear(p.waiters[len(kept):])
	p.waiters = kept
}

func (p *Proxy) dropWaiter(w *waiter) {
	p.waitMu.Lock()
	defer p.waitMu.Unlock()
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.nWaiters.Add(-1)
			return
		}
	}
}

func (p *Proxy) openConnsLocked() []*conn {
	out := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			select {
			case <-p.closing:
				return
			case <-time.After(10 * time.Millisecond):
				// Back off from transient errors such as running out of file descriptors.
				continue
			}
		}
		cl := nc.(*net.TCPConn)
		if p.IsDown() {
			p.refused.Add(1)
			abort(cl)
			continue
		}
		p.wg.Add(1)
		go p.handle(cl)
	}
}

// abort closes c with an RST rather than a FIN, as a dropped link or a refusing peer would.
func abort(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

// handle dials the target for a new client and starts the four goroutines that carry the
// connection: a reader and a writer per direction, joined by a queue that holds the chunks
// "on the wire", which is how latency is added without stopping the flow.
func (p *Proxy) handle(cl *net.TCPConn) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, p.dialTimeout)
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		p.dialFailures.Add(1)
		abort(cl)
		return
	}
	sc := nc.(*net.TCPConn)
	c := &conn{p: p, client: cl, server: sc, done: make(chan struct{}), opened: time.Now()}
	c.halves.Store(2)

	p.mu.Lock()
	if p.closed || p.down {
		if p.down && !p.closed {
			p.refused.Add(1)
		}
		p.mu.Unlock()
		abort(cl)
		abort(sc)
		return
	}
	c.id = len(p.history) + 1
	p.conns[c] = struct{}{}
	p.history = append(p.history, c)
	p.wg.Add(4)
	p.mu.Unlock()

	up := make(chan chunk, queueLen)
	down := make(chan chunk, queueLen)
	go c.read(Upstream, cl, up)
	go c.write(Upstream, sc, up)
	go c.read(Downstream, sc, down)
	go c.write(Downstream, cl, down)
}

// chunk is a piece of the stream in flight, to be delivered at a set time.
type chunk struct {
	data []byte
	at   time.Time
}

type conn struct {
	p              *Proxy
	id             int
	opened         time.Time
	client, server *net.TCPConn
	done           chan struct{} // closed when the connection is torn down
	once           sync.Once
	halves         atomic.Int32 // directions not yet finished cleanly
	bytes          [2]atomic.Int64
	readErr        [2]error // set by a reader before it closes its queue
	wasReset       atomic.Bool
	frozen         atomic.Bool  // Freeze: deliver nothing more, ever
	corrupt        corruptState // downstream writer only
}

// read moves bytes from src into q, paced by the direction's bucket and stamped with their
// delivery time.
func (c *conn) read(dir Direction, src *net.TCPConn, q chan<- chunk) {
	defer c.p.wg.Done()
	defer close(q)
	ds := &c.p.dir[dir]
	buf := make([]byte, maxChunk)
	for {
		n, err := src.Read(buf[:ds.bucket.chunkSize()])
		if n > 0 {
			data := bytes.Clone(buf[:n])
			// Wait out a stall before taking link time, so a release does not deliver a burst
			// faster than the cap.
			if !c.p.waitUnstalled(c.done) || !ds.bucket.wait(n, c.done) {
				return
			}
			at := time.Now().Add(time.Duration(ds.latency.Load()))
			select {
			case q <- chunk{data: data, at: at}:
			case <-c.done:
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.readErr[dir] = err
			}
			return
		}
	}
}

// write delivers the chunks of q to dst when they are due, applying the faults that act at a
// position in the stream.
func (c *conn) write(dir Direction, dst *net.TCPConn, q <-chan chunk) {
	defer c.p.wg.Done()
	for {
		var ch chunk
		var ok bool
		select {
		case ch, ok = <-q:
		case <-c.done:
			return
		}
		if !ok {
			select {
			case <-c.done:
				return
			default:
			}
			if c.readErr[dir] != nil {
				// The sender reset or failed: pass that on rather than a clean end.
				c.close(true)
				return
			}
			_ = dst.CloseWrite()
			if c.halves.Add(-1) == 0 {
				c.close(false)
			}
			return
		}
		if !sleepUntil(ch.at, c.done) {
			return
		}
		if c.frozen.Load() {
			<-c.done
			return
		}
		for data := ch.data; len(data) > 0; {
			limit, reset := len(data), false
			if dir == Downstream {
				if n := c.p.resetAfter.Load(); n > 0 {
					if left := n - c.bytes[Downstream].Load(); left <= int64(limit) {
						limit, reset = int(max(left, 0)), true
					}
				}
			}
			k := 0
			if limit > 0 {
				var ok bool
				if k, ok = c.p.claim(dir, limit, c.done); !ok {
					return
				}
				if dir == Downstream {
					c.corruptChunk(data[:k], c.bytes[Downstream].Load())
				}
				n, err := dst.Write(data[:k])
				c.bytes[dir].Add(int64(n))
				c.p.dir[dir].delivered.Add(int64(n))
				c.p.notify()
				if err != nil {
					c.close(true)
					return
				}
			}
			if reset && k == limit {
				c.drain(dst)
				c.reset()
				return
			}
			data = data[k:]
		}
	}
}

// drainTimeout bounds how long a reset waits for its last bytes to reach a peer that is not
// reading.
const drainTimeout = 2 * time.Second

// drain waits until the peer has received everything written to dst. An RST discards what the
// sender's socket still holds, so without this a client would see an arbitrary amount less
// than the reset point, depending on how far it lagged.
func (c *conn) drain(dst *net.TCPConn) {
	deadline := time.Now().Add(drainTimeout)
	for time.Now().Before(deadline) {
		if n, ok := unsent(dst); !ok || n == 0 {
			return
		}
		if !sleepUntil(time.Now().Add(time.Millisecond), c.done) {
			return
		}
	}
}

func sleepUntil(t time.Time, done <-chan struct{}) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-done:
		return false
	}
}

// reset tears the connection down with RSTs on both sides and counts it as an injected fault,
// unless it had already ended.
func (c *conn) reset() {
	c.once.Do(func() {
		c.wasReset.Store(true)
		c.p.resets.Add(1)
		c.teardown(true)
	})
}

// close tears the connection down, with RSTs if rst, else with FINs.
func (c *conn) close(rst bool) {
	c.once.Do(func() { c.teardown(rst) })
}

func (c *conn) teardown(rst bool) {
	close(c.done)
	if rst {
		abort(c.client)
		abort(c.server)
	} else {
		_ = c.client.Close()
		_ = c.server.Close()
	}
	c.p.mu.Lock()
	delete(c.p.conns, c)
	c.p.mu.Unlock()
}
