package tardelta

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-registry/outpost/internal/delta/bsdiff"
)

// encodeApply encodes target against bases, applies the delta and checks
// the result is byte-identical. It also checks the indexes: BuildIndex of
// every input covers it exactly, survives serialisation, and matches the
// index Encode returns for the target.
func encodeApply(t testing.TB, target []byte, bases [][]byte, opts Options) ([]byte, Stats) {
	t.Helper()
	var bs []Base
	var readers []SizedReaderAt
	for i, b := range bases {
		idx := checkIndex(t, b)
		if i%2 == 1 {
			// Exercise the serialised form as the sender's cache would.
			raw, err := idx.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			idx = new(Index)
			if err := idx.UnmarshalBinary(raw); err != nil {
				t.Fatal(err)
			}
		}
		bs = append(bs, Base{Index: idx, Data: bytes.NewReader(b)})
		readers = append(readers, bytes.NewReader(b))
	}
	var tidx Index
	opts.TargetIndex = &tidx
	var delta bytes.Buffer
	st, err := Encode(context.Background(), bytes.NewReader(target), bs, &delta, opts)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if st.EncodedBytes != int64(delta.Len()) || st.TargetBytes != int64(len(target)) {
		t.Fatalf("stats say %d bytes from %d, got %d from %d", st.EncodedBytes, st.TargetBytes, delta.Len(), len(target))
	}
	if got := st.CopyBytes + st.PatchIn + st.LiteralIn + st.HeaderIn; got != int64(len(target)) {
		t.Fatalf("stats account for %d of %d target bytes: %+v", got, len(target), st)
	}
	want, err := BuildIndex(bytes.NewReader(target))
	if err != nil {
		t.Fatal(err)
	}
	if !sameIndex(&tidx, want) {
		t.Fatalf("Encode's target index differs from BuildIndex's")
	}
	var out bytes.Buffer
	n, err := Apply(context.Background(), bytes.NewReader(delta.Bytes()), readers, &out)
	if err != nil {
		t.Fatalf("Apply: %v (stats %+v)", err, st)
	}
	if n != int64(len(target)) || !bytes.Equal(out.Bytes(), target) {
		t.Fatalf("Apply rebuilt %d bytes, differing from the %d-byte target at %d", n, len(target), firstDiff(out.Bytes(), target))
	}
	return delta.Bytes(), st
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func sameIndex(a, b *Index) bool {
	ma, _ := a.MarshalBinary()
	mb, _ := b.MarshalBinary()
	return bytes.Equal(ma, mb)
}

// checkIndex builds the index of data and verifies that its regions tile the
// stream and that their sums are right.
func checkIndex(t testing.TB, data []byte) *Index {
	t.Helper()
	idx, err := BuildIndex(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if idx.Size != int64(len(data)) {
		t.Fatalf("index size %d, data %d", idx.Size, len(data))
	}
	if err := idx.validate(); err != nil {
		t.Fatal(err)
	}
	region := func(r Region) []byte { return data[r.Offset : r.Offset+r.Size] }
	check := func(e *Entry) {
		if e.Header.Size > 0 && sha256.Sum256(region(e.Header)) != e.Header.Sum {
			t.Fatalf("%q: header sum wrong", e.Name)
		}
		if e.Data.Size > 0 && sha256.Sum256(region(e.Data)) != e.Data.Sum {
			t.Fatalf("%q: data sum wrong", e.Name)
		}
		for i, s := range e.Segments {
			lo := e.Data.Offset + int64(i)*SegmentSize
			hi := min(lo+SegmentSize, e.Data.Offset+e.Data.Size)
			if sha256.Sum256(data[lo:hi]) != s {
				t.Fatalf("%q: segment %d sum wrong", e.Name, i)
			}
		}
		pad := data[e.Data.Offset+e.Data.Size : e.Data.Offset+e.Data.Size+e.PadSize]
		if e.PadSize > 0 && allZero(pad) != e.PadZero {
			t.Fatalf("%q: pad zero flag wrong", e.Name)
		}
	}
	for i := range idx.Entries {
		check(&idx.Entries[i])
	}
	check(&idx.Trailer)
	raw, err := idx.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back Index
	if err := back.UnmarshalBinary(raw); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	if !sameIndex(idx, &back) || back.Size != idx.Size {
		t.Fatal("index does not survive serialisation")
	}
	for i := range idx.Entries {
		if idx.Entries[i].Header != back.Entries[i].Header || idx.Entries[i].Data != back.Entries[i].Data {
			t.Fatalf("entry %d regions differ after serialisation", i)
		}
	}
	return idx
}

// compareWithArchiveTar checks the index lines up with archive/tar's view
// of a valid archive: same entries, names, types, links and contents.
func compareWithArchiveTar(t *testing.T, data []byte, idx *Index) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	i := 0
	for ; ; i++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("archive/tar: %v", err)
		}
		if i >= len(idx.Entries) {
			t.Fatalf("index has %d entries, archive/tar more", len(idx.Entries))
		}
		e := &idx.Entries[i]
		if e.Name != h.Name || e.Type != h.Typeflag || e.Linkname != h.Linkname {
			t.Fatalf("entry %d: index %q %q -> %q, archive/tar %q %q -> %q", i, e.Name, e.Type, e.Linkname, h.Name, h.Typeflag, h.Linkname)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		if e.Sparse {
			if e.Data.Size == 0 && len(content) > 0 && !allZero(content) {
				t.Fatalf("%s: sparse entry without data", h.Name)
			}
			continue
		}
		if int64(len(content)) != e.Data.Size || (e.Data.Size > 0 && sha256.Sum256(content) != e.Data.Sum) {
			t.Fatalf("%s: content differs from archive/tar's (%d vs %d bytes)", h.Name, e.Data.Size, len(content))
		}
	}
	if i != len(idx.Entries) {
		t.Fatalf("index has %d entries, archive/tar %d", len(idx.Entries), i)
	}
}

func randTarOpts(rng *rand.Rand) tarOpts {
	o := tarOpts{format: []tar.Format{0, 0, tar.FormatPAX, tar.FormatGNU, tar.FormatUSTAR}[rng.IntN(5)]}
	if rng.IntN(4) == 0 {
		o.trailing = randData(rng, 1+rng.IntN(3000))
	}
	o.blocking = rng.IntN(3) == 0
	o.dirtyPad = rng.IntN(5) == 0
	o.globalPAX = rng.IntN(5) == 0
	o.noEOF = rng.IntN(10) == 0
	return o
}

func TestIndexMatchesArchiveTar(t *testing.T) {
	for seed := range 20 {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		tr := randomTree(rng, 50, 20<<10)
		o := randTarOpts(rng)
		o.trailing = nil // archive/tar would report garbage as an error
		data := buildTar(tr, o)
		idx := checkIndex(t, data)
		compareWithArchiveTar(t, data, idx)
	}
}

// TestSparseEntries checks crafted sparse files read back correctly through
// archive/tar (validating the generator) and index as opaque data.
func TestSparseEntries(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, typ := range []byte{'S', 'P', 'Q'} {
		for _, many := range []bool{false, true} {
			f := tfile{name: "dir/sparse-" + string(typ), typ: typ, mtime: 1700000000}
			f.data, f.frags = sparseData(rng, 300000)
			if many {
				f.frags = nil
				for off := int64(0); off+100 < int64(len(f.data)); off += 5000 {
					f.frags = append(f.frags, frag{off, 100})
				}
				clear(f.data)
				for _, fr := range f.frags {
					copy(f.data[fr.off:fr.off+fr.n], randData(rng, int(fr.n)))
				}
			}
			data := buildTar(tree{{name: "a", typ: '0', data: []byte("hello"), mode: 0o644}, f, {name: "z", typ: '0', data: []byte("bye"), mode: 0o644}}, tarOpts{})
			tr := tar.NewReader(bytes.NewReader(data))
			var got []byte
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("%c: archive/tar: %v", typ, err)
				}
				if h.Name == f.name {
					got, _ = io.ReadAll(tr)
				}
			}
			if !bytes.Equal(got, f.data) {
				t.Fatalf("%c: generator wrote a sparse file archive/tar reads differently (%d vs %d bytes)", typ, len(got), len(f.data))
			}
			idx := checkIndex(t, data)
			compareWithArchiveTar(t, data, idx)
			if len(idx.Entries) != 3 || !idx.Entries[1].Sparse || idx.Entries[1].Name != f.name {
				t.Fatalf("%c: sparse entry not indexed as such: %+v", typ, idx.Entries[1])
			}
			// Edit one fragment; the rest must still be found.
			g := f
			g.data = bytes.Clone(f.data)
			g.data[f.frags[0].off] ^= 0xff
			target := buildTar(tree{{name: "a", typ: '0', data: []byte("hello"), mode: 0o644}, g}, tarOpts{})
			_, st := encodeApply(t, target, [][]byte{data}, Options{})
			t.Logf("%c many=%v: sparse edit delta %d bytes (%+v)", typ, many, st.EncodedBytes, st)
		}
	}
}

func TestRoundTripRandom(t *testing.T) {
	cases := 60
	if testing.Short() || raceEnabled {
		cases = 12
	}
	for seed := range cases {
		rng := rand.New(rand.NewPCG(uint64(seed), 42))
		base := randomTree(rng, 10+rng.IntN(150), 100<<10)
		var bases [][]byte
		nb := rng.IntN(4)
		for i := range nb {
			switch i {
			case 0:
				bases = append(bases, buildTar(base, randTarOpts(rng)))
			case 1:
				bases = append(bases, buildTar(mutate(rng, base, 20), randTarOpts(rng)))
			default:
				bases = append(bases, buildTar(randomTree(rng, 30, 50<<10), randTarOpts(rng)))
			}
		}
		target := buildTar(mutate(rng, base, 1+rng.IntN(40)), randTarOpts(rng))
		delta, st := encodeApply(t, target, bases, Options{})
		if seed < 5 {
			t.Logf("seed %d: %d bases, target %d bytes -> delta %d (copy %d, patch %d->%d, literal %d->%d, header %d->%d)",
				seed, nb, len(target), len(delta), st.CopyBytes, st.PatchIn, st.PatchOut, st.LiteralIn, st.LiteralOut, st.HeaderIn, st.HeaderOut)
		}
	}
}

// TestRoundTripOddStreams covers inputs that are not (complete) tars.
func TestRoundTripOddStreams(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	tr := randomTree(rng, 40, 30<<10)
	good := buildTar(tr, tarOpts{})
	cases := map[string][]byte{
		"empty":          {},
		"one byte":       {0},
		"garbage":        randData(rng, 100000),
		"zeros":          make([]byte, 20000),
		"truncated data": good[:len(good)/2+77],
		"truncated hdr":  good[:blockSize+100],
		"no eof":         buildTar(tr, tarOpts{noEOF: true}),
		"trailing":       buildTar(tr, tarOpts{trailing: randData(rng, 7000), blocking: true}),
		"bad checksum": func() []byte {
			b := bytes.Clone(good)
			b[blockSize*3+20] ^= 1 // may hit content or a header
			return b
		}(),
		"huge size field": func() []byte {
			h := rawHeader("x", '0', 1<<40, 0o644, 0, false)
			setChecksum(h)
			return append(h, []byte("short")...)
		}(),
		"base256 size": func() []byte {
			h := rawHeader("y", '0', 0, 0o644, 0, false)
			clear(h[124:136])
			h[124] = 0x80
			h[135] = 10
			setChecksum(h)
			return padTo(append(h, "0123456789"...), false)
		}(),
		"oversized pax": func() []byte {
			h := rawHeader("PaxHeaders/big", 'x', 2<<20, 0o644, 0, false)
			setChecksum(h)
			return append(padTo(append(h, randData(rng, 2<<20)...), false), good...)
		}(),
		"global pax then eof": append(paxBlock("g", [][2]string{{"comment", "x"}}), make([]byte, 1024)...),
		"dirty padding":       buildTar(tr, tarOpts{dirtyPad: true}),
	}
	for name, target := range cases {
		t.Run(name, func(t *testing.T) {
			checkIndex(t, target)
			encodeApply(t, target, nil, Options{})
			encodeApply(t, target, [][]byte{good}, Options{})
			encodeApply(t, target, [][]byte{target}, Options{})
		})
	}
}

func TestUnchangedTreeIsTiny(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	tr := randomTree(rng, 1000, 8<<10)
	data := buildTar(tr, tarOpts{})
	delta, st := encodeApply(t, data, [][]byte{data}, Options{})
	t.Logf("unchanged %d entries, %d bytes: delta %d bytes, %d copy ops", st.Entries, len(data), len(delta), st.CopyOps)
	if len(delta) > 300 {
		t.Fatalf("delta of an unchanged tree is %d bytes", len(delta))
	}
	// The same tree in a second base, after an unrelated first one.
	other := buildTar(randomTree(rng, 100, 8<<10), tarOpts{})
	delta, _ = encodeApply(t, data, [][]byte{other, data}, Options{})
	if len(delta) > 300 {
		t.Fatalf("delta of an unchanged tree in base 1 is %d bytes", len(delta))
	}
}

func TestRenamesAndDuplicatesAreCheap(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	tr := randomTree(rng, 500, 64<<10)
	base := buildTar(tr, tarOpts{})
	moved := tr.clone()
	for i := range moved {
		if moved[i].typ == '0' {
			moved[i].name = "renamed/" + moved[i].name
		}
	}
	// Reverse the order too: copies can no longer merge into runs.
	for i, j := 0, len(moved)-1; i < j; i, j = i+1, j-1 {
		moved[i], moved[j] = moved[j], moved[i]
	}
	target := buildTar(moved, tarOpts{})
	delta, st := encodeApply(t, target, [][]byte{base}, Options{})
	t.Logf("%d entries renamed and reordered (%d bytes): delta %d bytes (%.3f%%), literal %d", st.Entries, len(target), len(delta), 100*float64(len(delta))/float64(len(target)), st.LiteralIn)
	if st.LiteralIn > 0 || st.PatchIn > 0 {
		t.Fatalf("renamed contents were not copied: %+v", st)
	}
	if len(delta) > len(target)/100 {
		t.Fatalf("rename delta too large: %d", len(delta))
	}
}

// TestLargeFileSmallEdit: one byte changed in a 50 MiB file costs a small
// patch of one segment; the other segments are copied.
func TestLargeFileSmallEdit(t *testing.T) {
	if testing.Short() {
		t.Skip("large")
	}
	rng := rand.New(rand.NewPCG(9, 9))
	big := binData(rng, 50<<20)
	small := tree{{name: "etc/conf", typ: '0', data: textData(rng, 3000), mode: 0o644}}
	base := buildTar(append(small.clone(), tfile{name: "usr/lib/big.so", typ: '0', data: big, mode: 0o755, mtime: 1}), tarOpts{})
	edited := bytes.Clone(big)
	edited[len(edited)/2+12345] ^= 0x40
	target := buildTar(append(small.clone(), tfile{name: "usr/lib/big.so", typ: '0', data: edited, mode: 0o755, mtime: 2}), tarOpts{})
	delta, st := encodeApply(t, target, [][]byte{base}, Options{})
	t.Logf("1-byte edit in a 50 MiB file: delta %d bytes (patch %d -> %d, literal %d, copy %d)", len(delta), st.PatchIn, st.PatchOut, st.LiteralIn, st.CopyBytes)
	if st.CopyBytes < int64(len(big))-SegmentSize/2 || len(delta) > 300 {
		t.Fatalf("1-byte edit costs %d bytes: %+v", len(delta), st)
	}

	if raceEnabled {
		return // the rest adds nothing the race detector would look at
	}

	// Insert bytes near the start: every segment shifts; anchors realign
	// the copies.
	shifted := append(append(bytes.Clone(big[:1000]), "INSERTED"...), big[1000:]...)
	target = buildTar(append(small.clone(), tfile{name: "usr/lib/big.so", typ: '0', data: shifted, mode: 0o755, mtime: 2}), tarOpts{})
	delta, st = encodeApply(t, target, [][]byte{base}, Options{})
	t.Logf("8 bytes inserted at 1000 in a 50 MiB file: delta %d bytes (patch %d -> %d)", len(delta), st.PatchIn, st.PatchOut)
	if len(delta) > 20000 {
		t.Fatalf("shifted large file costs %d bytes", len(delta))
	}

	// The same file renamed: found by its first segment.
	target = buildTar(append(small.clone(), tfile{name: "opt/big-renamed.so", typ: '0', data: big, mode: 0o755, mtime: 1}), tarOpts{})
	delta, st = encodeApply(t, target, [][]byte{base}, Options{})
	t.Logf("50 MiB file renamed: delta %d bytes", len(delta))
	if len(delta) > 1000 || st.CopyBytes < int64(len(big)) {
		t.Fatalf("renamed large file costs %d bytes: %+v", len(delta), st)
	}
}

func TestApplyRejectsWrongBases(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	base := buildTar(randomTree(rng, 50, 10<<10), tarOpts{})
	target := buildTar(mutate(rng, randomTree(rand.New(rand.NewPCG(10, 10)), 50, 10<<10), 5), tarOpts{})
	delta, _ := encodeApply(t, target, [][]byte{base}, Options{})
	_, err := Apply(context.Background(), bytes.NewReader(delta), nil, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "1 bases, 0 given") {
		t.Fatalf("missing base: %v", err)
	}
	_, err = Apply(context.Background(), bytes.NewReader(delta), []SizedReaderAt{bytes.NewReader(base[:len(base)-1])}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "base 0 has") {
		t.Fatalf("wrong base: %v", err)
	}
	// Same size, different content: the checksum catches it.
	other := bytes.Clone(base)
	for i := range other {
		other[i] ^= 0x55
	}
	_, err = Apply(context.Background(), bytes.NewReader(delta), []SizedReaderAt{bytes.NewReader(other)}, io.Discard)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong base content: %v", err)
	}
}

// craftDelta assembles a delta by hand, for error paths the encoder never
// produces.
func craftDelta(baseSizes []int64, ops []byte, hdr, lit []byte, tail []byte) []byte {
	d := []byte(deltaMagic)
	d = append(d, deltaVersion, 0)
	d = appendUvarint(d, uint64(len(baseSizes)))
	for _, s := range baseSizes {
		d = appendUvarint(d, uint64(s))
	}
	d = append(d, recBlock)
	for _, s := range [][]byte{ops, hdr, lit} {
		d = appendUvarint(d, uint64(len(s)))
		d = appendUvarint(d, uint64(len(s)))
		d = append(d, s...)
	}
	return append(d, tail...)
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func TestApplyErrorMessages(t *testing.T) {
	base := bytes.Repeat([]byte("b"), 1000)
	bases := []SizedReaderAt{bytes.NewReader(base), bytes.NewReader(base)}
	sizes := []int64{1000, 1000}
	for _, c := range []struct {
		name  string
		delta []byte
		want  string
	}{
		{"copy base", craftDelta(sizes, []byte{opCopy, 3, 0, 10}, nil, nil, nil), "op 1: copy from base 3 out of range (2 bases)"},
		{"copy overrun", craftDelta(sizes, []byte{opCopy, 0, 0xd2, 0x0f, 100}, nil, nil, nil), "op 1: copy offset +1001 from 0 outside base 0"},
		{"copy negative", craftDelta(sizes, []byte{opCopy, 1, 1, 10}, nil, nil, nil), "outside base 1"},
		{"copy length", craftDelta(sizes, []byte{opCopy, 0, 0, 0xe9, 0x07}, nil, nil, nil), "op 1: copy of 1001 bytes at 0 overruns base 0"},
		{"header underrun", craftDelta(sizes, []byte{opHeader, 5}, []byte("abc"), nil, nil), "op 1: header of 5 bytes, 3 left"},
		{"unused literal", craftDelta(sizes, []byte{opHeader, 3}, []byte("abc"), []byte("x"), nil), "1 literal bytes left unused"},
		{"unknown op", craftDelta(sizes, []byte{opHeader, 3, 0x77}, []byte("abc"), nil, nil), "op 2: unknown op 0x77"},
		{"truncated op", craftDelta(sizes, []byte{opPatch, 0, 0}, nil, nil, nil), "op 1: truncated patch"},
		{"patch limits", craftDelta(sizes, []byte{opPatch, 0, 0, 10, 0x80, 0x80, 0x80, 0x10, 5}, nil, nil, nil), "patch output of 33554432 bytes"},
		{"patch garbage", craftDelta(sizes, []byte{opPatch, 0, 0, 10, 10, 3}, nil, nil, []byte{1, 2, 3}), "op 1: patch against base 0"},
		{"no end", craftDelta(sizes, []byte{opHeader, 3}, []byte("abc"), nil, nil), "truncated delta"},
		{"bad end size", craftDelta(sizes, []byte{opHeader, 3}, []byte("abc"), nil, []byte{recEnd, 4, 0, 0, 0, 0}), "rebuilt 3 bytes, the delta describes 4"},
		{"bad crc", craftDelta(sizes, []byte{opHeader, 3}, []byte("abc"), nil, []byte{recEnd, 3, 0, 0, 0, 0}), "CRC-32C"},
		{"record", craftDelta(sizes, []byte{opHeader, 3}, []byte("abc"), nil, []byte{'Z'}), "unknown record type 0x5a"},
		{"magic", []byte("NOPE\x01\x00\x00"), "bad magic"},
		{"version", []byte("OTDL\x09\x00\x00"), "unsupported delta version 9"},
		{"section limit", append([]byte("OTDL\x01\x00\x00B"), 0x80, 0x80, 0x80, 0x08, 0), "ops section of 16777216 bytes exceeds limit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bs := bases
			if bytes.HasPrefix(c.delta, []byte("OTDL\x01\x00\x00")) {
				bs = nil
			}
			_, err := Apply(context.Background(), bytes.NewReader(c.delta), bs, io.Discard)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%v does not match ErrCorrupt", err)
			}
		})
	}
}

func TestApplyCancel(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	data := buildTar(randomTree(rng, 20, 10<<10), tarOpts{})
	delta, _ := encodeApply(t, data, [][]byte{data}, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Apply(ctx, bytes.NewReader(delta), []SizedReaderAt{bytes.NewReader(data)}, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Apply: %v", err)
	}
	if _, err := Encode(ctx, bytes.NewReader(data), nil, io.Discard, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Encode: %v", err)
	}
}

func TestIndexUnmarshalRejectsDamage(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	data := buildTar(randomTree(rng, 60, 40<<10), tarOpts{})
	idx := checkIndex(t, data)
	raw, _ := idx.MarshalBinary()
	for i := 0; i < 2000; i++ {
		b := bytes.Clone(raw)
		switch i % 3 {
		case 0:
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		case 1:
			b = b[:rng.IntN(len(b))]
		case 2:
			b = append(b[:rng.IntN(len(b))], randData(rng, rng.IntN(100))...)
		}
		var x Index
		if err := x.UnmarshalBinary(b); err == nil {
			if err := x.validate(); err != nil {
				t.Fatalf("accepted an invalid index: %v", err)
			}
		} else if !errors.Is(err, ErrBadIndex) {
			t.Fatalf("error %v is not ErrBadIndex", err)
		}
	}
}

type failWriter struct{ left int }

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.left {
		n := f.left
		f.left = 0
		return n, errors.New("disk full")
	}
	f.left -= len(p)
	return len(p), nil
}

func TestEncodeWriteError(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	data := buildTar(randomTree(rng, 200, 64<<10), tarOpts{})
	for _, left := range []int{0, 3, 100, 5000} {
		_, err := Encode(context.Background(), bytes.NewReader(data), nil, &failWriter{left: left}, Options{Level: 1})
		if err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("left %d: %v", left, err)
		}
	}
}

// TestVersionedDirectory: a tree moved from python3.11/ to python3.12/ with
// some files edited is patched against the old paths (same path up to
// digits) and its headers are coded against the old headers.
func TestVersionedDirectory(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 14))
	var tr tree
	for i := range 300 {
		tr = append(tr, tfile{name: "usr/lib/python3.11/site/mod" + strings.Repeat("x", i%7) + "_" + strconv.Itoa(i) + ".py",
			typ: '0', data: textData(rng, 200+rng.IntN(20000)), mode: 0o644, mtime: 1700000000})
	}
	base := buildTar(tr, tarOpts{})
	moved := tr.clone()
	edited := 0
	for i := range moved {
		moved[i].name = strings.Replace(moved[i].name, "python3.11", "python3.12", 1)
		moved[i].mtime += 86400
		if i%3 == 0 {
			d := bytes.Clone(moved[i].data)
			d[len(d)/2] = '#'
			moved[i].data = d
			edited++
		}
	}
	target := buildTar(moved, tarOpts{})
	delta, st := encodeApply(t, target, [][]byte{base}, Options{})
	t.Logf("versioned move, %d of %d files edited (%d bytes): delta %d bytes, %d patches, %d header bytes as XOR", edited, len(moved), len(target), len(delta), st.Patches, st.HeaderXor)
	if st.LiteralIn > 0 || st.Patches != int64(edited) || st.HeaderXor < int64(len(moved))*blockSize {
		t.Fatalf("versioned move not matched: %+v", st)
	}
	if len(delta) > len(target)/200 {
		t.Fatalf("versioned move delta too large: %d", len(delta))
	}
}

// TestManyBlocks drives the block limits: more literal and header bytes than
// one block holds, and enough patch payload to close blocks early.
func TestManyBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 15))
	var base tree
	for i := range 40 {
		base = append(base, tfile{name: "lib/f" + strconv.Itoa(i), typ: '0', data: textData(rng, 300<<10), mode: 0o644})
	}
	target := base.clone()
	for i := range target {
		d := bytes.Clone(target[i].data)
		for p := rng.IntN(64); p < len(d); p += 8 + rng.IntN(16) {
			d[p] ^= 0x20 // scattered edits: patches of a good fraction of the input
		}
		target[i].data = d
		target[i].mtime = 5
	}
	n := 6000
	if raceEnabled {
		n = 2000
	}
	for i := range n {
		// Many small new files: over 4 MiB of headers, and literals.
		target = append(target, tfile{name: longName(rng, 20+rng.IntN(200)) + strconv.Itoa(i), typ: '0', data: randData(rng, rng.IntN(3000)), mode: 0o600})
	}
	defer func(l int) { patchBlockLimit = l }(patchBlockLimit)
	patchBlockLimit = 32 << 10 // the edits' bsdiff patches are about 10 KiB a file
	delta, st := encodeApply(t, buildTar(target, tarOpts{format: tar.FormatPAX}), [][]byte{buildTar(base, tarOpts{})}, Options{Level: 1})
	t.Logf("%d blocks, %d patches (%d -> %d), literal %d, header %d: delta %d bytes", st.Blocks, st.Patches, st.PatchIn, st.PatchOut, st.LiteralIn, st.HeaderIn, len(delta))
	if st.Blocks < 10 || st.Patches < 40 {
		t.Fatalf("expected several blocks and a patch per file: %+v", st)
	}
}

func TestCommonPrefixSuffix(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 16))
	for range 2000 {
		a := randData(rng, rng.IntN(40))
		b := bytes.Clone(a)
		if len(b) > 0 && rng.IntN(4) > 0 {
			b[rng.IntN(len(b))] ^= 1
		}
		b = b[:rng.IntN(len(b)+1)]
		p := 0
		for p < min(len(a), len(b)) && a[p] == b[p] {
			p++
		}
		if got := bsdiff.CommonPrefix(a, b); got != p {
			t.Fatalf("bsdiff.CommonPrefix(%x, %x) = %d, want %d", a, b, got, p)
		}
		s := 0
		for s < min(len(a), len(b)) && a[len(a)-1-s] == b[len(b)-1-s] {
			s++
		}
		if got := commonSuffix(a, b); got != s {
			t.Fatalf("commonSuffix(%x, %x) = %d, want %d", a, b, got, s)
		}
	}
}

// TestDeterministic: the same inputs give the same delta bytes whatever the
// number of compressing goroutines, so deltas can be cached by digest. A
// small patch limit closes blocks often, so that the pipeline has several to
// order; it runs under the race detector in make unit (the package's other
// tests run without it).
func TestDeterministic(t *testing.T) {
	defer func(l int) { patchBlockLimit = l }(patchBlockLimit)
	patchBlockLimit = 1 << 10
	rng := rand.New(rand.NewPCG(17, 17))
	tr := randomTree(rng, 200, 64<<10)
	base := buildTar(tr, tarOpts{})
	target := buildTar(mutate(rng, tr, 40), tarOpts{})
	idx, err := BuildIndex(bytes.NewReader(base))
	if err != nil {
		t.Fatal(err)
	}
	var first []byte
	for _, c := range []int{1, 2, 3, 1} {
		var d bytes.Buffer
		st, err := Encode(context.Background(), bytes.NewReader(target), []Base{{Index: idx, Data: bytes.NewReader(base)}}, &d, Options{Concurrency: c})
		if err != nil {
			t.Fatal(err)
		}
		if st.Blocks < 4 {
			t.Fatalf("%d blocks: too few to test their order", st.Blocks)
		}
		if first == nil {
			first = d.Bytes()
		} else if !bytes.Equal(first, d.Bytes()) {
			t.Fatalf("concurrency %d gives a different delta", c)
		}
	}
}
