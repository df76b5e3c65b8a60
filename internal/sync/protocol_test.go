package sync

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	stdsync "sync"
	"sync/atomic"
	"testing"
	"time"
)

// protoServer is a real HTTP server on loopback that answers each request with its protocol
// and body, and counts the connections it accepted.
type protoServer struct {
	*httptest.Server
	conns atomic.Int32
}

func newProtoServer(t *testing.T, h2c bool) *protoServer {
	t.Helper()
	ps := &protoServer{}
	ps.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Proto, b)
	}))
	ps.Config.Protocols = new(http.Protocols)
	ps.Config.Protocols.SetHTTP1(true)
	ps.Config.Protocols.SetUnencryptedHTTP2(h2c)
	ps.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			ps.conns.Add(1)
		}
	}
	ps.Start()
	t.Cleanup(ps.Close)
	return ps
}

// newTestProtocolTransport is what NewParent builds for u, with its mode changes recorded.
func newTestProtocolTransport(t *testing.T, u string) (*protocolTransport, *[]string) {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	var mu stdsync.Mutex
	var changes []string
	rt := newProtocolTransport(&http.Transport{}, pu, func(m protocolMode, cause error) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, fmt.Sprintf("%s %v", m, cause != nil))
	})
	pt, ok := rt.(*protocolTransport)
	if !ok {
		t.Fatalf("plain-HTTP parent %s: transport %T, want *protocolTransport", u, rt)
	}
	h2c, http1 := pt.h2c.(*http.Transport), pt.http1.(*http.Transport)
	t.Cleanup(func() {
		h2c.CloseIdleConnections()
		http1.CloseIdleConnections()
	})
	return pt, &changes
}

func post(t *testing.T, rt http.RoundTripper, u, body string) (string, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestProtocolH2C(t *testing.T) {
	ps := newProtoServer(t, true)
	pt, changes := newTestProtocolTransport(t, ps.URL)
	for i := range 5 {
		got, err := post(t, pt, ps.URL+"/x", fmt.Sprint("body", i))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint("HTTP/2.0 body", i); got != want {
			t.Fatalf("request %d: the server saw %q, want %q", i, got, want)
		}
	}
	if n := ps.conns.Load(); n != 1 {
		t.Errorf("%d connections for 5 requests over h2c, want 1", n)
	}
	if fmt.Sprint(*changes) != "[HTTP/2 (h2c) false]" {
		t.Errorf("mode changes %v, want h2c once", *changes)
	}
}

// TestProtocolFallback: a parent (or a proxy in front of it) that speaks only HTTP/1.1 gets
// every request, the first one included with its body; h2c is tried again after the interval.
func TestProtocolFallback(t *testing.T) {
	ps := newProtoServer(t, false)
	pt, changes := newTestProtocolTransport(t, ps.URL)
	now := time.Unix(1e9, 0)
	pt.now = func() time.Time { return now }
	h2c := &countingRoundTripper{next: pt.h2c}
	pt.h2c = h2c

	// Concurrent first requests: all are answered, whichever settles the mode.
	var wg stdsync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			got, err := post(t, pt, ps.URL+"/x", fmt.Sprint("first", i))
			if err == nil && got != fmt.Sprint("HTTP/1.1 first", i) {
				err = fmt.Errorf("the server saw %q", got)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("first request %d to an HTTP/1.1 parent: %v", i, err)
		}
	}
	if fmt.Sprint(*changes) != "[HTTP/1.1 true]" {
		t.Fatalf("mode changes %v, want one fallback to HTTP/1.1", *changes)
	}

	conns, tries := ps.conns.Load(), h2c.n.Load()
	for i := range 5 {
		if got, err := post(t, pt, ps.URL+"/x", "again"); err != nil || got != "HTTP/1.1 again" {
			t.Fatalf("request %d after the fallback: %q, %v", i, got, err)
		}
	}
	// Kept alive: no new connection per request. (One may be dialled and not used: when a
	// request finds no idle connection, net/http dials while it waits for one, and the previous
	// response's connection goes back to the pool just after its body was read.)
	if n := ps.conns.Load() - conns; n > 1 {
		t.Errorf("%d new connections for 5 requests after the fallback, want at most 1 (HTTP/1.1 kept alive)", n)
	}
	if n := h2c.n.Load() - tries; n != 0 {
		t.Errorf("%d h2c attempts after the fallback, want 0", n)
	}

	// After the interval h2c is tried again, once, and the parent still answers.
	now = now.Add(h2cRetryInterval)
	for i := range 3 {
		if got, err := post(t, pt, ps.URL+"/x", "later"); err != nil || got != "HTTP/1.1 later" {
			t.Fatalf("request %d after the retry interval: %q, %v", i, got, err)
		}
	}
	if n := h2c.n.Load() - tries; n != 1 {
		t.Errorf("%d h2c attempts after the retry interval, want 1", n)
	}
}

// countingRoundTripper counts the requests it passes on.
type countingRoundTripper struct {
	next http.RoundTripper
	n    atomic.Int32
}

func (c *countingRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(req)
}

// TestProtocolUpgradedParent: a parent that starts speaking h2c (upgraded in place) is used over
// h2c once the retry interval has passed.
func TestProtocolUpgradedParent(t *testing.T) {
	old := newProtoServer(t, false)
	pt, changes := newTestProtocolTransport(t, old.URL)
	now := time.Unix(1e9, 0)
	pt.now = func() time.Time { return now }
	if got, err := post(t, pt, old.URL, "a"); err != nil || got != "HTTP/1.1 a" {
		t.Fatalf("%q, %v", got, err)
	}
	upgraded := newProtoServer(t, true)
	now = now.Add(h2cRetryInterval)
	if got, err := post(t, pt, upgraded.URL, "b"); err != nil || got != "HTTP/2.0 b" {
		t.Fatalf("%q, %v", got, err)
	}
	if fmt.Sprint(*changes) != "[HTTP/1.1 true HTTP/2 (h2c) false]" {
		t.Errorf("mode changes %v", *changes)
	}
}

// TestProtocolLinkDown: a refused connection says nothing about the protocol: the mode stays
// undecided, and the error is the dial's.
func TestProtocolLinkDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	pt, changes := newTestProtocolTransport(t, "http://"+addr)
	_, err = post(t, pt, "http://"+addr+"/x", "x")
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("error %v, want connection refused", err)
	}
	if pt.mode != modeUnknown || len(*changes) != 0 {
		t.Errorf("mode %s, changes %v after a refused connection, want still unknown", pt.mode, *changes)
	}
}

// TestProtocolUnreplayableBody: a body that cannot be sent twice is never risked on an h2c
// attempt while the mode is undecided.
func TestProtocolUnreplayableBody(t *testing.T) {
	ps := newProtoServer(t, false)
	pt, _ := newTestProtocolTransport(t, ps.URL)
	req, err := http.NewRequest(http.MethodPut, ps.URL, io.NopCloser(bytes.NewReader([]byte("stream"))))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := pt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/1.1 stream" {
		t.Errorf("the server saw %q", b)
	}
}

// TestProtocolChoice: https parents negotiate by ALPN and proxied parents cannot use h2c: both
// keep the plain transport.
func TestProtocolChoice(t *testing.T) {
	base := &http.Transport{}
	u, _ := url.Parse("https://parent.example:443")
	if rt := newProtocolTransport(base, u, nil); rt != http.RoundTripper(base) {
		t.Errorf("https parent: %T, want the base transport", rt)
	}
	proxied := &http.Transport{Proxy: func(*http.Request) (*url.URL, error) { return url.Parse("http://proxy:3128") }}
	u, _ = url.Parse("http://parent.example:8080")
	if rt := newProtocolTransport(proxied, u, nil); rt != http.RoundTripper(proxied) {
		t.Errorf("parent behind an HTTP proxy: %T, want the base transport", rt)
	}
}

// TestProtocolParentDowngraded: a parent replaced, at the same address, by one that speaks only
// HTTP/1.1 (or put behind such a proxy) is noticed: one request fails, the next goes over
// HTTP/1.1.
func TestProtocolParentDowngraded(t *testing.T) {
	h2 := newProtoServer(t, true)
	addr := h2.Listener.Addr().String()
	pt, changes := newTestProtocolTransport(t, h2.URL)
	if got, err := post(t, pt, h2.URL, "a"); err != nil || got != "HTTP/2.0 a" {
		t.Fatalf("%q, %v", got, err)
	}
	h2.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen again on %s: %v", addr, err)
	}
	http1 := &http.Server{Handler: h2.Config.Handler}
	go http1.Serve(ln)
	t.Cleanup(func() { http1.Close() })

	var got string
	for i := range 5 {
		if got, err = post(t, pt, "http://"+addr, "b"); err == nil {
			break
		}
		t.Logf("request %d to the replaced parent: %v", i, err)
	}
	if err != nil || got != "HTTP/1.1 b" {
		t.Fatalf("after the parent was replaced: %q, %v", got, err)
	}
	if fmt.Sprint(*changes) != "[HTTP/2 (h2c) false HTTP/1.1 true]" {
		t.Errorf("mode changes %v", *changes)
	}
}

// TestProtocolLinkDrop: a connection lost under h2c is retried over h2c, and says nothing new.
func TestProtocolLinkDrop(t *testing.T) {
	ps := newProtoServer(t, true)
	pt, changes := newTestProtocolTransport(t, ps.URL)
	if got, err := post(t, pt, ps.URL, "a"); err != nil || got != "HTTP/2.0 a" {
		t.Fatalf("%q, %v", got, err)
	}
	ps.CloseClientConnections()
	for i := range 3 {
		got, err := post(t, pt, ps.URL, "b")
		if err == nil {
			if got != "HTTP/2.0 b" {
				t.Fatalf("after a dropped connection: %q", got)
			}
			break
		}
		t.Logf("request %d after the drop: %v", i, err)
	}
	if fmt.Sprint(*changes) != "[HTTP/2 (h2c) false]" {
		t.Errorf("mode changes %v, want h2c once", *changes)
	}
}
