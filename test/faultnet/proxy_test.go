package faultnet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Timing tests assert lower bounds, which a slow machine cannot break, and upper bounds of
// several times the ideal, which only a broken proxy can.

func TestForwardCountsExactly(t *testing.T) {
	t.Parallel()
	const up, down = 100_003, 250_007
	reply := randBytes(down, 1)
	addr, got := tcpTarget(t, reply)
	p := newProxy(t, addr)

	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := exchange(p.Addr(), randBytes(up, 2))
			if err != nil {
				t.Error(err)
			} else if !bytes.Equal(b, reply) {
				t.Errorf("reply differs: %d bytes", len(b))
			}
		}()
	}
	wg.Wait()
	for range 2 {
		if n := <-got; n != up {
			t.Errorf("target got %d bytes, want %d", n, up)
		}
	}
	eventually(t, 5*time.Second, "connections closed", func() bool { return p.Stats().Active == 0 })

	st := p.Stats()
	want := Stats{BytesUp: 2 * up, BytesDown: 2 * down, Conns: 2}
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	conns := p.Conns()
	if len(conns) != 2 {
		t.Fatalf("%d conns, want 2", len(conns))
	}
	for i, c := range conns {
		if c.ID != i+1 || c.BytesUp != up || c.BytesDown != down || !c.Closed || c.Reset {
			t.Errorf("conn %d: %+v", i, c)
		}
	}
	// Already reached: returns at once.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.WaitBytes(ctx, Both, 2*(up+down)); err != nil {
		t.Error(err)
	}
}

func TestBandwidthCapsTransfer(t *testing.T) {
	t.Parallel()
	body := randBytes(1<<20, 3)
	srv := blobServer(t, body)
	p := newProxy(t, srv.Listener.Addr().String(), WithBandwidth(Downstream, 512<<10))

	start := time.Now()
	mustGet(t, newClient(t), p.URL()+"/blob", body)
	if d := time.Since(start); d < 1500*time.Millisecond || d > 8*time.Second {
		t.Errorf("1 MiB at 512 KiB/s took %v, want 1.5 s to 8 s", d)
	}
}

func TestBandwidthIsSharedByConnections(t *testing.T) {
	t.Parallel()
	body := randBytes(256<<10, 4)
	srv := blobServer(t, body)
	p := newProxy(t, srv.Listener.Addr().String(), WithBandwidth(Downstream, 512<<10))
	c := newClient(t)

	start := time.Now()
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mustGet(t, c, p.URL()+"/blob", body)
		}()
	}
	wg.Wait()
	// A cap per connection would let both finish in 0.5 s.
	if d := time.Since(start); d < 750*time.Millisecond || d > 5*time.Second {
		t.Errorf("2×256 KiB at 512 KiB/s took %v, want 0.75 s to 5 s", d)
	}
}

func TestBandwidthUpstream(t *testing.T) {
	t.Parallel()
	addr, got := tcpTarget(t, []byte("ok"))
	p := newProxy(t, addr, WithBandwidth(Upstream, 256<<10))

	start := time.Now()
	if _, err := exchange(p.Addr(), randBytes(256<<10, 5)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 750*time.Millisecond || d > 5*time.Second {
		t.Errorf("256 KiB up at 256 KiB/s took %v, want 0.75 s to 5 s", d)
	}
	if n := <-got; n != 256<<10 {
		t.Errorf("target got %d bytes", n)
	}
}

func TestSetBandwidthWhileRunning(t *testing.T) {
	t.Parallel()
	body := randBytes(1<<20, 6)
	srv := blobServer(t, body)
	p := newProxy(t, srv.Listener.Addr().String(), WithBandwidth(Downstream, 16<<10))

	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		mustGet(t, newClient(t), p.URL()+"/blob", body)
	}()
	time.Sleep(300 * time.Millisecond)
	if n := p.Stats().BytesDown; n > 64<<10 {
		t.Errorf("%d bytes through in 300 ms at 16 KiB/s", n)
	}
	// Lifting the cap must wake the transfer, which at 16 KiB/s would need a minute.
	p.SetBandwidth(Downstream, 0)
	<-done
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("transfer took %v after lifting the cap", d)
	}
}

func TestLatency(t *testing.T) {
	t.Parallel()
	srv := blobServer(t, []byte("hello"))
	p := newProxy(t, srv.Listener.Addr().String(), WithLatency(Both, 100*time.Millisecond))

	start := time.Now()
	mustGet(t, newClient(t), p.URL()+"/x", []byte("hello"))
	// The request waits 100 ms on the way up and the response 100 ms on the way down.
	if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
		t.Errorf("round trip took %v, want 200 ms to 5 s", d)
	}
}

func TestLatencyKeepsThroughput(t *testing.T) {
	t.Parallel()
	t.Run("unlimited", func(t *testing.T) {
		t.Parallel()
		body := randBytes(2<<20, 7)
		srv := blobServer(t, body)
		p := newProxy(t, srv.Listener.Addr().String(), WithLatency(Downstream, 100*time.Millisecond))
		start := time.Now()
		mustGet(t, newClient(t), p.URL()+"/blob", body)
		// Stop-and-wait would pay 100 ms for each of at least 64 chunks of 32 KiB.
		if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
			t.Errorf("2 MiB with 100 ms latency took %v, want 0.1 s to 2 s", d)
		}
	})
	t.Run("capped", func(t *testing.T) {
		t.Parallel()
		body := randBytes(512<<10, 8)
		srv := blobServer(t, body)
		p := newProxy(t, srv.Listener.Addr().String(),
			WithLatency(Downstream, 200*time.Millisecond), WithBandwidth(Downstream, 1<<20))
		start := time.Now()
		mustGet(t, newClient(t), p.URL()+"/blob", body)
		// Ideal: 0.5 s on the wire + 0.2 s latency. Stop-and-wait would be over 5 s.
		if d := time.Since(start); d < 600*time.Millisecond || d > 2500*time.Millisecond {
			t.Errorf("512 KiB at 1 MiB/s with 200 ms latency took %v, want 0.6 s to 2.5 s", d)
		}
	})
}

func TestResetAfter(t *testing.T) {
	t.Parallel()
	const n = 200_000
	body := randBytes(1<<20, 9)
	srv := blobServer(t, body)
	p := newProxy(t, srv.Listener.Addr().String(), WithResetAfter(n))

	resp, got, err := get(newClient(t), p.URL()+"/blob")
	if resp == nil {
		t.Fatalf("no response: %v", err)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read error %v, want connection reset", err)
	}
	// The whole stream up to the reset point arrives: headers, then the start of the body.
	if hdr := n - len(got); hdr < 100 || hdr > 1000 {
		t.Errorf("read %d body bytes before the reset, want %d less the headers", len(got), n)
	}
	if !bytes.Equal(got, body[:len(got)]) {
		t.Error("bytes before the reset differ")
	}
	eventually(t, 5*time.Second, "connection closed", func() bool { return p.Stats().Active == 0 })
	if st := p.Stats(); st.Resets != 1 || st.BytesDown != n {
		t.Errorf("stats %+v, want 1 reset after %d bytes", st, n)
	}
	if c := p.Conns()[0]; !c.Reset || c.BytesDown != n {
		t.Errorf("conn %+v", c)
	}
}

// TestResetAfterSlowReader checks that the reset waits for a client that lags behind to
// receive every byte before the reset point.
func TestResetAfterSlowReader(t *testing.T) {
	t.Parallel()
	const n = 300_000
	reply := randBytes(1<<20, 19)
	addr, _ := tcpTarget(t, reply)
	p := newProxy(t, addr, WithResetAfter(n))

	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_ = c.(*net.TCPConn).CloseWrite()
	time.Sleep(300 * time.Millisecond) // let the buffers fill up
	got, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read error %v, want connection reset", err)
	}
	if len(got) != n || !bytes.Equal(got, reply[:n]) {
		t.Errorf("read %d bytes before the reset, want exactly %d", len(got), n)
	}
}

func TestResetEvery(t *testing.T) {
	t.Parallel()
	body := randBytes(1<<20, 10)
	srv := blobServer(t, body)
	p := newProxy(t, srv.Listener.Addr().String(),
		WithBandwidth(Downstream, 64<<10), WithResetEvery(200*time.Millisecond))
	c := newClient(t)

	start := time.Now()
	if _, _, err := get(c, p.URL()+"/blob"); err == nil {
		t.Fatal("a 16 s transfer survived resets every 200 ms")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("reset came after %v", d)
	}
	if p.Stats().Resets < 1 {
		t.Error("no reset counted")
	}
	p.SetResetEvery(0)
	p.SetBandwidth(Downstream, 0)
	mustGet(t, c, p.URL()+"/blob", body)
}

func TestDownUp(t *testing.T) {
	t.Parallel()
	body := randBytes(1<<20, 11)
	srv := blobServer(t, body)
	p := newProxy(t, srv.Listener.Addr().String(), WithBandwidth(Downstream, 64<<10))
	c := newClient(t)

	slow := make(chan error, 1)
	go func() {
		_, _, err := get(c, p.URL()+"/blob")
		slow <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitBytes(ctx, Downstream, 1); err != nil {
		t.Fatal(err)
	}

	p.Down()
	if !p.IsDown() {
		t.Error("IsDown false after Down")
	}
	if err := <-slow; err == nil {
		t.Error("transfer in progress survived Down")
	}
	if _, _, err := get(c, p.URL()+"/blob"); err == nil {
		t.Error("new request succeeded while down")
	}
	if st := p.Stats(); st.Refused < 1 || st.Resets != 1 {
		t.Errorf("stats %+v, want a refusal and one reset", st)
	}

	p.Up()
	p.SetBandwidth(Downstream, 0)
	mustGet(t, c, p.URL()+"/blob", body)
}

func TestSchedule(t *testing.T) {
	t.Parallel()
	srv := blobServer(t, nil)
	p := newProxy(t, srv.Listener.Addr().String())

	var mu sync.Mutex
	var log []string
	rec := func(s string) func(*Proxy) {
		return func(*Proxy) {
			mu.Lock()
			defer mu.Unlock()
			log = append(log, s)
		}
	}
	s := p.Play(Step{After: 20 * time.Millisecond, Do: rec("a")}, Step{Do: rec("b")})
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Play did not finish")
	}
	mu.Lock()
	if !slices.Equal(log, []string{"a", "b"}) {
		t.Errorf("steps ran as %v", log)
	}
	mu.Unlock()

	flap := p.Loop(Flap(100*time.Millisecond, 100*time.Millisecond)...)
	for range 2 { // two full cycles
		eventually(t, 5*time.Second, "link goes down", p.IsDown)
		eventually(t, 5*time.Second, "link comes back", func() bool { return !p.IsDown() })
	}
	flap.Stop()
	p.Up()
	select {
	case <-flap.Done():
	default:
		t.Error("Done open after Stop")
	}
}

func TestStallAndRelease(t *testing.T) {
	t.Parallel()
	body := randBytes(64<<10, 12)
	srv := blobServer(t, body)
	p := newProxy(t, srv.Listener.Addr().String())

	p.Stall()
	done := make(chan struct{})
	go func() {
		defer close(done)
		mustGet(t, newClient(t), p.URL()+"/blob", body)
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("request completed through a stalled proxy")
	default:
	}
	st := p.Stats()
	if st.BytesUp != 0 || st.BytesDown != 0 || st.Active != 1 || !p.Stalled() {
		t.Errorf("stalled proxy: %+v", st)
	}
	p.Release()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("request did not complete after Release")
	}
}

func TestStallFor(t *testing.T) {
	t.Parallel()
	srv := blobServer(t, []byte("hi"))
	p := newProxy(t, srv.Listener.Addr().String())

	start := time.Now()
	p.StallFor(300 * time.Millisecond)
	mustGet(t, newClient(t), p.URL()+"/x", []byte("hi"))
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("request through a 300 ms stall took %v", d)
	}
	if p.Stalled() {
		t.Error("still stalled")
	}
}

func TestStallAtExactPoint(t *testing.T) {
	t.Parallel()
	const at = 100_000
	body := randBytes(1<<20, 13)
	srv := blobServer(t, body)
	p := newProxy(t, srv.Listener.Addr().String())

	p.StallAt(Downstream, at)
	done := make(chan struct{})
	go func() {
		defer close(done)
		mustGet(t, newClient(t), p.URL()+"/blob", body)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitBytes(ctx, Downstream, at); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // give a wrong implementation time to overshoot
	if n := p.Stats().BytesDown; n != at || !p.Stalled() {
		t.Errorf("stalled=%v after %d bytes, want stalled after exactly %d", p.Stalled(), n, at)
	}
	p.Release()
	<-done
}

func TestCorruptOffsets(t *testing.T) {
	t.Parallel()
	body := randBytes(64<<10, 14)
	srv := blobServer(t, body)
	// Offset 5000 of the stream is past the response headers, inside the body.
	p := newProxy(t, srv.Listener.Addr().String(), WithCorruption(Corruption{Offsets: []int64{5000}}))

	_, got, err := get(newClient(t), p.URL()+"/blob")
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) == sha256.Sum256(body) {
		t.Fatal("sha256 matches despite corruption")
	}
	if n := diffCount(got, body); n != 1 {
		t.Errorf("%d bytes differ, want 1", n)
	}
	if st := p.Stats(); st.Corrupted != 1 {
		t.Errorf("Corrupted %d, want 1", st.Corrupted)
	}
}

func TestCorruptProbabilityIsReproducible(t *testing.T) {
	t.Parallel()
	reply := randBytes(256<<10, 15)
	addr, _ := tcpTarget(t, reply)
	fetch := func(seed uint64, opts ...Option) ([]byte, int64) {
		p := newProxy(t, addr, append(opts, WithCorruption(Corruption{Probability: 1e-3, Seed: seed}))...)
		b, err := exchange(p.Addr(), nil)
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "connection closed", func() bool { return p.Stats().Active == 0 })
		return b, p.Stats().Corrupted
	}

	a, na := fetch(42)
	// Different pacing means different chunks: the flips must not depend on them.
	b, _ := fetch(42, WithBandwidth(Downstream, 2<<20))
	c, _ := fetch(43)
	if len(a) != len(reply) || sha256.Sum256(a) == sha256.Sum256(reply) {
		t.Fatal("not corrupted, or wrong length")
	}
	// 256 Ki bytes at 1e-3: about 262 flips.
	if n := diffCount(a, reply); n < 100 || n > 1000 || int64(n) != na {
		t.Errorf("%d bytes differ, %d counted", n, na)
	}
	if !bytes.Equal(a, b) {
		t.Error("same seed corrupted differently")
	}
	if bytes.Equal(a, c) {
		t.Error("different seeds corrupted the same way")
	}
}

func TestCorruptLimit(t *testing.T) {
	t.Parallel()
	reply := randBytes(4096, 16)
	addr, _ := tcpTarget(t, reply)
	p := newProxy(t, addr, WithCorruption(Corruption{Offsets: []int64{100}, Limit: 1}))

	first, err := exchange(p.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := exchange(p.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if diffCount(first, reply) != 1 || first[100] == reply[100] {
		t.Error("first transfer not corrupted at offset 100")
	}
	if !bytes.Equal(second, reply) {
		t.Error("second transfer corrupted despite Limit 1")
	}
}

func TestWaitBytes(t *testing.T) {
	t.Parallel()
	srv := blobServer(t, []byte("x"))
	p := newProxy(t, srv.Listener.Addr().String())

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.WaitBytes(ctx, Downstream, 1<<40); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitBytes = %v, want deadline exceeded", err)
	}

	errc := make(chan error, 1)
	go func() { errc <- p.WaitBytes(context.Background(), Upstream, 1<<40) }()
	time.Sleep(20 * time.Millisecond)
	_ = p.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("WaitBytes after Close = %v, want net.ErrClosed", err)
	}
}

func TestDialFailure(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	p := newProxy(t, addr)

	if _, _, err := get(newClient(t), p.URL()+"/x"); err == nil {
		t.Fatal("request succeeded with no target")
	}
	eventually(t, 5*time.Second, "dial failure counted", func() bool { return p.Stats().DialFailures == 1 })
}

// TestSettersWhileRunning changes every setting while traffic flows, for the race detector.
func TestSettersWhileRunning(t *testing.T) {
	t.Parallel()
	body := randBytes(128<<10, 17)
	srv := blobServer(t, body)
	p := newProxy(t, srv.Listener.Addr().String())
	c := newClient(t)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p.SetBandwidth(Both, int64(1+i%4)<<20)
			p.SetLatency(Both, time.Duration(i%3)*time.Millisecond)
			p.SetCorruption(Corruption{Probability: 1e-6, Seed: uint64(i)})
			p.SetResetAfter(0)
			p.StallFor(time.Millisecond)
			p.Release()
			p.StallAt(Both, p.Stats().BytesUp+p.Stats().BytesDown+1000)
			time.Sleep(time.Millisecond)
			p.Release()
			_ = p.Conns()
			time.Sleep(time.Millisecond)
		}
	}()
	for range 5 {
		if _, _, err := get(c, p.URL()+"/blob"); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()

	// Clear anything the last loop left behind, including an armed StallAt.
	p.SetCorruption(Corruption{})
	p.SetBandwidth(Both, 0)
	p.SetLatency(Both, 0)
	p.Release()
	mustGet(t, c, p.URL()+"/blob", body)
}

// TestCloseEndsEverything is not parallel: it checks for leaked goroutines against a snapshot
// taken while no other test runs.
func TestCloseEndsEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	body := randBytes(256<<10, 18)
	srv := httptest.NewServer(blobHandler(body))
	defer srv.Close()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}

	p, err := NewProxy(srv.Listener.Addr().String(), WithBandwidth(Downstream, 32<<10),
		WithLatency(Upstream, 10*time.Millisecond), WithResetEvery(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	flap := p.Loop(Flap(time.Hour, time.Second)...)
	errs := make(chan error, 4)
	for range 3 {
		go func() {
			_, _, err := get(c, p.URL()+"/blob")
			errs <- err
		}()
	}
	go func() { errs <- p.WaitBytes(context.Background(), Downstream, 1<<40) }()
	eventually(t, 5*time.Second, "three connections", func() bool { return p.Stats().Active == 3 })
	p.StallFor(time.Hour)

	start := time.Now()
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v", d)
	}
	// Close waits for the proxy's own goroutines: none may be left the moment it returns.
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if regexp.MustCompile(`created by \S+/faultnet\.(NewProxy|\(\*Proxy\))`).MatchString(stacks) {
		t.Errorf("proxy goroutines running after Close:\n%s", stacks)
	}
	for range 4 {
		if err := <-errs; err == nil {
			t.Error("a transfer or wait survived Close")
		}
	}
	select {
	case <-flap.Done():
	default:
		t.Error("schedule still running after Close")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestFreeze(t *testing.T) {
	t.Parallel()
	body := randBytes(64<<10, 13)
	srv := blobServer(t, body)
	p := newProxy(t, srv.Listener.Addr().String())

	// A kept-alive connection, frozen: its next request never gets an answer.
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	frozen := &http.Client{Transport: tr}
	mustGet(t, frozen, p.URL()+"/blob", body)
	// The request's bytes are counted just after they are written upstream, and the answer
	// may reach the client first: wait for the count, or it would land after the freeze.
	counted, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if err := p.WaitBytes(counted, Upstream, 1); err != nil {
		t.Fatalf("the first request was never counted: %v", err)
	}
	p.Freeze()
	before := p.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/blob", nil)
	if resp, err := frozen.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a frozen connection answered")
	}
	if st := p.Stats(); st.BytesDown != before.BytesDown || st.BytesUp != before.BytesUp || st.Resets != before.Resets {
		t.Errorf("a frozen connection delivered or was reset: %+v, before %+v", st, before)
	}
	// A new connection is not frozen.
	mustGet(t, newClient(t), p.URL()+"/blob", body)
}
