package bsdiff

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
)

// roundTrip diffs old against new, applies the patch and checks the result.
func roundTrip(t testing.TB, old, new []byte) []byte {
	t.Helper()
	p, err := Diff(old, new)
	if err != nil {
		t.Fatalf("Diff: %v", err)
	}
	if size, err := NewSize(p); err != nil || size != int64(len(new)) {
		t.Fatalf("NewSize = %d, %v; want %d", size, err, len(new))
	}
	var out bytes.Buffer
	n, err := Apply(bytes.NewReader(old), int64(len(old)), p, &out)
	if err != nil {
		t.Fatalf("Apply (old %d, new %d bytes): %v", len(old), len(new), err)
	}
	if n != int64(len(new)) || !bytes.Equal(out.Bytes(), new) {
		t.Fatalf("Apply wrote %d bytes, want %d, first difference at %d", n, len(new), firstDiff(out.Bytes(), new))
	}
	return p
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func randBytes(rng *rand.Rand, n, alphabet int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(alphabet))
	}
	return b
}

// program is a toy executable: functions of code bytes holding absolute
// addresses of other functions. Rendering it after inserting or removing
// a function moves every later function, so the addresses pointing past
// the change all shift, the way a rebuild shifts them in a real binary.
type program struct {
	funcs []function
	base  uint32
}

type function struct {
	code []byte
	refs []fref // 4-byte little-endian address fields inside code
}

type fref struct {
	at     int // offset of the field in code
	target int // index of the function whose address goes there
	addend uint32
}

func newProgram(rng *rand.Rand, nfuncs, avgLen int) *program {
	p := &program{base: 0x400000 + uint32(rng.IntN(1<<20))}
	for range nfuncs {
		p.funcs = append(p.funcs, p.newFunc(rng, avgLen, nfuncs))
	}
	return p
}

// newFunc makes code from a small opcode alphabet (real code compresses),
// with an address field every few bytes.
func (p *program) newFunc(rng *rand.Rand, avgLen, nfuncs int) function {
	n := 8 + rng.IntN(2*avgLen)
	f := function{code: make([]byte, n)}
	for i := 0; i < n; {
		if i+5 <= n && rng.IntN(4) == 0 {
			f.code[i] = 0xe8
			f.refs = append(f.refs, fref{at: i + 1, target: rng.IntN(nfuncs), addend: uint32(rng.IntN(64))})
			i += 5
			continue
		}
		f.code[i] = []byte{0x48, 0x89, 0x8b, 0xc3, 0x0f, 0x00, 0x24, 0x90}[rng.IntN(8)]
		i++
	}
	return f
}

func (p *program) clone() *program {
	q := &program{base: p.base, funcs: make([]function, len(p.funcs))}
	for i, f := range p.funcs {
		q.funcs[i] = function{code: bytes.Clone(f.code), refs: append([]fref(nil), f.refs...)}
	}
	return q
}

func (p *program) render() []byte {
	addr := make([]uint32, len(p.funcs))
	size := 0
	for i, f := range p.funcs {
		addr[i] = p.base + uint32(size)
		size += len(f.code)
	}
	out := make([]byte, 0, size)
	for _, f := range p.funcs {
		start := len(out)
		out = append(out, f.code...)
		for _, r := range f.refs {
			binary.LittleEndian.PutUint32(out[start+r.at:], addr[r.target%len(addr)]+r.addend)
		}
	}
	return out
}

// rebuild returns p after a typical small source change: a few functions
// inserted, removed or edited.
func (p *program) rebuild(rng *rand.Rand, changes int) *program {
	q := p.clone()
	for range changes {
		i := rng.IntN(len(q.funcs) + 1)
		switch rng.IntN(3) {
		case 0:
			f := q.newFunc(rng, 40, len(q.funcs))
			q.retarget(func(target int) int { return target + boolInt(target >= i) })
			q.funcs = append(q.funcs[:i], append([]function{f}, q.funcs[i:]...)...)
		case 1:
			if i < len(q.funcs) && len(q.funcs) > 1 {
				q.funcs = append(q.funcs[:i], q.funcs[i+1:]...)
				q.retarget(func(target int) int { return max(0, target-boolInt(target >= i)) })
			}
		case 2:
			if i < len(q.funcs) {
				c := q.funcs[i].code
				c[rng.IntN(len(c))] ^= byte(1 + rng.IntN(255))
			}
		}
	}
	return q
}

// retarget renumbers the calls after functions were inserted or removed,
// so that they keep calling the same functions.
func (p *program) retarget(f func(int) int) {
	for _, fn := range p.funcs {
		for i := range fn.refs {
			fn.refs[i].target = f(fn.refs[i].target)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// edit applies random inserts, deletes and overwrites to b.
func edit(rng *rand.Rand, b []byte, edits int) []byte {
	b = bytes.Clone(b)
	for range edits {
		p := 0
		if len(b) > 0 {
			p = rng.IntN(len(b))
		}
		switch rng.IntN(4) {
		case 0:
			b = append(b[:p], append(randBytes(rng, 1+rng.IntN(300), 256), b[p:]...)...)
		case 1:
			b = append(b[:p], b[min(len(b), p+1+rng.IntN(300)):]...)
		case 2:
			if len(b) > 0 {
				b[p] ^= byte(1 + rng.IntN(255))
			}
		case 3:
			// Move a block: bsdiff must find it elsewhere.
			if len(b) > 100 {
				q, n := rng.IntN(len(b)-50), 1+rng.IntN(50)
				blk := bytes.Clone(b[q : q+n])
				b = append(b[:q], b[q+n:]...)
				p = rng.IntN(len(b) + 1)
				b = append(b[:p], append(blk, b[p:]...)...)
			}
		}
	}
	return b
}

func TestRoundTripEdges(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	r := randBytes(rng, 5000, 256)
	cases := map[string][2][]byte{
		"both empty":      {nil, nil},
		"empty old":       {nil, r},
		"empty new":       {r, nil},
		"identical":       {r, r},
		"one byte":        {{1}, {2}},
		"one byte same":   {{7}, {7}},
		"unrelated":       {r, randBytes(rng, 3000, 256)},
		"zeros":           {make([]byte, 10000), make([]byte, 12000)},
		"zeros to random": {make([]byte, 10000), r},
		"random to zeros": {r, make([]byte, 7000)},
		"prefix":          {r, r[:2500]},
		"suffix":          {r, r[2500:]},
		"doubled":         {r, append(bytes.Clone(r), r...)},
		"reversed halves": {r, append(bytes.Clone(r[2500:]), r[:2500]...)},
		"all 0xff carries": {bytes.Repeat([]byte{0xff}, 3000),
			bytes.Repeat([]byte{0x00, 0xff, 0x01, 0xfe}, 750)},
		"long runs": {bytes.Repeat([]byte{0, 1}, 5000), func() []byte {
			b := bytes.Repeat([]byte{0, 1}, 5000)
			for i := 0; i < len(b); i += 3 {
				b[i] += 0x80
			}
			return b
		}()},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) { roundTrip(t, c[0], c[1]) })
	}
}

// TestRoundTripRandom: random pairs of several kinds round-trip exactly.
func TestRoundTripRandom(t *testing.T) {
	n := 300
	if raceEnabled || testing.Short() {
		n = 25
	}
	for seed := range n {
		rng := rand.New(rand.NewPCG(uint64(seed), 9))
		var old, new []byte
		var kind string
		switch seed % 5 {
		case 0:
			kind = "program"
			p := newProgram(rng, 5+rng.IntN(200), 60)
			old, new = p.render(), p.rebuild(rng, 1+rng.IntN(6)).render()
		case 1:
			kind = "edited random"
			old = randBytes(rng, rng.IntN(20000), 256)
			new = edit(rng, old, rng.IntN(20))
		case 2:
			kind = "edited small alphabet"
			old = randBytes(rng, rng.IntN(20000), 1+rng.IntN(4))
			new = edit(rng, old, rng.IntN(20))
		case 3:
			kind = "unrelated"
			old, new = randBytes(rng, rng.IntN(3000), 256), randBytes(rng, rng.IntN(3000), 1+rng.IntN(256))
		case 4:
			kind = "periodic"
			unit := randBytes(rng, 1+rng.IntN(40), 256)
			old = bytes.Repeat(unit, 1+rng.IntN(500))
			new = edit(rng, bytes.Repeat(unit, 1+rng.IntN(500)), rng.IntN(10))
		}
		t.Run(fmt.Sprintf("%d %s", seed, kind), func(t *testing.T) { roundTrip(t, old, new) })
	}
}

// TestProgramPatchIsSmall: a rebuilt toy program costs a small fraction of
// its size although half its bytes changed in place (for reference, bsdiff
// 4.3 makes a 70 KB patch of it, zstd -19 --patch-from 227 KB).
func TestProgramPatchIsSmall(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	nf := 20000
	if raceEnabled {
		nf = 3000 // too small a program for the size check
	}
	p := newProgram(rng, nf, 60)
	old := p.render()
	new := p.rebuild(rng, 3).render()
	changed := 0
	for i := range min(len(old), len(new)) {
		if old[i] != new[i] {
			changed++
		}
	}
	patch := roundTrip(t, old, new)
	t.Logf("%d-byte program, %d bytes differ in place: patch %d bytes", len(new), changed, len(patch))
	if !raceEnabled && len(patch) > len(new)/20 {
		t.Fatalf("patch of %d bytes for %d bytes: addresses not coded as differences", len(patch), len(new))
	}
}

// fuzzSeeds are real patches with the old they apply to.
func fuzzSeeds() (olds, patches [][]byte) {
	rng := rand.New(rand.NewPCG(3, 3))
	add := func(old, new []byte) {
		p, err := Diff(old, new)
		if err != nil {
			panic(err)
		}
		olds, patches = append(olds, old), append(patches, p)
	}
	prog := newProgram(rng, 300, 50)
	add(prog.render(), prog.rebuild(rng, 4).render())
	r := randBytes(rng, 4000, 256)
	add(r, edit(rng, r, 10))
	add(nil, r[:500])
	add(r[:300], nil)
	z := make([]byte, 3000)
	add(z, edit(rng, z, 5))
	return olds, patches
}

func FuzzApply(f *testing.F) {
	olds, patches := fuzzSeeds()
	for i := range olds {
		f.Add(olds[i], patches[i])
	}
	f.Fuzz(func(t *testing.T, old, patch []byte) {
		checkApply(t, old, patch)
	})
}

// checkApply applies a possibly damaged patch: it must fail with
// ErrCorrupt, or write exactly the size the patch declares. A damaged
// size can claim terabytes, which a small patch can produce (zstd turns a
// few bytes into 128 KiB), so output past 4 MiB is refused, as a caller
// would after checking NewSize.
func checkApply(t *testing.T, old, patch []byte) {
	t.Helper()
	out := &limitWriter{left: 4 << 20}
	n, err := Apply(bytes.NewReader(old), int64(len(old)), patch, out)
	if n != out.n {
		t.Fatalf("Apply reported %d bytes, wrote %d", n, out.n)
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, errLimit) {
			t.Fatalf("error %v does not match ErrCorrupt", err)
		}
		return
	}
	if size, err := NewSize(patch); err != nil || size != n {
		t.Fatalf("Apply succeeded with %d bytes; NewSize says %d, %v", n, size, err)
	}
}

// FuzzRoundTrip: whatever the inputs, the patch rebuilds new.
func FuzzRoundTrip(f *testing.F) {
	rng := rand.New(rand.NewPCG(4, 4))
	r := randBytes(rng, 2000, 256)
	f.Add(r, edit(rng, r, 5))
	f.Add([]byte{}, []byte("x"))
	f.Add(bytes.Repeat([]byte("ab"), 300), bytes.Repeat([]byte("abc"), 200))
	f.Fuzz(func(t *testing.T, old, new []byte) {
		roundTrip(t, old, new)
	})
}

// TestCorruptPatches flips, truncates and splices real patches: Apply must
// fail with ErrCorrupt (or succeed with the declared size), never panic,
// and keep its memory bounded.
func TestCorruptPatches(t *testing.T) {
	olds, patches := fuzzSeeds()
	rng := rand.New(rand.NewPCG(5, 5))
	iters := 4000
	if raceEnabled {
		iters = 800
	}
	var ms runtime.MemStats
	var worst uint64
	for i := range iters {
		k := i % len(patches)
		orig := patches[k]
		p := bytes.Clone(orig)
		switch i % 4 {
		case 0:
			for range 1 + rng.IntN(3) {
				p[rng.IntN(len(p))] ^= byte(1 + rng.IntN(255))
			}
		case 1:
			p = p[:rng.IntN(len(p))]
		case 2:
			q := rng.IntN(len(p))
			p = append(p[:q:q], append(randBytes(rng, 1+rng.IntN(8), 256), orig[q:]...)...)
		case 3:
			p = randBytes(rng, rng.IntN(100), 256)
		}
		measure := i%20 == 0
		var before uint64
		if measure {
			runtime.ReadMemStats(&ms)
			before = ms.TotalAlloc
		}
		checkApply(t, olds[k], p)
		if measure {
			runtime.ReadMemStats(&ms)
			worst = max(worst, ms.TotalAlloc-before)
		}
	}
	t.Logf("most allocated by one Apply of a corrupt patch: %d KiB", worst>>10)
	if worst > 32<<20 {
		t.Fatalf("Apply allocated %d MiB for a small corrupt patch", worst>>20)
	}
}

// craft assembles a patch from raw (uncompressed-then-compressed) streams.
func craft(t *testing.T, newSize int, streams [numStreams][]byte) []byte {
	t.Helper()
	enc, err := getEncoder()
	if err != nil {
		t.Fatal(err)
	}
	defer encoders.Put(enc)
	var packed [numStreams][]byte
	for i, s := range streams {
		if s != nil {
			packed[i] = enc.EncodeAll(s, nil)
		}
	}
	p := binary.AppendUvarint(nil, uint64(newSize))
	for _, s := range packed {
		p = binary.AppendUvarint(p, uint64(len(s)))
	}
	for _, s := range packed {
		p = append(p, s...)
	}
	return p
}

// runCode is the one-byte run code for z zeros then r values.
func runCode(z, r int) byte { return byte(z<<2 | (r - 1)) }

func ctrl(triples ...int64) []byte {
	var b []byte
	for i := 0; i+2 < len(triples); i += 3 {
		b = binary.AppendVarint(b, triples[i])
		b = binary.AppendUvarint(b, uint64(triples[i+1]))
		b = binary.AppendUvarint(b, uint64(triples[i+2]))
	}
	return b
}

func TestApplyErrors(t *testing.T) {
	old := []byte("0123456789")
	for _, c := range []struct {
		name  string
		patch func(t *testing.T) []byte
		want  string
	}{
		{"empty", func(*testing.T) []byte { return nil }, "bad or truncated output size"},
		{"short header", func(*testing.T) []byte { return []byte{5, 1} }, "bad or truncated runs stream length"},
		{"stream overrun", func(*testing.T) []byte { return []byte{5, 9, 0, 0, 0, 1} }, "control stream of 9 bytes, 1 left"},
		{"trailing", func(*testing.T) []byte { return []byte{0, 0, 0, 0, 0, 7} }, "1 bytes after the streams"},
		{"not zstd", func(*testing.T) []byte { return []byte{5, 8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8} }, "control stream:"},
		{"seek before old", func(t *testing.T) []byte { return craft(t, 1, [4][]byte{ctrl(-1, 1, 0)}) }, "seek -1 from 0 outside old"},
		{"seek past old", func(t *testing.T) []byte { return craft(t, 1, [4][]byte{ctrl(11, 0, 1)}) }, "seek +11 from 0 outside old"},
		{"diff overrun", func(t *testing.T) []byte { return craft(t, 20, [4][]byte{ctrl(5, 6, 0)}) }, "6 approximate bytes at 5 overrun old"},
		{"output overrun", func(t *testing.T) []byte { return craft(t, 3, [4][]byte{ctrl(0, 2, 2)}) }, "triple of 2+2 bytes at output 0 overruns the output size 3"},
		{"empty triple", func(t *testing.T) []byte { return craft(t, 3, [4][]byte{ctrl(0, 0, 0)}) }, "empty control triple"},
		{"control ends", func(t *testing.T) []byte { return craft(t, 3, [4][]byte{ctrl(0, 2, 0)}) }, "control stream ends early"},
		{"extra ends", func(t *testing.T) []byte { return craft(t, 3, [4][]byte{ctrl(0, 0, 3), nil, nil, {1, 2}}) }, "extra stream ends early"},
		{"values end", func(t *testing.T) []byte { return craft(t, 3, [4][]byte{ctrl(0, 3, 0), {runCode(0, 2)}, {1}}) }, "values stream ends early"},
		{"bad run code", func(t *testing.T) []byte { return craft(t, 3, [4][]byte{ctrl(0, 3, 0), {0xfd}}) }, "invalid run code 0xfd"},
		{"empty run", func(t *testing.T) []byte { return craft(t, 3, [4][]byte{ctrl(0, 3, 0), {0xff, 1, 0}}) }, "empty run of values"},
		{"run past output", func(t *testing.T) []byte { return craft(t, 3, [4][]byte{ctrl(0, 3, 0), {runCode(5, 1)}, {1}}) }, "run of 2 zeros and 1 values goes past"},
		{"control left", func(t *testing.T) []byte { return craft(t, 1, [4][]byte{ctrl(0, 1, 0, 0, 1, 0)}) }, "control stream has data past the output"},
		{"runs left", func(t *testing.T) []byte { return craft(t, 1, [4][]byte{ctrl(0, 1, 0), {0, 0}, {1, 1}}) }, "runs stream has data past the output"},
		{"values left", func(t *testing.T) []byte { return craft(t, 1, [4][]byte{ctrl(0, 1, 0), {0}, {1, 1}}) }, "values stream has data past the output"},
		{"extra left", func(t *testing.T) []byte { return craft(t, 1, [4][]byte{ctrl(0, 0, 1), nil, nil, {1, 1}}) }, "extra stream has data past the output"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Apply(bytes.NewReader(old), int64(len(old)), c.patch(t), io.Discard)
			if err == nil || !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
				t.Fatalf("got %v, want ErrCorrupt with %q", err, c.want)
			}
		})
	}
	// A valid patch: the crafting above is right.
	p := craft(t, 4, [4][]byte{ctrl(2, 3, 1), {runCode(0, 1)}, {1}, {'x'}})
	var out bytes.Buffer
	if _, err := Apply(bytes.NewReader(old), int64(len(old)), p, &out); err != nil || out.String() != "334x" {
		t.Fatalf("crafted patch: %q, %v", out.String(), err)
	}
}

// TestApplyCarry: differences carry into the next byte, in both directions.
func TestApplyCarry(t *testing.T) {
	old := []byte{0xf0, 0x12, 0x00, 0x10, 0x12, 0x00}
	// +0x40 on the first 16-bit word, -0x20 on the second.
	new := []byte{0x30, 0x13, 0x00, 0xf0, 0x11, 0x00}
	p := craft(t, 6, [4][]byte{ctrl(0, 6, 0), {runCode(0, 1), runCode(2, 1)}, {0x40, 0xe0}})
	var out bytes.Buffer
	if _, err := Apply(bytes.NewReader(old), int64(len(old)), p, &out); err != nil || !bytes.Equal(out.Bytes(), new) {
		t.Fatalf("got % x, %v; want % x", out.Bytes(), err, new)
	}
}

var errLimit = errors.New("output limit")

type limitWriter struct{ n, left int64 }

func (w *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.left {
		return 0, errLimit
	}
	w.n += int64(len(p))
	w.left -= int64(len(p))
	return len(p), nil
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

type errReaderAt struct{}

func (errReaderAt) ReadAt([]byte, int64) (int, error) { return 0, errors.New("I/O error") }

// TestApplyIOErrors: failures of old or w are passed on, not blamed on the
// patch.
func TestApplyIOErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	old := randBytes(rng, 3000, 256)
	p := roundTrip(t, old, edit(rng, old, 3))
	if _, err := Apply(bytes.NewReader(old), int64(len(old)), p, errWriter{}); err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("write error: %v", err)
	}
	if _, err := Apply(errReaderAt{}, int64(len(old)), p, io.Discard); err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("read error: %v", err)
	}
	if _, err := Apply(bytes.NewReader(old[:100]), int64(len(old)), p, io.Discard); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short old: %v", err)
	}
}

// TestDeterministic: equal inputs give equal patches, whatever was diffed
// before with the pooled state.
func TestDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	p := newProgram(rng, 500, 50)
	old, new := p.render(), p.rebuild(rng, 3).render()
	first := roundTrip(t, old, new)
	roundTrip(t, randBytes(rng, 50000, 3), randBytes(rng, 1000, 256))
	if again := roundTrip(t, old, new); !bytes.Equal(first, again) {
		t.Fatal("the same inputs gave different patches")
	}
}

// repetitiveInputs are the inputs that make bsdiff's scan expensive: long
// repeats, with matches longer than maxMatch, and unrelated data.
func repetitiveInputs(rng *rand.Rand, n int) map[string][2][]byte {
	flaw := func(b []byte, every int) []byte {
		b = bytes.Clone(b)
		for i := rng.IntN(every); i < len(b); i += 1 + rng.IntN(2*every) {
			b[i] ^= byte(1 + rng.IntN(255))
		}
		return b
	}
	zeros := make([]byte, n)
	period := bytes.Repeat(randBytes(rng, 7, 256), n/7+1)[:n]
	r := randBytes(rng, n, 256)
	return map[string][2][]byte{
		"zeros, sparse flaws":     {zeros, flaw(zeros, 3000)},
		"zeros, dense flaws":      {zeros, flaw(zeros, 10)},
		"period 7, flaws":         {period, flaw(period, 500)},
		"period 7 to period 8":    {period, bytes.Repeat(append(bytes.Clone(period[:7]), 1), n/8)},
		"random, flaws":           {r, flaw(r, 30)},
		"random, unrelated":       {r, randBytes(rng, n, 256)},
		"random, shifted repeats": {r, append(append(bytes.Clone(r[n/2:]), r...), r[:n/3]...)},
	}
}

func TestRoundTripRepetitive(t *testing.T) {
	n := 256 << 10
	if raceEnabled {
		n = 64 << 10
	}
	for name, c := range repetitiveInputs(rand.New(rand.NewPCG(8, 8)), n) {
		t.Run(name, func(t *testing.T) {
			p := roundTrip(t, c[0], c[1])
			t.Logf("%d bytes: patch %d", len(c[1]), len(p))
		})
	}
}

// TestSearchBudgetExhausted: past the search budget the scan takes the
// shortcut, and patches still round-trip.
func TestSearchBudgetExhausted(t *testing.T) {
	defer func(a, b int64) { searchBudget, searchBudgetBase = a, b }(searchBudget, searchBudgetBase)
	searchBudget, searchBudgetBase = 0, 0
	rng := rand.New(rand.NewPCG(9, 9))
	for name, c := range repetitiveInputs(rng, 64<<10) {
		t.Run(name, func(t *testing.T) { roundTrip(t, c[0], c[1]) })
	}
	p := newProgram(rng, 500, 50)
	roundTrip(t, p.render(), p.rebuild(rng, 5).render())
}
