package exediff

import (
	"bytes"
	"debug/buildinfo"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-registry/outpost/internal/delta/bsdiff"
	"github.com/outpost-registry/outpost/internal/delta/exediff/exetest"
)

func roundTrip(t testing.TB, old, new []byte) []byte {
	t.Helper()
	p, err := Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := NewSize(p); err != nil || n != int64(len(new)) {
		t.Fatalf("NewSize = %d, %v; want %d", n, err, len(new))
	}
	var out bytes.Buffer
	n, err := Apply(bytes.NewReader(old), int64(len(old)), p, &out)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(new)) || !bytes.Equal(out.Bytes(), new) {
		t.Fatalf("Apply wrote %d bytes, not the new file's %d", n, len(new))
	}
	return p
}

// TestGoRebuild: two real builds of a Go program round-trip, and the
// predictions make the patch several times smaller than bsdiff's, on
// both architectures the operand models know.
func TestGoRebuild(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			old, new := exetest.GoBuildsFor(t, arch)
			p := roundTrip(t, old, new)
			plain, err := bsdiff.Diff(old, new)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d-byte build → %d bytes: patch %d bytes, bsdiff alone %d", len(old), len(new), len(p), len(plain))
			if len(p)*3 > len(plain) {
				t.Errorf("patch of %d bytes, bsdiff alone %d: the predictions did not cut it to a third", len(p), len(plain))
			}
			// Backwards too: functions removed.
			roundTrip(t, new, old)
		})
	}
}

// TestModelParts: each part of the model finds slots in real Go
// binaries, so that none of them silently stops working.
func TestModelParts(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) { testModelParts(t, arch) })
	}
}

func testModelParts(t *testing.T, arch string) {
	old, new := exetest.GoBuildsFor(t, arch)
	om, nm := models(t, old, new)
	for b, v := range om.bases[:baseDebugInfo] { // a stripped build has no DWARF
		if v == 0 || nm.bases[b] == 0 {
			t.Errorf("table base %d not found (old %#x, new %#x)", b, v, nm.bases[b])
		}
	}
	if om.x86 != (arch == "amd64") || om.arm64 != (arch == "arm64") || om.nfunc == 0 || om.typelnk.size == 0 || om.etypes == 0 {
		t.Fatalf("model: x86 %v, arm64 %v, %d functions, typelinks %d bytes, type data end %#x", om.x86, om.arm64, om.nfunc, om.typelnk.size, om.etypes)
	}
	ms, err := bsdiff.Align(old, new)
	if err != nil {
		t.Fatal(err)
	}
	m := newMapper(om, &nm.layout, piecesOf(ms))
	p := newPredictor(m, bytes.NewReader(old), om.size)
	// The parts run in predict's order (the type data needs the others'
	// references); each must add predictions of its own.
	var fds []funcdata
	operands := map[string]func(){"amd64": p.x86Operands, "arm64": p.arm64Operands}[arch]
	parts := []struct {
		name string
		run  func()
	}{
		{"function table", func() { fds = p.functab() }},
		{"funcdata", func() { p.funcdata(fds) }},
		{arch + " operands", operands},
		{"pointers", p.pointers},
		{"type data", p.goTypes},
	}
	for _, part := range parts {
		n := len(p.preds)
		part.run()
		if len(p.preds)-n < 100 {
			t.Errorf("%s: %d predictions", part.name, len(p.preds)-n)
		}
		t.Logf("%s: %d predictions", part.name, len(p.preds)-n)
	}
}

func TestNotExecutable(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":  nil,
		"text":   []byte(strings.Repeat("not an executable\n", 100)),
		"32-bit": append([]byte("\x7fELF\x01\x01\x01"), make([]byte, 100)...),
	} {
		if _, err := Diff(b, b); !errors.Is(err, ErrNotExecutable) {
			t.Errorf("%s: Diff error %v, want ErrNotExecutable", name, err)
		}
	}
}

// TestCorrupt: damaged patches, and a patch applied to another old file,
// fail with ErrCorrupt or at worst write other bytes (which callers'
// checksums catch); they never panic.
func TestCorrupt(t *testing.T) {
	old, new := exetest.GoBuilds(t)
	p := roundTrip(t, old, new)
	apply := func(old, p []byte) error {
		_, err := Apply(bytes.NewReader(old), int64(len(old)), p, new2discard{})
		return err
	}
	if err := apply(old, p[:3]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated magic: %v", err)
	}
	if err := apply(old, p[:20]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated header: %v", err)
	}
	// The other build as old: its predictions differ from the patch's.
	if err := apply(new, p); !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong old file: %v", err)
	}
	// A flipped CRC byte.
	hdrLen := 0
	if _, hdr, err := split(p); err == nil {
		hdrLen = len(p) - len(hdr)
	}
	q := bytes.Clone(p)
	q[hdrLen-1] ^= 0xff
	if err := apply(old, q); err == nil {
		t.Errorf("a damaged header applied")
	}
}

// TestCompressedSections: an unstripped Go build's DWARF sections
// (zlib) are patched decompressed and compressed back on apply: the patch
// is a fraction of one made of the compressed bytes, and it round-trips.
func TestCompressedSections(t *testing.T) {
	old, new := exetest.GoBuildsUnstripped(t)
	om, nm := models(t, old, new)
	oz, err := om.compressedSections(bytes.NewReader(old))
	if err != nil || len(oz) < 3 {
		t.Fatalf("%d compressed sections (%v)", len(oz), err)
	}
	nz, _ := nm.compressedSections(bytes.NewReader(new))
	dst, got := expandBytes(new, nz, reproduces)
	if len(got) != len(nz) {
		t.Fatalf("%d of %d compressed sections reproduced", len(got), len(nz))
	}
	nz = got
	// The DWARF walker finds offsets and addresses to predict.
	src, oz := expandBytes(old, oz, nil)
	om.expand(oz)
	nm.expand(nz)
	for b := baseDebugInfo; b < numBases; b++ {
		if om.bases[b] == 0 || nm.bases[b] == 0 {
			t.Errorf("DWARF base %d not found (old %#x, new %#x)", b, om.bases[b], nm.bases[b])
		}
	}
	ms, err := bsdiff.Align(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	pr := newPredictor(newMapper(om, &nm.layout, piecesOf(ms)), bytes.NewReader(src), om.size)
	pr.dwarfInfo()
	if len(pr.preds) < 100 {
		t.Errorf("DWARF: %d predictions", len(pr.preds))
	}
	t.Logf("DWARF: %d predictions", len(pr.preds))

	p := roundTrip(t, old, new)
	roundTrip(t, new, old)
	// The child's decompressed sections in a temporary file.
	defer func(n uint64) { expandInMemory = n }(expandInMemory)
	expandInMemory = 0
	roundTrip(t, old, new)
	// The same patch made of the compressed bytes (no level reproduces,
	// and the old file keeps its sections compressed).
	defer func(l []int) { zlibLevels = l }(zlibLevels)
	zlibLevels = nil
	raw := roundTrip(t, bytes.Clone(old), new)
	t.Logf("%d-byte build, %d compressed sections: patch %d bytes, %d without expanding them", len(new), len(nz), len(p), len(raw))
	if len(p)*4 > len(raw) {
		t.Errorf("patch of %d bytes, %d without expanding: not a quarter", len(p), len(raw))
	}
}

// TestDwarfMixed: DWARF compressed in one file and not in the other (Go's
// -compressdwarf=false) round-trips both ways: parent and child predict
// the same DWARF slots.
func TestDwarfMixed(t *testing.T) {
	plainOld, _ := exetest.GoBuildsLdflags(t, "amd64", "-compressdwarf=false")
	_, zNew := exetest.GoBuildsUnstripped(t)
	om, _ := models(t, plainOld, zNew)
	if zs, _ := om.compressedSections(bytes.NewReader(plainOld)); len(zs) != 0 {
		t.Fatalf("-compressdwarf=false left %d compressed sections", len(zs))
	}
	roundTrip(t, plainOld, zNew)
	roundTrip(t, zNew, plainOld)
}

// TestCompressedCorrupt: a patch that misdescribes the compressed
// sections fails with ErrCorrupt.
func TestCompressedCorrupt(t *testing.T) {
	old, new := exetest.GoBuildsUnstripped(t)
	p, err := Diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	h, bp, err := readPatch(p, int64(len(old))+maxExpand)
	if err != nil || len(h.oldZ) == 0 || len(h.newZ) == 0 {
		t.Fatalf("header %+v, %v", h.newZ, err)
	}
	remake := func(h header) []byte {
		enc, err := getEncoder()
		if err != nil {
			t.Fatal(err)
		}
		defer encoders.Put(enc)
		z := enc.EncodeAll(encodeHeader(h), nil)
		out := append([]byte(Magic), binary.AppendUvarint(nil, uint64(len(z)))...)
		return append(append(out, z...), bp...)
	}
	for name, change := range map[string]func(h *header){
		"new section one byte longer": func(h *header) { h.newZ[0].size++ },
		"another zlib level":          func(h *header) { h.newZ[0].level = 9 },
		"no old section there":        func(h *header) { h.oldZ[0]++ },
		"old sections out of order":   func(h *header) { h.oldZ = append(h.oldZ, h.oldZ[0]) },
	} {
		h2 := h
		h2.newZ, h2.oldZ = slices.Clone(h.newZ), slices.Clone(h.oldZ)
		change(&h2)
		var out bytes.Buffer
		_, err := Apply(bytes.NewReader(old), int64(len(old)), remake(h2), &out)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// models returns the models of two files.
func models(t *testing.T, old, new []byte) (om, nm *model) {
	t.Helper()
	var err error
	if om, err = readModel(bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	if nm, err = readModel(bytes.NewReader(new), int64(len(new))); err != nil {
		t.Fatal(err)
	}
	return om, nm
}

type new2discard struct{}

func (new2discard) Write(b []byte) (int, error) { return len(b), nil }

// FuzzApply: whatever the patch, Apply returns (an error or bytes) and
// never panics or allocates without bound.
func FuzzApply(f *testing.F) { fuzzApply(f, exetest.GoBuilds) }

// FuzzApplyCompressed is FuzzApply on unstripped builds, whose patches
// describe compressed sections.
func FuzzApplyCompressed(f *testing.F) { fuzzApply(f, exetest.GoBuildsUnstripped) }

func fuzzApply(f *testing.F, builds func(testing.TB) ([]byte, []byte)) {
	old, new := builds(f)
	p, err := Diff(old, new)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p[:min(len(p), 4096)], 0)
	f.Add(p, 100)
	f.Fuzz(func(t *testing.T, patch []byte, flip int) {
		if flip >= 0 && flip < len(patch) {
			patch = bytes.Clone(patch)
			patch[flip] ^= 0x55
		}
		_, _ = Apply(bytes.NewReader(old), int64(len(old)), patch, new2discard{})
		_, _ = NewSize(patch)
	})
}

// TestModelGolden pins what the model predicts for the test builds, under
// a map of its own (not bsdiff's alignment, which travels in the patch and
// may change freely). A change here is a change of the patch format: see
// Magic before updating the values.
func TestModelGolden(t *testing.T) {
	const toolchain = "go1.26.8"
	golden := map[string]struct {
		n   int
		crc uint32
	}{
		"amd64":            {67524, 0x40a533b9},
		"arm64":            {65225, 0xabcf5a53},
		"amd64 unstripped": {131628, 0x812d5fca},
	}
	builds := map[string]func(testing.TB) ([]byte, []byte){
		"amd64":            exetest.GoBuilds,
		"arm64":            func(t testing.TB) ([]byte, []byte) { return exetest.GoBuildsFor(t, "arm64") },
		"amd64 unstripped": exetest.GoBuildsUnstripped,
	}
	for _, name := range []string{"amd64", "arm64", "amd64 unstripped"} {
		t.Run(name, func(t *testing.T) {
			old, new := builds[name](t)
			if bi, err := buildinfo.Read(bytes.NewReader(old)); err != nil || bi.GoVersion != toolchain {
				t.Skipf("the golden values are for %s builds; these are %v (%v)", toolchain, bi, err)
			}
			old, om, nm, ms := goldenSetup(t, old, new)
			preds, err := om.predict(bytes.NewReader(old), nm.layout, piecesOf(ms))
			if err != nil {
				t.Fatal(err)
			}
			got, want := len(preds), golden[name]
			if crc := predsCRC(preds); got != want.n || crc != want.crc {
				t.Errorf("%d predictions, CRC %08x; want %d, %08x: the model changed (a new Magic and delta version, or a bug)", got, crc, want.n, want.crc)
			}
		})
	}
}

// goldenSetup gives the old build and the models of two builds, expanded as Diff and Apply see
// them, and a map of its own between them: every 4 KiB block moves by a share of the size change
// that grows through the file, rounded to 16 bytes.
func goldenSetup(t *testing.T, old, new []byte) (src []byte, om, nm *model, ms []bsdiff.Match) {
	t.Helper()
	om, nm = models(t, old, new)
	oz, _ := om.compressedSections(bytes.NewReader(old))
	nz, _ := nm.compressedSections(bytes.NewReader(new))
	old, oz = expandBytes(old, oz, nil)
	new, nz = expandBytes(new, nz, nil)
	om.expand(oz)
	nm.expand(nz)
	growth := len(new) - len(old) + 4096
	for o := 0; o+4096 <= len(old); o += 4096 {
		shift := growth * o / len(old) &^ 15
		if o+shift >= 0 && o+shift+4096 <= len(new) {
			ms = append(ms, bsdiff.Match{Old: o, New: o + shift, Len: 4096})
		}
	}
	return old, om, nm, ms
}

// TestPredictParallel: predict runs its passes on two goroutines; the result must be the serial
// run's, also when a side reaches its limit and the serial run takes over. It runs under the
// race detector in make unit (the package's other tests run without it).
func TestPredictParallel(t *testing.T) {
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			old, new := exetest.GoBuildsFor(t, arch)
			old, om, nm, ms := goldenSetup(t, old, new)
			preds, err := om.predict(bytes.NewReader(old), nm.layout, piecesOf(ms))
			if err != nil {
				t.Fatal(err)
			}
			m := newMapper(om, &nm.layout, piecesOf(ms))
			serial, err := om.predictSerial(bytes.NewReader(old), m)
			if err != nil || !slices.Equal(serial, preds) {
				t.Errorf("the serial run gives %d predictions (%v), the parallel one %d", len(serial), err, len(preds))
			}
			defer func(l int) { parallelLimit = l }(parallelLimit)
			parallelLimit = len(preds) / 4
			if _, err := om.predictParallel(bytes.NewReader(old), m); !errors.Is(err, errOverLimit) {
				t.Errorf("with a limit of %d a side, predictParallel: %v; want errOverLimit", parallelLimit, err)
			}
			if low, err := om.predict(bytes.NewReader(old), nm.layout, piecesOf(ms)); err != nil || !slices.Equal(low, preds) {
				t.Errorf("past the parallel limit, predict gives %d predictions (%v), want %d", len(low), err, len(preds))
			}
		})
	}
}

// TestWindows reads a file through both kinds of window at offsets that straddle buffers and
// pages, at its end and past it, and checks every byte.
func TestWindows(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	file := make([]byte, 3*pageSize*pageSlots+1234) // the cache wraps around three times
	for i := range file {
		file[i] = byte(rng.Uint32())
	}
	size := int64(len(file))
	for _, w := range []*window{newWindow(bytes.NewReader(file), size, 4<<10), newScattered(bytes.NewReader(file), size)} {
		for range 20000 {
			n := rng.IntN(300)
			var off int64
			switch rng.IntN(4) {
			case 0: // across a page boundary
				off = int64(rng.IntN(len(file)/pageSize))*pageSize - int64(rng.IntN(max(n, 1)))
			case 1: // at the end
				off = size - int64(n)
			default:
				off = rng.Int64N(size)
			}
			got := w.at(off, n)
			if off < 0 || off+int64(n) > size {
				if got != nil {
					t.Fatalf("at(%d, %d) past the end returned %d bytes", off, n, len(got))
				}
				continue
			}
			if !bytes.Equal(got, file[off:off+int64(n)]) || got == nil {
				t.Fatalf("at(%d, %d) returned the wrong bytes", off, n)
			}
		}
		if w.err != nil {
			t.Fatal(w.err)
		}
		if w.at(0, len(w.buf)+1) != nil || (w.tags != nil && w.at(0, pageSize+1) != nil) {
			t.Fatal("a read longer than the window returned bytes")
		}
	}
	// A file that cannot be read all the way: the error is kept, and nothing is returned.
	w := newScattered(bytes.NewReader(file[:100]), size)
	if w.at(50, 10) != nil || w.err == nil {
		t.Fatalf("a short file read: err %v", w.err)
	}
}
