// Package exediff makes bsdiff patches of rebuilt executables small by predicting where the addresses and offsets in the old file point in the new one.
package exediff

// Method
//
// A one-line change to a Go program moves every function after it, so
// every call, jump and RIP-relative operand that crosses the change, every
// pointer in its data, and every offset in its pclntab (function entries,
// pc-value tables, names) and type data changes. bsdiff codes each as a
// difference: two Go builds one commit apart still make a 281 KB patch, all
// but 29 KB of it such differences (docs/performance.md).
//
// Those values are not new information: they follow from how the code moved.
// Diff first aligns the files (bsdiff.Align), which gives a map from old
// file offsets to new ones. Both sides then find, in the old file only, the
// places that hold an address or offset (a "slot"): x86-64 rel32 and
// RIP-relative operands (decoded from executable sections), arm64 branches and
// ADRP address pairs, 8-byte words in data sections whose value is an
// address inside the image, and, for Go binaries, the offsets of the
// runtime's own tables: the pclntab's function table and function records,
// the funcdata they name (stack objects, inline trees), and the type data
// (each type descriptor's name and pointer type, its method table's names,
// types and code offsets, an interface's methods). Each slot's value is
// rewritten to where its target moved, giving a predicted old file; the
// patch is a bsdiff from that prediction to the new file. Where a prediction
// is wrong, the difference is no larger than before; where it is right, the
// difference vanishes.
//
// The child repeats the prediction from the old file and what the patch
// header carries (the map and the new file's section layout), and a CRC-32C
// of the predictions in the header tells it when its model differs from
// the parent's (another decoder release, say): then Apply fails with
// ErrCorrupt instead of writing wrong bytes, and the caller fetches the
// file another way. Nothing here can make a wrong output go unnoticed:
// callers still verify what they rebuild (tardelta's CRC, the layer
// digest).
//
// Unstripped binaries keep their DWARF in zlib-compressed sections, which
// a small change alters throughout: those are patched decompressed
// (compressed.go), and the offsets and addresses in their DWARF are
// predicted too (dwarf.go).
//
// Measured on two 26 MB builds of this repository's outpost binary: one
// commit apart, 281 KB with bsdiff alone, 5.9 KB here; 20 commits apart,
// 1.19 MB against 353 KB (arm64 builds: 284 KB against 5.8 KB, 1.23 MB
// against 327 KB; unstripped, 37 MB, one commit apart: 7.35 MB with the
// DWARF patched compressed, 327 KB decompressed, 31.3 KB with its
// offsets and addresses predicted by dwarf.go). The prediction costs about 0.2 s per 26 MB on
// each side (half of it x86 decoding, by the length decoder of x86len.go);
// Diff also runs bsdiff's search twice.
//
// Patch layout (uv: unsigned LEB128 varint; sv: zigzag varint):
//
//	patch  = "OXD2" hdrLen:uv hdr[hdrLen] bsdiff-patch
//	hdr    = one zstd frame of:
//	         crc:u32le nsec:uv (nobits:u8 addr:uv off:uv size:uv)*nsec
//	         nbase:uv base:uv*nbase npiece:uv (gap:uv shift:sv n:uv)*npiece
//	         nold:uv off:uv*nold nnew:uv (off:uv size:uv raw:uv level:sv)*nnew
//
// The sections are the new file's allocated ones in file order, the bases
// its table bases (see the class constants; 0: unknown), and the pieces the
// map: piece k maps old offsets [o, o+n) to [o+s, o+s+n), with o the end of
// the previous piece plus gap and s the previous piece's shift plus shift.
// Then the compressed sections (compressed.go) the bsdiff patch sees
// expanded: the old file's by offset, the new file's with their size in
// the file, the size they decompress to and the zlib level that
// compresses them back. The bsdiff patch turns the predicted old file,
// expanded, into the new file, expanded.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/outpost-registry/outpost/internal/delta/bsdiff"
	"github.com/outpost-registry/outpost/internal/iocount"
)

const (
	// Magic starts every patch. Its digit counts the models: a node
	// whose model is older refuses a newer patch by its magic, before
	// predicting anything. Any change to what the model predicts is a
	// new model (TestModelGolden says when): see tardelta's opExediff
	// for what else must change with it.
	Magic = "OXD3"
	// MaxSize bounds the old and new files Diff and Apply take: the
	// child holds a prediction per moved slot (see maxPreds), and the
	// parent both files, the prediction and bsdiff's index (about 10 bytes
	// per byte of old).
	MaxSize = 128 << 20
	// maxHeader bounds the decoded header (sections and pieces).
	maxHeader = 16 << 20
	// minPiece: aligned regions shorter than this are left out of the map;
	// they are coincidences more often than moved code, and cost map bytes.
	minPiece = 16
)

// ErrNotExecutable: Diff was given a file it does not model (not a 64-bit
// little-endian ELF file).
var ErrNotExecutable = errors.New("exediff: not a 64-bit little-endian ELF file")

// ErrCorrupt is matched by every error Apply returns for a patch that is
// malformed or whose predictions this node does not reproduce.
var ErrCorrupt = errors.New("exediff: corrupt patch")

func corruptf(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// DiffMemory is what Diff may take, the two files included, for files of
// these sizes: about 12 bytes per byte of the larger one. Stripped
// executables take less (7.9 measured on a 26 MB Go binary, with a soft
// memory limit so that the figure is the live heap, not the collector's
// slack); unstripped ones, whose compressed DWARF Diff expands, take that
// (11.6 on a 37 MB one). Callers with a memory budget check it first.
func DiffMemory(oldLen, newLen int64) int64 { return 12 * max(oldLen, newLen) }

// Diff returns a patch that turns old into new. It fails with
// ErrNotExecutable when either file is not one this package models, so the
// caller can use a plain bsdiff instead.
func Diff(old, new []byte) ([]byte, error) {
	if len(old) > MaxSize || len(new) > MaxSize {
		return nil, fmt.Errorf("exediff: files of %d and %d bytes exceed %d", len(old), len(new), MaxSize)
	}
	om, err := readModel(bytes.NewReader(old), int64(len(old)))
	if err != nil {
		return nil, err
	}
	nm, err := readModel(bytes.NewReader(new), int64(len(new)))
	if err != nil {
		return nil, err
	}
	// Both files expanded (compressed.go): the map, the prediction and the
	// patch all work on the decompressed sections. Both models move to
	// the expanded coordinates even when nothing is expanded, as Apply's
	// does: that also places uncompressed DWARF.
	var h header
	src, dst := old, new
	var oz []zsection
	if zs, err := om.compressedSections(bytes.NewReader(old)); err == nil && len(zs) > 0 {
		src, oz = expandBytes(old, zs, nil)
		for _, z := range oz {
			h.oldZ = append(h.oldZ, z.off)
		}
	}
	if zs, err := nm.compressedSections(bytes.NewReader(new)); err == nil && len(zs) > 0 {
		dst, h.newZ = expandBytes(new, zs, reproduces)
	}
	if len(src) > MaxSize || len(dst) > MaxSize {
		// Expanded, the files would cost the parent more memory than
		// MaxSize allows for: patch them as they are.
		src, dst, oz, h.oldZ, h.newZ = old, new, nil, nil, nil
	}
	om.expand(oz)
	nm.expand(h.newZ)
	matches, err := bsdiff.Align(src, dst)
	if err != nil {
		return nil, err
	}
	h.pieces = piecesOf(matches)
	preds, err := om.predict(bytes.NewReader(src), nm.layout, h.pieces)
	if err != nil {
		return nil, err
	}
	if len(h.oldZ) == 0 {
		src = bytes.Clone(old) // the caller's
	}
	for _, p := range preds {
		p.put(src, 0)
	}
	h.crc, h.layout = predsCRC(preds), nm.layout
	bp, err := bsdiff.Diff(src, dst)
	if err != nil {
		return nil, err
	}
	hdr := encodeHeader(h)
	enc, err := getEncoder()
	if err != nil {
		return nil, err
	}
	defer encoders.Put(enc)
	z := enc.EncodeAll(hdr, nil)
	out := append([]byte(Magic), binary.AppendUvarint(nil, uint64(len(z)))...)
	out = append(out, z...)
	return append(out, bp...), nil
}

// NewSize returns the size of the file the patch produces.
func NewSize(patch []byte) (int64, error) {
	h, bp, err := readPatch(patch, MaxSize)
	if err != nil {
		return 0, err
	}
	return newSize(h, bp)
}

// newSize returns the size of the new file: the bsdiff patch makes its
// expanded form.
func newSize(h header, bp []byte) (int64, error) {
	n, err := bsdiff.NewSize(bp)
	if err != nil {
		return 0, corruptf("%v", err)
	}
	for _, z := range h.newZ {
		n -= z.growth()
	}
	if n < 0 || (len(h.newZ) > 0 && uint64(n) < h.newZ[len(h.newZ)-1].off+h.newZ[len(h.newZ)-1].size) {
		return 0, corruptf("the new file's compressed sections lie past its end")
	}
	return n, nil
}

// readPatch splits a patch and decodes its header.
func readPatch(patch []byte, oldSize int64) (header, []byte, error) {
	z, bp, err := split(patch)
	if err != nil {
		return header{}, nil, err
	}
	dec, err := getDecoder()
	if err != nil {
		return header{}, nil, err
	}
	hdr, err := dec.DecodeAll(z, nil)
	decoders.Put(dec)
	if err != nil {
		return header{}, nil, corruptf("header: %v", err)
	}
	h, err := decodeHeader(hdr, oldSize)
	return h, bp, err
}

// Apply writes to w the file patch makes from old (oldSize bytes, read
// through old as needed) and returns its size.
func Apply(old io.ReaderAt, oldSize int64, patch []byte, w io.Writer) (int64, error) {
	if oldSize > MaxSize {
		return 0, corruptf("old file of %d bytes exceeds %d", oldSize, MaxSize)
	}
	// The map is of the expanded files: at most maxExpand larger.
	h, bp, err := readPatch(patch, oldSize+maxExpand)
	if err != nil {
		return 0, err
	}
	size, err := newSize(h, bp)
	if err != nil {
		return 0, err
	}
	allocEnd := uint64(0)
	for _, s := range h.layout.secs {
		if !s.nobits {
			allocEnd = max(allocEnd, s.off+s.size)
		}
	}
	if len(h.newZ) > 0 && h.newZ[0].off < allocEnd {
		return 0, corruptf("the new file's compressed section at %#x lies among its allocated sections", h.newZ[0].off)
	}
	om, err := readModel(old, oldSize)
	if err != nil {
		return 0, corruptf("the old file: %v", err)
	}
	src := old
	var oz []zsection
	if len(h.oldZ) > 0 {
		if oz, err = pickSections(om, old, h.oldZ); err != nil {
			return 0, err
		}
		e, err := newExpandedReader(old, oldSize, oz)
		if err != nil {
			return 0, err
		}
		defer e.Close()
		src = e
	}
	om.expand(oz)
	if k := len(h.pieces); k > 0 && h.pieces[k-1].old+h.pieces[k-1].n > om.size {
		return 0, corruptf("the map runs past the old file's %d bytes", om.size)
	}
	preds, err := om.predict(src, h.layout, h.pieces)
	if err != nil {
		return 0, err
	}
	if got := predsCRC(preds); got != h.crc {
		return 0, corruptf("this node predicts the old file's addresses differently from the patch's maker (CRC %08x, want %08x)", got, h.crc)
	}
	c := &contractor{w: iocount.Writer{W: w}, zs: h.newZ}
	if _, err := bsdiff.Apply(&predictedReader{r: src, preds: preds}, om.size, bp, c); err != nil {
		if errors.Is(err, bsdiff.ErrCorrupt) {
			err = corruptf("%v", err)
		}
		return c.out(), err
	}
	if err := c.done(); err != nil {
		return c.out(), err
	}
	if c.out() != size {
		return c.out(), corruptf("wrote %d bytes, not the new file's %d", c.out(), size)
	}
	return size, nil
}

// pickSections returns the old file's compressed sections at offs.
func pickSections(om *model, old io.ReaderAt, offs []uint64) ([]zsection, error) {
	all, err := om.compressedSections(old)
	if err != nil {
		return nil, corruptf("the old file: %v", err)
	}
	var out []zsection
	for _, off := range offs {
		i := sort.Search(len(all), func(i int) bool { return all[i].off >= off })
		if i == len(all) || all[i].off != off || (len(out) > 0 && out[len(out)-1].off >= off) {
			return nil, corruptf("no compressed section at %#x of the old file, or out of order", off)
		}
		out = append(out, all[i])
	}
	return out, nil
}

// split returns the compressed header and the bsdiff patch.
func split(patch []byte) (hdr, rest []byte, err error) {
	if !bytes.HasPrefix(patch, []byte(Magic)) {
		return nil, nil, corruptf("no %q magic", Magic)
	}
	p := patch[len(Magic):]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return nil, nil, corruptf("header length")
	}
	p = p[k:]
	return p[:n], p[n:], nil
}

// header is what a patch carries besides the bsdiff patch: the CRC of
// the predictions, the new file's layout, the map, and the compressed
// sections expanded in the old file (their offsets) and in the new one.
type header struct {
	crc    uint32
	layout layout
	pieces []piece
	oldZ   []uint64
	newZ   []zsection
}

func encodeHeader(h header) []byte {
	l := h.layout
	b := binary.LittleEndian.AppendUint32(nil, h.crc)
	b = binary.AppendUvarint(b, uint64(len(l.secs)))
	for _, s := range l.secs {
		nb := byte(0)
		if s.nobits {
			nb = 1
		}
		b = append(b, nb)
		b = binary.AppendUvarint(b, s.addr)
		b = binary.AppendUvarint(b, s.off)
		b = binary.AppendUvarint(b, s.size)
	}
	b = binary.AppendUvarint(b, uint64(len(l.bases)))
	for _, v := range l.bases {
		b = binary.AppendUvarint(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(h.pieces)))
	end, shift := int64(0), int64(0)
	for _, p := range h.pieces {
		b = binary.AppendUvarint(b, uint64(p.old-end))
		b = binary.AppendVarint(b, p.shift-shift)
		b = binary.AppendUvarint(b, uint64(p.n))
		end, shift = p.old+p.n, p.shift
	}
	b = binary.AppendUvarint(b, uint64(len(h.oldZ)))
	for _, off := range h.oldZ {
		b = binary.AppendUvarint(b, off)
	}
	b = binary.AppendUvarint(b, uint64(len(h.newZ)))
	for _, z := range h.newZ {
		b = binary.AppendUvarint(b, z.off)
		b = binary.AppendUvarint(b, z.size)
		b = binary.AppendUvarint(b, z.rawSize)
		b = binary.AppendVarint(b, int64(z.level))
	}
	return b
}

// maxSections bounds the sections a header may describe.
const maxSections = 4096

func decodeHeader(b []byte, oldSize int64) (h header, err error) {
	if len(b) < 4 {
		return h, corruptf("header of %d bytes", len(b))
	}
	h.crc = binary.LittleEndian.Uint32(b)
	l := &h.layout
	r := reader{b: b[4:], ok: true}
	ns := r.uv()
	if ns > maxSections {
		return h, corruptf("%d sections", ns)
	}
	for range ns {
		var s section
		if f := r.byte(); f > 1 {
			return h, corruptf("section flag %d", f)
		} else {
			s.nobits = f == 1
		}
		s.addr, s.off, s.size = r.uv(), r.uv(), r.uv()
		if s.addr+s.size < s.addr || s.off+s.size < s.off {
			return h, corruptf("section at %#x overflows", s.addr)
		}
		l.secs = append(l.secs, s)
	}
	if nb := r.uv(); nb != uint64(len(l.bases)) {
		return h, corruptf("%d table bases, want %d", nb, len(l.bases))
	}
	for i := range l.bases {
		l.bases[i] = r.uv()
	}
	np := r.uv()
	if np > uint64(oldSize)/minPiece+1 {
		return h, corruptf("%d pieces for %d old bytes", np, oldSize)
	}
	end, shift := int64(0), int64(0)
	for range np {
		gap, ds, n := r.uv(), r.sv(), r.uv()
		if !r.ok || gap > uint64(oldSize) || n == 0 || n > uint64(oldSize) {
			return h, corruptf("piece %d", len(h.pieces))
		}
		p := piece{old: end + int64(gap), shift: shift + ds, n: int64(n)}
		if p.old+p.n > oldSize {
			return h, corruptf("piece at %d runs past the old file's %d bytes", p.old, oldSize)
		}
		h.pieces = append(h.pieces, p)
		end, shift = p.old+p.n, p.shift
	}
	no := r.uv()
	if no > maxSections {
		return h, corruptf("%d compressed old sections", no)
	}
	for range no {
		h.oldZ = append(h.oldZ, r.uv())
	}
	nn := r.uv()
	if nn > maxSections {
		return h, corruptf("%d compressed new sections", nn)
	}
	zend, total := uint64(0), uint64(0)
	for k := range nn {
		z := zsection{off: r.uv(), size: r.uv(), rawSize: r.uv(), level: int(r.sv())}
		total += z.rawSize
		if !r.ok || z.off < zend || z.size <= chdrSize || z.off+z.size < z.off || z.rawSize == 0 || total > maxExpand || z.level < -2 || z.level > 9 {
			return h, corruptf("compressed new section %d", k)
		}
		zend = z.off + z.size
		h.newZ = append(h.newZ, z)
	}
	if !r.ok || len(r.b) != 0 {
		return h, corruptf("header: truncated or %d bytes left over", len(r.b))
	}
	return h, nil
}

// reader decodes varints from a header, remembering the first failure.
type reader struct {
	b  []byte
	ok bool
}

func (r *reader) uv() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) sv() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) fail() { r.ok, r.b = false, nil }

var (
	encoders sync.Pool
	decoders sync.Pool
)

func getEncoder() (*zstd.Encoder, error) {
	if e, ok := encoders.Get().(*zstd.Encoder); ok {
		return e, nil
	}
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20), zstd.WithEncoderCRC(false))
}

func getDecoder() (*zstd.Decoder, error) {
	if d, ok := decoders.Get().(*zstd.Decoder); ok {
		return d, nil
	}
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<20),
		zstd.WithDecoderMaxMemory(maxHeader))
}
