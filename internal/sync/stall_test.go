package sync_test

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/internal/sync"
	"github.com/outpost-registry/outpost/test/faultnet"
)

// TestStalledLinkIsAbandonedAndResumed: a link that stays connected but carries nothing does not
// hang the pass; the transfer is abandoned after the stall timeout and resumed.
func TestStalledLinkIsAbandonedAndResumed(t *testing.T) {
	parent, child, link, opts, e := stallSetup(t)
	// Stall the link once a third of the blob has crossed, for 3 s: several stall timeouts.
	afterBytes(link, 700<<10, func() { link.StallFor(3 * time.Second) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := e.RunPass(ctx, false)
	if s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, parent, child, "app:v1")
	if st := link.Stats(); st.Conns < 2 {
		t.Fatalf("the stalled connection was never abandoned: %d connections", st.Conns)
	}
	// Resumed, not restarted: at most a chunk or two of the blob crossed twice.
	size := int64(2 << 20)
	if got := e.Meter().In(); got > size+2*int64(opts.ChunkSize)+64<<10 {
		t.Fatalf("%d bytes from the parent for a %d-byte image", got, size)
	}
}

// TestFrozenConnectionIsAbandoned: a connection whose path dies without a reset (a NAT entry
// lost) is given up, not reused: over HTTP/2 every request shares one connection, so a retry
// on it would stall again for ever.
func TestFrozenConnectionIsAbandoned(t *testing.T) {
	parent, child, link, _, e := stallSetup(t)
	afterBytes(link, 700<<10, link.Freeze)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	s := e.RunPass(ctx, false)
	if s.Result != "ok" {
		t.Fatalf("pass after a connection froze: %+v", s)
	}
	requireSame(t, parent, child, "app:v1")
	t.Logf("synced in %s over %d connections", time.Since(start).Round(time.Millisecond), link.Stats().Conns)
}

// stallSetup: a 2 MiB image on a parent, reached through a 1 MiB/s link by a child engine
// whose stall timeout is 500 ms.
func stallSetup(t *testing.T) (parent, child *node, link *faultnet.Proxy, opts sync.Options, e *sync.Engine) {
	t.Helper()
	parent, child = newNode(t, nil), newNode(t, nil)
	parent.push(t, "app:v1", randomImage(t, 2<<20, 1))
	link, err := faultnet.NewProxy(parent.host, faultnet.WithBandwidth(faultnet.Downstream, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	opts = engineOptions(t, link.URL(), "app")
	opts.StallTimeout = 500 * time.Millisecond
	return parent, child, link, opts, newEngine(t, opts, child)
}

// afterBytes runs fault once n bytes have crossed the link downstream (within 20 s).
func afterBytes(link *faultnet.Proxy, n int64, fault func()) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if link.WaitBytes(ctx, faultnet.Downstream, n) == nil {
			fault()
		}
	}()
}
