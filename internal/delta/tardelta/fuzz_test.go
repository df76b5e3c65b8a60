package tardelta

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// fuzzCorpus is a small base, a target derived from it, and deltas that
// exercise every operation (copies, header XORs, patches of small and
// segment-trimmed contents, bsdiff patches of a rebuilt executable,
// patches referring to the history, literals).
var fuzzCorpus = sync.OnceValues(func() ([]byte, [][]byte) {
	rng := rand.New(rand.NewPCG(77, 77))
	tr := randomTree(rng, 40, 40<<10)
	// One content large enough for prefix/suffix trimming.
	tr = append(tr, tfile{name: "big/file.bin", typ: '0', data: binData(rng, 200<<10), mode: 0o644})
	exe := newToyExec(rng, 600)
	rebuilt := exe.rebuild(rng, 2).render()
	tr = append(tr, tfile{name: "bin/tool", typ: '0', data: exe.render(), mode: 0o755})
	// Files that one target edits alike: PATCHH operations.
	common := textData(rng, 4<<10)
	for i := range 6 {
		tr = append(tr, tfile{name: fmt.Sprintf("loc/l%d.js", i), typ: '0', data: append(textData(rng, 512), common...), mode: 0o644})
	}
	base := buildTar(tr, tarOpts{})
	var deltas [][]byte
	for i, k := range []int{0, 3, 15} {
		tg := mutate(rng, tr, k)
		if i == 2 {
			big := &tg[len(tg)-2]
			if big.name == "big/file.bin" {
				big.data = bytes.Clone(big.data)
				big.data[100<<10] ^= 1
			}
		}
		if i == 1 {
			tg = append(tg, tfile{name: "bin/tool", typ: '0', data: rebuilt, mode: 0o755, mtime: 1})
		}
		if i == 2 {
			for j := range tg {
				if strings.HasPrefix(tg[j].name, "loc/") {
					tg[j].data = bytes.ReplaceAll(tg[j].data, []byte("\n"), []byte("\n  "))
				}
			}
		}
		target := buildTar(tg, tarOpts{trailing: []byte("trailing")})
		idx, err := BuildIndex(bytes.NewReader(base))
		if err != nil {
			panic(err)
		}
		var d bytes.Buffer
		if _, err := Encode(context.Background(), bytes.NewReader(target), []Base{{Index: idx, Data: bytes.NewReader(base)}}, &d, Options{}); err != nil {
			panic(err)
		}
		deltas = append(deltas, d.Bytes())
	}
	var d bytes.Buffer
	if _, err := Encode(context.Background(), bytes.NewReader(base), nil, &d, Options{}); err != nil {
		panic(err)
	}
	return base, append(deltas, d.Bytes())
})

// applyNoPanic applies a possibly corrupted delta and checks it fails
// cleanly or, if it succeeds, that the output is what its checksum claims.
func applyNoPanic(t *testing.T, base, delta []byte) {
	var out bytes.Buffer
	n, err := Apply(context.Background(), bytes.NewReader(delta), []SizedReaderAt{bytes.NewReader(base)}, &out)
	if err == nil && n != int64(out.Len()) {
		t.Fatalf("Apply reported %d bytes, wrote %d", n, out.Len())
	}
}

func FuzzApply(f *testing.F) {
	base, deltas := fuzzCorpus()
	for _, d := range deltas {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, delta []byte) {
		applyNoPanic(t, base, delta)
	})
}

// TestCorruptDeltas flips, truncates and splices real deltas: Apply must
// return an error (or, rarely, the exact target), never panic, and keep its
// memory bounded.
func TestCorruptDeltas(t *testing.T) {
	base, deltas := fuzzCorpus()
	rng := rand.New(rand.NewPCG(5, 55))
	iters := 3000
	if raceEnabled {
		iters = 600
	}
	var worst uint64
	var ms runtime.MemStats
	for i := 0; i < iters; i++ {
		orig := deltas[i%len(deltas)]
		d := bytes.Clone(orig)
		switch i % 5 {
		case 0:
			for range 1 + rng.IntN(3) {
				d[rng.IntN(len(d))] ^= byte(1 + rng.IntN(255))
			}
		case 1:
			d = d[:rng.IntN(len(d))]
		case 2:
			p := rng.IntN(len(d))
			d = append(d[:p], randData(rng, rng.IntN(64))...)
		case 3:
			p := rng.IntN(len(d))
			d = append(d[:p:p], append(randData(rng, 1+rng.IntN(8)), orig[p:]...)...)
		case 4:
			d = randData(rng, rng.IntN(200))
			if rng.IntN(2) == 0 {
				d = append([]byte("OTDL\x01\x00\x01"), d...)
			}
		}
		measure := i%10 == 0
		var before uint64
		if measure {
			runtime.ReadMemStats(&ms)
			before = ms.TotalAlloc
		}
		n, err := Apply(context.Background(), bytes.NewReader(d), []SizedReaderAt{bytes.NewReader(base)}, io.Discard)
		if err == nil && !bytes.Equal(d, orig) {
			// Only possible when the damage did not change the meaning,
			// e.g. unused bits; the CRC then still holds.
			t.Logf("iteration %d: damaged delta still applied (%d bytes)", i, n)
		}
		if measure {
			runtime.ReadMemStats(&ms)
			worst = max(worst, ms.TotalAlloc-before)
		}
	}
	t.Logf("most allocated by one Apply of a corrupt delta: %d KiB", worst>>10)
	if worst > 64<<20 {
		t.Fatalf("Apply allocated %d MiB for a small corrupt delta", worst>>20)
	}
}
