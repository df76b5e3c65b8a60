package delta_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/pkg/acrapi"
	"github.com/outpost-registry/outpost/test/faultdisk"
)

// TestFullDisk: a parent whose cache disk fills up while it works out a delta (decompressing
// the layers, recording their recipes, encoding the delta, storing its plan) answers with an
// error naming the full disk, leaves no partial file behind and records no refusal; once there
// is room, the same request computes a delta that rebuilds the exact blob. Prepare on a full
// disk says so in the log, and leaves the delta to be computed when the child asks.
func TestFullDisk(t *testing.T) {
	t.Parallel()
	disk := faultdisk.Small(t, 64<<20)

	src := newDiskBlobs(t)
	base := baseTree(31, layerBytes())
	// crane's BestSpeed: the parent works out its recipe fastest, and every attempt below starts
	// from an empty cache.
	crane := compressors[1]
	b1 := src.putLayer(t, base, crane)
	b2 := src.putLayer(t, base.v2(32), crane)
	b3 := src.putLayer(t, base.v2(33), crane)
	log, logs := testLogger(t)
	newService := func(name string) *delta.Service {
		t.Helper()
		svc, err := delta.NewService(filepath.Join(disk, name), src, log, delta.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	filler := filepath.Join(disk, "filler")
	// fill leaves room bytes free on the disk (rounded to its pages).
	fill := func(room int64) {
		t.Helper()
		var st syscall.Statfs_t
		if err := syscall.Statfs(disk, &st); err != nil {
			t.Fatal(err)
		}
		free := int64(st.Bavail) * st.Bsize
		if free <= room {
			t.Fatalf("%d bytes free, fewer than the %d to leave", free, room)
		}
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		chunk := make([]byte, 1<<20)
		for left := free - room; left > 0; {
			n, err := f.Write(chunk[:min(left, int64(len(chunk)))])
			left -= int64(n)
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	unfill := func() {
		t.Helper()
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing half-written may remain where a later request would find it.
	noPartial := func(dir, when string) {
		t.Helper()
		if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
			t.Errorf("%s: %d files left in the cache's tmp directory (%s…)", when, len(tmp), tmp[0].Name())
		}
		refused, _ := filepath.Glob(filepath.Join(dir, "plans", "*.refused"))
		if len(refused) != 0 {
			b, _ := os.ReadFile(refused[0])
			t.Errorf("%s: a refusal recorded for a full disk: %s", when, b)
		}
	}
	ch := newChild(t, b1)

	// Each parent starts empty with a little more room than the one before, so that the disk
	// fills at every stage in turn: the target's tar, the base's, the delta. Then, with room,
	// the same request gets the delta it would have got, whatever the full disk left cached.
	// (A stage is the error's first words: "decompressing layer <target>", "base <digest>",
	// "encoding the delta of <target>".)
	sweep := func(req acrapi.DeltaRequest, format string, bases ...blob) {
		t.Helper()
		stages := map[string]bool{}
		for room := int64(0); ; room += int64(layerBytes()) / 3 {
			name := fmt.Sprintf("cache-%d-%s", room, format)
			svc := newService(name)
			fill(room)
			p, err := plan(t, svc, req)
			noPartial(filepath.Join(disk, name), fmt.Sprintf("%s with %d bytes free", format, room))
			unfill()
			if err == nil {
				// It fitted: the delta the request gets with all the room it needs.
				checkPlan(t, p, b2, format, bases...)
				ch.mustRebuild(p, ch.fetch(svc, p), b2)
				break
			}
			t.Logf("%s with %d bytes free: %v", format, room, err)
			if !strings.Contains(err.Error(), "no space left on device") {
				t.Fatalf("%s with %d bytes free: %v; want an error naming the full disk", format, room, err)
			}
			if errors.Is(err, delta.ErrUnavailable) {
				t.Errorf("%s with %d bytes free: %v; a full disk is the parent's fault, not the layer's", format, room, err)
			}
			stage := strings.SplitN(err.Error(), ": ", 2)[0]
			if !stages[stage] {
				// With room again (once per stage: it computes the delta in full).
				stages[stage] = true
				p = mustPlan(t, svc, req)
				checkPlan(t, p, b2, format, bases...)
				ch.mustRebuild(p, ch.fetch(svc, p), b2)
			}
			if err := os.RemoveAll(filepath.Join(disk, name)); err != nil {
				t.Fatal(err)
			}
			if room > 4*int64(layerBytes()) {
				t.Fatalf("%s still failing with %d bytes free", format, room)
			}
		}
		if len(stages) < 2 {
			t.Errorf("%s: the disk filled at %d stages (%v); want the tars and the delta", format, len(stages), stages)
		}
	}
	sweep(request(b2, b1), acrapi.DeltaFormat, b1) // target tar, base tar
	sweep(request(b2), delta.FormatWhole)          // target tar, the whole layer as zstd

	// Prepare on a full disk: logged, nothing cached; the child's own request computes it.
	svc := newService("prepare")
	held := []acrapi.HeldLayer{{Digest: b1.digest.String(), Repository: testRepo, Position: 0}}
	if err := svc.SetInventory("site", acrapi.InventoryHash(held), held); err != nil {
		t.Fatal(err)
	}
	manifest := imageManifest(t, src, b3)
	fill(0)
	svc.Prepare(testRepo, manifest, func(name string) bool { return name == "site" })
	waitPrepared(t, svc)
	noPartial(filepath.Join(disk, "prepare"), "after Prepare on a full disk")
	unfill()
	before := computed(logs)
	if n := logs.FilterMessage("deltas prepared for children").Len(); n != 0 {
		t.Errorf("on a full disk: %d preparations logged", n)
	}
	if n := logs.FilterMessage("deltas not prepared; they are computed when children ask").FilterFieldKey("error").Len(); n != 1 {
		t.Errorf("%d warnings of deltas not prepared, want 1 naming the error", n)
	}
	p3 := mustPlan(t, svc, request(b3, b1))
	if computed(logs) != before+1 {
		t.Errorf("the child's request after Prepare failed: %d computed, want 1", computed(logs)-before)
	}
	checkPlan(t, p3, b3, acrapi.DeltaFormat, b1)
	ch.mustRebuild(p3, ch.fetch(svc, p3), b3)
}
