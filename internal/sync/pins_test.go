package sync_test

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/internal/registry"
	"github.com/outpost-registry/outpost/test/faultnet"
)

// TestGarbageCollectionSparesWhatACutPassStored: blobs a pass stored before its window closed
// are not referenced by any manifest yet; garbage collection between windows keeps them, and the
// next window completes the image without fetching them again.
func TestGarbageCollectionSparesWhatACutPassStored(t *testing.T) {
	parent, child := newNode(t, nil), newNode(t, nil)
	parent.push(t, "app:v1", randomImage(t, 1<<20, 3))
	link, err := faultnet.NewProxy(parent.host, faultnet.WithBandwidth(faultnet.Downstream, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	opts := engineOptions(t, link.URL(), "app")
	opts.Parallelism = 1
	opts.Window = time.Hour
	e := newEngine(t, opts, child)

	e.OpenWindow(time.Now().Add(1500 * time.Millisecond))
	if s := e.RunPass(context.Background(), false); s.Result != "window-closed" {
		t.Fatalf("first window: %+v", s)
	}
	firstWindow := e.Meter().In()
	if firstWindow < 1<<20 {
		t.Fatalf("only %d bytes in the first window: no blob was completed", firstWindow)
	}
	res, err := child.reg.CollectGarbage(context.Background(), registry.GCOptions{RemoveUntagged: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobsDeleted != 0 || res.BlobLinksRemoved != 0 {
		t.Fatalf("garbage collection deleted what the cut pass stored: %+v", res)
	}

	e.OpenWindow(time.Now().Add(time.Minute))
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("second window: %+v", s)
	}
	requireSame(t, parent, child, "app:v1")
	total := e.Meter().In()
	if image := int64(3<<20 + 8<<10); total > image+int64(opts.ChunkSize)+64<<10 {
		t.Fatalf("%d bytes from the parent for a ~%d-byte image: what the first window stored was fetched again", total, image)
	}
	// Once the image is complete, nothing stays pinned: garbage collection is back to normal.
	if res, err := child.reg.CollectGarbage(context.Background(), registry.GCOptions{RemoveUntagged: true}); err != nil || res.BlobsDeleted != 0 {
		t.Fatalf("after completion: %+v %v", res, err)
	}
}
