package tardelta

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/outpost-registry/outpost/internal/delta/exediff"
	"github.com/outpost-registry/outpost/internal/delta/exediff/exetest"
)

// execTrees returns a base tree holding toy executables and a target where
// they were rebuilt (one also renamed up to its version number), among
// ordinary files with ordinary edits.
func execTrees(rng *rand.Rand, nfuncs int) (base, target tree) {
	base = randomTree(rng, 30, 20<<10)
	others := len(base)
	app, lib := newToyExec(rng, nfuncs), newToyExec(rng, nfuncs/4)
	base = append(base,
		tfile{name: "usr/bin/app", typ: '0', data: app.render(), mode: 0o755},
		tfile{name: "usr/lib/libx.so.1", typ: '0', data: lib.render(), mode: 0o644})
	target = mutate(rng, base[:others], 5)
	target = append(target,
		tfile{name: "usr/bin/app", typ: '0', data: app.rebuild(rng, 3).render(), mode: 0o755, mtime: 1},
		tfile{name: "usr/lib/libx.so.2", typ: '0', data: lib.rebuild(rng, 2).render(), mode: 0o644, mtime: 1})
	return base, target
}

// TestBsdiffExecutables: rebuilt executables go as BSDIFF operations, far
// smaller than zstd patches, and rebuild exactly.
func TestBsdiffExecutables(t *testing.T) {
	rng := rand.New(rand.NewPCG(18, 18))
	nfuncs := 12000
	if raceEnabled {
		nfuncs = 1500
	}
	bt, tt := execTrees(rng, nfuncs)
	base, target := buildTar(bt, tarOpts{}), buildTar(tt, tarOpts{})
	delta, st := encodeApply(t, target, [][]byte{base}, Options{})
	if st.Bsdiffs != 2 {
		t.Fatalf("expected the two executables as BSDIFF: %+v", st)
	}
	if raceEnabled {
		return // the comparison adds nothing the race detector would look at
	}
	defer func() { bsdiffEnabled = true }()
	bsdiffEnabled = false
	without, st0 := encodeApply(t, target, [][]byte{base}, Options{})
	t.Logf("rebuilt executables (%d bytes): delta %d bytes with bsdiff (%d of %d patches, %d -> %d bytes), %d without (patches %d -> %d)",
		st.BsdiffIn, len(delta), st.Bsdiffs, st.Patches, st.BsdiffIn, st.BsdiffOut, len(without), st0.PatchIn, st0.PatchOut)
	if st0.Bsdiffs != 0 || st.PatchOut*3 > st0.PatchOut {
		t.Fatalf("bsdiff saved too little: patches of %d bytes instead of %d", st.PatchOut, st0.PatchOut)
	}
}

// TestBsdiffRoundTrip: random trees with rebuilt executables, several bases
// and tar formats round-trip; BSDIFF must show up.
func TestBsdiffRoundTrip(t *testing.T) {
	seeds := []int{0, 1, 2, 3, 4, 5}
	if raceEnabled {
		seeds = []int{1}
	}
	bsdiffs := int64(0)
	for _, seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 19))
		bt, tt := execTrees(rng, 1000+rng.IntN(3000))
		bases := [][]byte{buildTar(bt, randTarOpts(rng))}
		if seed%2 == 1 {
			// The executables in a second base, after an unrelated one.
			bases = append([][]byte{buildTar(randomTree(rng, 20, 10<<10), tarOpts{})}, bases...)
		}
		_, st := encodeApply(t, buildTar(tt, randTarOpts(rng)), bases, Options{Level: []zstd.EncoderLevel{0, zstd.SpeedDefault}[seed%2]})
		bsdiffs += st.Bsdiffs
	}
	if bsdiffs == 0 {
		t.Fatal("no BSDIFF operation was used")
	}
}

// deltaOp is an operation of a delta, with where its payload lies.
type deltaOp struct {
	kind           byte
	payOff, payLen int
}

// parseDelta lists the operations of a delta (test helper: little
// validation).
func parseDelta(t *testing.T, d []byte) []deltaOp {
	t.Helper()
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	p := len(deltaMagic) + 2
	uv := func() int {
		v, n := binary.Uvarint(d[p:])
		if n <= 0 {
			t.Fatalf("bad varint at %d", p)
		}
		p += n
		return int(v)
	}
	for range uv() {
		uv()
	}
	var ops []deltaOp
	for d[p] == recBlock {
		p++
		var sections [3][]byte
		for i := range sections {
			raw, stored := uv(), uv()
			s := d[p : p+stored]
			p += stored
			if stored < raw {
				if s, err = dec.DecodeAll(s, nil); err != nil {
					t.Fatal(err)
				}
			}
			sections[i] = s
		}
		r := opReader{b: sections[0], ok: true}
		for len(r.b) > 0 {
			kind := r.b[0]
			r.b = r.b[1:]
			op := deltaOp{kind: kind}
			switch kind {
			case opCopy, opHeaderXor:
				r.uvarint()
				r.varint()
				r.uvarint()
			case opHeader, opLiteral:
				r.uvarint()
			case opPatch, opPatchHist, opBsdiff, opExediff:
				r.uvarint()
				r.varint()
				r.uvarint()
				r.uvarint()
				op.payLen = int(r.uvarint())
				op.payOff = p
				p += op.payLen
			}
			ops = append(ops, op)
		}
	}
	return ops
}

// TestCorruptBsdiffPayload damages the BSDIFF payloads of a real delta in
// many ways: Apply must report ErrCorrupt, never panic, and never return
// success with output other than the target (the end record's CRC-32C
// stands behind bsdiff, which has no checksum of its own).
func TestCorruptBsdiffPayload(t *testing.T) {
	base, deltas := fuzzCorpus()
	var delta []byte
	for _, d := range deltas {
		for _, op := range parseDelta(t, d) {
			if op.kind == opBsdiff {
				delta = d
			}
		}
	}
	if delta == nil {
		t.Fatal("the fuzz corpus has no BSDIFF operation")
	}
	var out bytes.Buffer
	if _, err := Apply(context.Background(), bytes.NewReader(delta), []SizedReaderAt{bytes.NewReader(base)}, &out); err != nil {
		t.Fatal(err)
	}
	want := out.Bytes()
	rng := rand.New(rand.NewPCG(21, 21))
	iters := 1500
	if raceEnabled {
		iters = 100
	}
	checked := 0
	for _, op := range parseDelta(t, delta) {
		if op.kind != opBsdiff {
			continue
		}
		for i := range iters {
			d := bytes.Clone(delta)
			pay := d[op.payOff : op.payOff+op.payLen]
			switch i % 4 {
			case 0:
				for range 1 + rng.IntN(3) {
					pay[rng.IntN(len(pay))] ^= byte(1 + rng.IntN(255))
				}
			case 1:
				// The size claim and stream lengths, at the front.
				pay[rng.IntN(min(len(pay), 12))] ^= byte(1 + rng.IntN(255))
			case 2:
				// Shift the rest of the delta: the payload is shorter.
				k := 1 + rng.IntN(min(len(pay)-1, 64))
				d = append(d[:op.payOff+op.payLen-k:op.payOff+op.payLen-k], delta[op.payOff+op.payLen:]...)
			case 3:
				copy(pay[rng.IntN(len(pay)):], randData(rng, 1+rng.IntN(16)))
			}
			var got bytes.Buffer
			_, err := Apply(context.Background(), bytes.NewReader(d), []SizedReaderAt{bytes.NewReader(base)}, &got)
			switch {
			case err == nil && !bytes.Equal(got.Bytes(), want):
				t.Fatalf("iteration %d: damaged BSDIFF payload applied to a wrong output without error", i)
			case err != nil && !errors.Is(err, ErrCorrupt):
				t.Fatalf("iteration %d: %v is not ErrCorrupt", i, err)
			}
			checked++
		}
	}
	t.Logf("%d damaged BSDIFF payloads rejected", checked)
}

// TestApplyVersion1: deltas of the previous format version, which lacks
// BSDIFF, still apply; a BSDIFF in one is refused.
func TestApplyVersion1(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 22))
	tr := randomTree(rng, 50, 20<<10)
	base := buildTar(tr, tarOpts{})
	target := buildTar(mutate(rng, tr, 10), tarOpts{})
	// What a parent of that version made: no BSDIFF.
	bsdiffEnabled = false
	delta, _ := encodeApply(t, target, [][]byte{base}, Options{})
	bsdiffEnabled = true
	for _, op := range parseDelta(t, delta) {
		if op.kind == opBsdiff {
			t.Fatal("unexpected BSDIFF with bsdiff disabled")
		}
	}
	v1 := bytes.Clone(delta)
	v1[len(deltaMagic)] = 1
	var out bytes.Buffer
	if _, err := Apply(context.Background(), bytes.NewReader(v1), []SizedReaderAt{bytes.NewReader(base)}, &out); err != nil || !bytes.Equal(out.Bytes(), target) {
		t.Fatalf("version 1 delta: %v", err)
	}
	d := craftDelta([]int64{10}, []byte{opBsdiff, 0, 0, 1, 1, 1}, nil, nil, []byte{0})
	d[len(deltaMagic)] = 1
	if _, err := Apply(context.Background(), bytes.NewReader(d), []SizedReaderAt{bytes.NewReader(make([]byte, 10))}, io.Discard); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "unknown op 0x06 in a version 1 delta") {
		t.Fatalf("BSDIFF in a version 1 delta: %v", err)
	}
}

// TestApplyBsdiffErrors: hand-made BSDIFF operations out of limits or with
// bad payloads.
func TestApplyBsdiffErrors(t *testing.T) {
	base := bytes.Repeat([]byte("b"), 1000)
	bases := []SizedReaderAt{bytes.NewReader(base)}
	sizes := []int64{1000}
	uv := func(v uint64) []byte { return appendUvarint(nil, v) }
	op := func(b, off, oldLen, targetLen, payLen uint64) []byte {
		o := []byte{opBsdiff}
		for _, v := range []uint64{b, off, oldLen, targetLen, payLen} {
			o = append(o, uv(v)...)
		}
		return o
	}
	// A valid patch: 3 bytes, the old range's first byte plus 1, then "xy".
	good := func() []byte {
		enc, err := zstd.NewWriter(nil, zstd.WithWindowSize(1<<20))
		if err != nil {
			t.Fatal(err)
		}
		defer enc.Close()
		streams := [][]byte{
			enc.EncodeAll(append(appendUvarint([]byte{0}, 1), 2), nil), // seek 0, 1 approximate, 2 extra
			enc.EncodeAll([]byte{0}, nil),                              // no zeros, one value
			enc.EncodeAll([]byte{1}, nil),
			enc.EncodeAll([]byte("xy"), nil),
		}
		p := uv(3)
		for _, s := range streams {
			p = append(p, uv(uint64(len(s)))...)
		}
		for _, s := range streams {
			p = append(p, s...)
		}
		return p
	}()
	end := func(out string) []byte {
		var crc [4]byte
		binary.LittleEndian.PutUint32(crc[:], crc32.Checksum([]byte(out), castagnoli))
		return append(append([]byte{recEnd}, uv(uint64(len(out)))...), crc[:]...)
	}
	n := uint64(len(good))
	for _, c := range []struct {
		name  string
		delta []byte
		want  string
	}{
		{"valid", craftDelta(sizes, op(0, 0, 10, 3, n), nil, nil, append(bytes.Clone(good), end("cxy")...)), ""},
		{"truncated op", craftDelta(sizes, []byte{opBsdiff, 0, 0, 10}, nil, nil, nil), "op 1: truncated bsdiff"},
		{"empty old", craftDelta(sizes, op(0, 0, 0, 3, n), nil, nil, good), "bsdiff of 0 base bytes"},
		{"old overruns base", craftDelta(sizes, op(0, 0, 1001, 3, n), nil, nil, good), "bsdiff of 1001 bytes at 0 overruns base 0"},
		{"output limit", craftDelta(sizes, op(0, 0, 10, SegmentSize+1, n), nil, nil, good), "bsdiff output of 16777217 bytes"},
		{"old for output", craftDelta([]int64{8 << 20}, op(0, 0, 5<<20, 3, n), nil, nil, good), "bsdiff of 5242880 base bytes for 3 output bytes"},
		{"payload limit", craftDelta(sizes, op(0, 0, 10, 3, maxPatchPayload+1), nil, nil, good), "bsdiff payload of"},
		{"payload truncated", craftDelta(sizes, op(0, 0, 10, 3, n+5), nil, nil, good), "truncated delta reading bsdiff payload"},
		{"size mismatch", craftDelta(sizes, op(0, 0, 10, 4, n), nil, nil, good), "for 4 bytes: it describes 3 bytes"},
		{"garbage", craftDelta(sizes, op(0, 0, 10, 3, 3), nil, nil, []byte{3, 1, 0}), "op 1: bsdiff against base 0 at 0"},
		{"wrong crc", craftDelta(sizes, op(0, 0, 10, 3, n), nil, nil, append(bytes.Clone(good), end("cxz")...)), "CRC-32C"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bs := bases
			if c.name == "old for output" {
				bs = []SizedReaderAt{bytes.NewReader(make([]byte, 8<<20))}
			}
			var out bytes.Buffer
			_, err := Apply(context.Background(), bytes.NewReader(c.delta), bs, &out)
			if c.want == "" {
				if err != nil || out.String() != "cxy" {
					t.Fatalf("got %q, %v", out.String(), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt with %q", err, c.want)
			}
		})
	}
}

// goBuildTars returns a base tar holding a Go program among other files and a target where
// the program is rebuilt (exetest.GoBuilds) and some files edited, and the new build.
func goBuildTars(t *testing.T, seed uint64) (base, target, newBin []byte) {
	t.Helper()
	oldBin, newBin := exetest.GoBuilds(t)
	rng := rand.New(rand.NewPCG(seed, seed))
	others := randomTree(rng, 10, 8<<10)
	bt := append(others, tfile{name: "usr/local/bin/app", typ: '0', data: oldBin, mode: 0o755})
	tt := append(mutate(rng, others, 2), tfile{name: "usr/local/bin/app", typ: '0', data: newBin, mode: 0o755, mtime: 1})
	return buildTar(bt, tarOpts{}), buildTar(tt, tarOpts{}), newBin
}

// TestExediffGoBuilds: a rebuilt Go program goes as one EXEDIFF, smaller
// than the BSDIFF a version 2 delta makes of it, and both rebuild exactly;
// versions 2 and 3 refuse EXEDIFF, and a damaged one is reported.
func TestExediffGoBuilds(t *testing.T) {
	base, target, newBin := goBuildTars(t, 7)

	delta, st := encodeApply(t, target, [][]byte{base}, Options{})
	if st.Exediffs != 1 {
		t.Fatalf("expected the program as one EXEDIFF: %+v", st)
	}
	v2, st2 := encodeApply(t, target, [][]byte{base}, Options{Version: 2})
	if st2.Exediffs != 0 || v2[len(deltaMagic)] != 2 {
		t.Fatalf("a version 2 delta holds EXEDIFF: %+v", st2)
	}
	t.Logf("%d-byte program: EXEDIFF %d bytes (delta %d), version 2's BSDIFF %d (delta %d)", len(newBin), st.BsdiffOut, len(delta), st2.BsdiffOut, len(v2))
	if st.BsdiffOut*2 > st2.BsdiffOut {
		t.Errorf("EXEDIFF of %d bytes does not halve BSDIFF's %d", st.BsdiffOut, st2.BsdiffOut)
	}

	apply := func(d []byte) error {
		_, err := Apply(context.Background(), bytes.NewReader(d), []SizedReaderAt{bytes.NewReader(base)}, io.Discard)
		return err
	}
	// Version 2 has no EXEDIFF; version 3's were of exediff's previous
	// model, which this package refuses (the child fetches the layer).
	for _, v := range []byte{2, 3} {
		old := bytes.Clone(delta)
		old[len(deltaMagic)] = v
		if err := apply(old); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "unknown op 0x07") {
			t.Errorf("version %d delta with EXEDIFF: %v", v, err)
		}
	}
	// Damage the patch's header (its CRC of the predictions, or the map).
	i := bytes.Index(delta, []byte(exediff.Magic))
	if i < 0 {
		t.Fatal("no exediff patch in the delta")
	}
	bad := bytes.Clone(delta)
	bad[i+8] ^= 0x5a
	if err := apply(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("damaged EXEDIFF: %v", err)
	}
	for _, v := range []int{1, 3} {
		if _, err := Encode(context.Background(), bytes.NewReader(target), nil, io.Discard, Options{Version: v}); err == nil {
			t.Errorf("Encode wrote version %d", v)
		}
	}
}

// TestPatchMemory: an executable whose EXEDIFF would take more than
// Options.PatchMemory goes as the patches of its segments, and BSDIFF is
// left out the same way; the delta still rebuilds the tar exactly.
func TestPatchMemory(t *testing.T) {
	base, target, newBin := goBuildTars(t, 8)
	need := exediff.DiffMemory(int64(len(newBin)), int64(len(newBin))) // the new build is the larger

	for _, c := range []struct {
		budget   int64
		exediffs int64
		over     bool
	}{
		{budget: 0, exediffs: 1},       // no bound
		{budget: need, exediffs: 1},    // just enough
		{budget: need - 1, over: true}, // the segments' patches
		{budget: 1 << 20, over: true},  // nor BSDIFF of a segment
	} {
		_, st := encodeApply(t, target, [][]byte{base}, Options{PatchMemory: c.budget})
		if st.Exediffs != c.exediffs || (st.OverMemory > 0) != c.over || (c.budget == 1<<20 && st.Bsdiffs != 0) {
			t.Errorf("PatchMemory %d (EXEDIFF needs %d): %d EXEDIFF, %d BSDIFF, %d left out for memory", c.budget, need, st.Exediffs, st.Bsdiffs, st.OverMemory)
		}
		t.Logf("PatchMemory %d: patches %d -> %d bytes (%d EXEDIFF, %d BSDIFF)", c.budget, st.PatchIn, st.PatchOut, st.Exediffs, st.Bsdiffs)
	}
}

// TestBsdiffText: text edited in many places (a bundle from one release to the next) goes as
// BSDIFF when that beats the zstd patch, and round-trips.
func TestBsdiffText(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 23))
	old := textData(rng, 200<<10)
	edited := bytes.Clone(old)
	for p := rng.IntN(64); p < len(edited); p += 40 + rng.IntN(80) {
		edited[p] ^= 0x20
	}
	base := buildTar(tree{{name: "app/dist/bundle.js", typ: '0', data: old, mode: 0o644}}, tarOpts{})
	target := buildTar(tree{{name: "app/dist/bundle.js", typ: '0', data: edited, mode: 0o644, mtime: 1}}, tarOpts{})
	_, st := encodeApply(t, target, [][]byte{base}, Options{})
	defer func() { bsdiffEnabled = true }()
	bsdiffEnabled = false
	_, st0 := encodeApply(t, target, [][]byte{base}, Options{})
	t.Logf("edited text: BSDIFF %d bytes, zstd patch %d", st.PatchOut, st0.PatchOut)
	if st.Bsdiffs != 1 || st.PatchOut >= st0.PatchOut {
		t.Fatalf("edited text: %+v, zstd patch alone %d bytes", st, st0.PatchOut)
	}
}
