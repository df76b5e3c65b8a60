package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGracefulShutdown sends SIGTERM while a client pulls a large blob slowly: the pull completes,
// readiness drops, new connections are refused, and the process exits 0 within the shutdown
// timeout.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	const shutdownTimeout = 20 * time.Second
	n := startNode(t, nodeOptions{args: []string{"--shutdown-timeout", "PT20S"}})
	blob := randomBytes(41, 16<<20)
	dgst := n.uploadBlob(t, "shutdown/app", blob)

	// The slow pull: 32 KiB every 10 ms, about 5 s for 16 MiB, far more than the socket buffers hold.
	ctx := testContext(t, time.Minute)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.base()+"/v2/shutdown/app/blobs/"+dgst, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := n.client.Do(req)
	if err != nil {
		t.Fatalf("starting the pull: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET blob: %s", resp.Status)
	}
	type result struct {
		n      int64
		digest string
		err    error
		at     time.Time
	}
	started := make(chan struct{})
	pulled := make(chan result, 1)
	go func() {
		h := sha256.New()
		buf := make([]byte, 32<<10)
		var total int64
		for {
			k, err := io.ReadFull(resp.Body, buf)
			h.Write(buf[:k])
			total += int64(k)
			if total >= 1<<20 && total-int64(k) < 1<<20 {
				close(started)
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				pulled <- result{total, "sha256:" + hex.EncodeToString(h.Sum(nil)), nil, time.Now()}
				return
			}
			if err != nil {
				pulled <- result{total, "", err, time.Now()}
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the pull did not reach 1 MiB within 30s")
	}

	sigterm := time.Now()
	n.signal(syscall.SIGTERM)

	// Readiness: after SIGTERM /readyz must stop answering 200, with 503 while the node drains
	// (observable only until it closes its listener) or a refused connection.
	probe := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 2 * time.Second}
	var readyzSeen []string
	notReady := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !notReady; {
		r, err := probe.Get(n.base() + "/readyz")
		switch {
		case err != nil:
			readyzSeen = append(readyzSeen, "connection error")
			notReady = true
		default:
			r.Body.Close()
			readyzSeen = append(readyzSeen, r.Status)
			notReady = r.StatusCode == http.StatusServiceUnavailable
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("/readyz after SIGTERM: %s", strings.Join(readyzSeen, ", "))
	if !notReady {
		t.Errorf("/readyz still answered 200 five seconds after SIGTERM: %v", readyzSeen)
	}

	// New connections are refused while the node drains.
	dialCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
	conn, err := (&net.Dialer{}).DialContext(dialCtx, "tcp", n.addr)
	cancel()
	if err == nil {
		conn.Close()
		t.Errorf("a new connection was accepted during the shutdown")
	}

	var res result
	select {
	case res = <-pulled:
	case <-time.After(45 * time.Second):
		t.Fatal("the in-flight pull did not finish within 45s")
	}
	if res.err != nil || res.n != int64(len(blob)) || res.digest != dgst {
		t.Fatalf("the in-flight pull: %d of %d bytes, digest %s (want %s), error %v", res.n, len(blob), res.digest, dgst, res.err)
	}
	if res.at.Sub(sigterm) < time.Second {
		t.Logf("warning: the pull finished %s after SIGTERM; the test meant it to be in flight longer", res.at.Sub(sigterm))
	}

	code, ok := n.waitExit(shutdownTimeout + 5*time.Second - time.Since(sigterm))
	if !ok {
		t.Fatalf("the node did not exit within the %s shutdown timeout", shutdownTimeout)
	}
	if code != 0 {
		t.Errorf("exit code after SIGTERM: %d, want 0", code)
	}
	t.Logf("exited %s after SIGTERM", time.Since(sigterm).Round(time.Millisecond))
	for _, msg := range []string{`"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(n.logs(), msg) {
			t.Errorf("the log lacks %s", msg)
		}
	}

	conn, err = net.DialTimeout("tcp", n.addr, 2*time.Second)
	if err == nil {
		conn.Close()
		t.Errorf("a connection to %s was accepted after the node exited", n.addr)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connecting after exit: %v, want connection refused", err)
	}
}
