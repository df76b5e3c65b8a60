package tardelta

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestPatchHist: the same edit made to many files (a package reformatted by a new release) costs
// about once: the later files' patches refer to what the earlier ones output (PATCHH). The delta
// round-trips, is far smaller than version 4's, and a version 4 reader refuses PATCHH.
func TestPatchHist(t *testing.T) {
	rng := rand.New(rand.NewPCG(24, 24))
	common := textData(rng, 8<<10)
	reformatted := bytes.ReplaceAll(common, []byte("\n"), []byte("\n  "))
	var bt, tt tree
	for i := range 40 {
		own := textData(rng, 1<<10)
		name := fmt.Sprintf("app/node_modules/pkg/locale/l%02d.js", i)
		bt = append(bt, tfile{name: name, typ: '0', data: append(bytes.Clone(own), common...), mode: 0o644})
		tt = append(tt, tfile{name: name, typ: '0', data: append(bytes.Clone(own), reformatted...), mode: 0o644, mtime: 1})
	}
	base, target := buildTar(bt, tarOpts{}), buildTar(tt, tarOpts{})
	d5, st5 := encodeApply(t, target, [][]byte{base}, Options{})
	d4, st4 := encodeApply(t, target, [][]byte{base}, Options{Version: 4})
	count := func(d []byte) (n int) {
		for _, op := range parseDelta(t, d) {
			if op.kind == opPatchHist {
				n++
			}
		}
		return n
	}
	n5, n4 := count(d5), count(d4)
	t.Logf("40 files with the same edit: version 5 %d bytes (%d PATCHH, patches %d), version 4 %d bytes (patches %d)", len(d5), n5, st5.PatchOut, len(d4), st4.PatchOut)
	if n5 < 30 || n4 != 0 || d4[len(deltaMagic)] != 4 {
		t.Fatalf("PATCHH in version 5: %d, in version 4: %d", n5, n4)
	}
	if st5.PatchOut*3 > st4.PatchOut {
		t.Errorf("PATCHH saved too little: patches of %d bytes, %d without", st5.PatchOut, st4.PatchOut)
	}
	old := bytes.Clone(d5)
	old[len(deltaMagic)] = 4
	_, err := Apply(context.Background(), bytes.NewReader(old), []SizedReaderAt{bytes.NewReader(base)}, &bytes.Buffer{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "unknown op 0x08") {
		t.Errorf("version 4 delta with PATCHH: %v", err)
	}
}

// TestHistWindow: the history keeps the last histMax bytes whatever the sizes appended.
func TestHistWindow(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 25))
	var h, all []byte
	total := 0
	for range 200 {
		p := randData(rng, []int{1, 100, 10 << 10, 300 << 10, histMax, histMax + 7}[rng.IntN(6)])
		h = appendHist(h, p)
		total += len(p)
		all = append(all, p...)
		all = bytes.Clone(all[max(0, len(all)-histMax):])
		if !bytes.Equal(lastHist(h), all) {
			t.Fatalf("history differs after %d bytes", total)
		}
		if len(h) > 2*histMax {
			t.Fatalf("history holds %d bytes", len(h))
		}
	}
}

// TestFuzzCorpusHasPatchHist: the fuzzers' corpus exercises PATCHH.
func TestFuzzCorpusHasPatchHist(t *testing.T) {
	_, deltas := fuzzCorpus()
	for _, d := range deltas {
		for _, op := range parseDelta(t, d) {
			if op.kind == opPatchHist {
				return
			}
		}
	}
	t.Fatal("no PATCHH in the fuzz corpus")
}
