package tardelta

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/outpost-registry/outpost/internal/delta/bsdiff"
	"github.com/outpost-registry/outpost/internal/delta/exediff"
)

// SizedReaderAt is random access to a base tar of known size, such as
// *io.SectionReader or *bytes.Reader.
type SizedReaderAt interface {
	io.ReaderAt
	Size() int64
}

// Apply rebuilds the target tar from a delta and the bases it was encoded
// against (same order as given to Encode) and writes it to w. It returns the
// number of bytes written.
//
// Apply streams: memory stays below about 72 MiB whatever the delta says
// (the history of PATCHH included; plus at most 32 MiB of an EXEDIFF's
// predictions, package exediff),
// because every length is checked against fixed limits before anything is
// allocated or read. A malformed delta yields an error matching ErrCorrupt,
// never a panic; the end record carries a CRC-32C of the target, so a
// damaged delta is reported at the end even if its operations looked valid.
// Since output is streamed, w may already hold a prefix when that happens.
func Apply(ctx context.Context, delta io.Reader, bases []SizedReaderAt, w io.Writer) (int64, error) {
	a := &applier{
		ctx:   ctx,
		br:    bufio.NewReaderSize(delta, 256<<10),
		bases: bases,
		out:   outWriter{w: w},
	}
	defer a.close()
	if err := a.readHeader(); err != nil {
		return 0, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return a.out.n, err
		}
		tag, err := a.br.ReadByte()
		if err != nil {
			return a.out.n, a.readErr("record type", err)
		}
		switch tag {
		case recBlock:
			a.block++
			if err := a.applyBlock(); err != nil {
				return a.out.n, err
			}
		case recEnd:
			return a.out.n, a.finish()
		default:
			return a.out.n, corruptf("unknown record type 0x%02x after block %d", tag, a.block)
		}
	}
}

type applier struct {
	ctx   context.Context
	br    *bufio.Reader
	bases []SizedReaderAt
	sizes []int64
	// lastEnd is, per base, the end of the last range used; offsets in ops
	// are coded relative to it.
	lastEnd []int64
	out     outWriter
	version byte
	block   int
	opNo    int

	secDec, patchDec *zstd.Decoder

	// scratch holds compressed sections, then patch payloads: the sections
	// are decoded before any op runs, so one buffer serves both.
	scratch, ops, hdr, lit []byte
	dict, target, copyBuf  []byte
	// hist: what PATCH, PATCHH and BSDIFF operations output, its last
	// histMax bytes (version 5 on; see opPatchHist).
	hist []byte
}

// remember adds an operation's output to the history, keeping at most
// 2*histMax bytes of which the last histMax count.
func (a *applier) remember(p []byte) {
	if a.version < patchHistSince {
		return
	}
	a.hist = appendHist(a.hist, p)
}

// appendHist appends p to the history h, dropping what lies more than
// histMax bytes back once h would exceed twice that.
func appendHist(h, p []byte) []byte {
	if len(p) >= histMax {
		return append(h[:0], p[len(p)-histMax:]...)
	}
	if len(h)+len(p) > 2*histMax {
		keep := histMax - len(p)
		h = append(h[:0], h[len(h)-keep:]...)
	}
	return append(h, p...)
}

// lastHist is the part of the history a PATCHH refers to.
func lastHist(h []byte) []byte { return h[max(0, len(h)-histMax):] }

// histWriter passes a BSDIFF's output on and into the history.
type histWriter struct{ a *applier }

func (w histWriter) Write(p []byte) (int, error) {
	n, err := w.a.out.Write(p)
	w.a.remember(p[:n])
	return n, err
}

type outWriter struct {
	w   io.Writer
	n   int64
	crc uint32
}

func (o *outWriter) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	o.crc = crc32.Update(o.crc, castagnoli, p[:n])
	o.n += int64(n)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return n, err
}

func (a *applier) close() {
	if a.secDec != nil {
		a.secDec.Close()
	}
	if a.patchDec != nil {
		a.patchDec.Close()
	}
}

// readErr turns a failed read of the delta into an error: running out of
// input is corruption (truncation), anything else is passed on.
func (a *applier) readErr(what string, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return corruptf("truncated delta reading %s (block %d)", what, a.block)
	}
	if errors.Is(err, errOverflow) {
		return corruptf("bad varint reading %s (block %d)", what, a.block)
	}
	return fmt.Errorf("tardelta: reading delta: %w", err)
}

var errOverflow = errors.New("varint overflows")

func (a *applier) uvarint(what string) (uint64, error) {
	v, err := binary.ReadUvarint(a.br)
	if err != nil {
		if err != io.EOF && err != io.ErrUnexpectedEOF {
			err = errOverflow
		}
		return 0, a.readErr(what, err)
	}
	return v, nil
}

func (a *applier) readHeader() error {
	var h [len(deltaMagic) + 2]byte
	if _, err := io.ReadFull(a.br, h[:]); err != nil {
		return a.readErr("header", err)
	}
	if string(h[:len(deltaMagic)]) != deltaMagic {
		return corruptf("not a tar delta (bad magic)")
	}
	a.version = h[len(deltaMagic)]
	if a.version < minDeltaVersion || a.version > deltaVersion {
		return corruptf("unsupported delta version %d (want %d to %d)", a.version, minDeltaVersion, deltaVersion)
	}
	if f := h[len(deltaMagic)+1]; f != 0 {
		return corruptf("unsupported delta flags 0x%02x", f)
	}
	nb, err := a.uvarint("base count")
	if err != nil {
		return err
	}
	if nb > maxBases {
		return corruptf("base count %d exceeds limit %d", nb, maxBases)
	}
	a.sizes = make([]int64, nb)
	a.lastEnd = make([]int64, nb)
	for i := range a.sizes {
		s, err := a.uvarint("base size")
		if err != nil {
			return err
		}
		if s > 1<<62 {
			return corruptf("base %d size %d out of range", i, s)
		}
		a.sizes[i] = int64(s)
	}
	if len(a.bases) != len(a.sizes) {
		return fmt.Errorf("tardelta: delta was encoded against %d bases, %d given", len(a.sizes), len(a.bases))
	}
	for i, b := range a.bases {
		if b == nil || b.Size() != a.sizes[i] {
			got := int64(-1)
			if b != nil {
				got = b.Size()
			}
			return fmt.Errorf("tardelta: base %d has %d bytes, the delta expects %d", i, got, a.sizes[i])
		}
	}
	a.secDec, err = zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(maxWindow),
		zstd.WithDecoderMaxWindow(maxWindow),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return err
	}
	a.patchDec, err = zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(maxWindow),
		zstd.WithDecoderMaxWindow(maxWindow),
		zstd.WithDecodeAllCapLimit(true))
	return err
}

func (a *applier) finish() error {
	size, err := a.uvarint("target size")
	if err != nil {
		return err
	}
	var crc [4]byte
	if _, err := io.ReadFull(a.br, crc[:]); err != nil {
		return a.readErr("checksum", err)
	}
	if size != uint64(a.out.n) {
		return corruptf("rebuilt %d bytes, the delta describes %d", a.out.n, size)
	}
	if got := binary.LittleEndian.Uint32(crc[:]); got != a.out.crc {
		return corruptf("CRC-32C of the rebuilt tar is %08x, the delta records %08x", a.out.crc, got)
	}
	if _, err := a.br.ReadByte(); err != io.EOF {
		if err != nil {
			return a.readErr("end of delta", err)
		}
		return corruptf("data after the end record")
	}
	return nil
}

// grow returns buf resliced to n bytes (n <= limit). When it must
// reallocate it at least doubles the capacity, up to limit, so buffers that
// creep up towards their limit leave little garbage behind.
func grow(buf []byte, n, limit int) []byte {
	if cap(buf) >= n {
		return buf[:n]
	}
	return make([]byte, n, max(n, min(2*cap(buf), limit)))
}

// readSection reads one section of a block: raw length, stored length, then
// either the raw bytes (stored == raw) or a zstd frame decoding to them.
func (a *applier) readSection(what string, limit int, buf []byte) ([]byte, error) {
	raw, err := a.uvarint(what + " section length")
	if err != nil {
		return nil, err
	}
	stored, err := a.uvarint(what + " section length")
	if err != nil {
		return nil, err
	}
	if raw > uint64(limit) {
		return nil, corruptf("block %d: %s section of %d bytes exceeds limit %d", a.block, what, raw, limit)
	}
	if stored > raw {
		return nil, corruptf("block %d: %s section stored in %d bytes, more than its %d raw bytes", a.block, what, stored, raw)
	}
	if stored == raw {
		buf = grow(buf, int(raw), limit)
		if _, err := io.ReadFull(a.br, buf); err != nil {
			return nil, a.readErr(what+" section", err)
		}
		return buf, nil
	}
	a.scratch = grow(a.scratch, int(stored), maxPatchPayload)
	if _, err := io.ReadFull(a.br, a.scratch); err != nil {
		return nil, a.readErr(what+" section", err)
	}
	buf = grow(buf, int(raw), limit)
	out, err := a.secDec.DecodeAll(a.scratch, buf[:0:raw])
	if err != nil {
		return nil, corruptf("block %d: %s section: %v", a.block, what, err)
	}
	if len(out) != int(raw) {
		return nil, corruptf("block %d: %s section decodes to %d bytes, want %d", a.block, what, len(out), raw)
	}
	return out, nil
}

// opReader decodes the varints of an ops section with bounds checks.
type opReader struct {
	b  []byte
	ok bool
}

func (r *opReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.ok = false
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *opReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.ok = false
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (a *applier) applyBlock() error {
	var err error
	if a.ops, err = a.readSection("ops", maxOpsSection, a.ops); err != nil {
		return err
	}
	if a.hdr, err = a.readSection("header", maxHeaderSection, a.hdr); err != nil {
		return err
	}
	if a.lit, err = a.readSection("literal", maxLiteralSection, a.lit); err != nil {
		return err
	}
	hdr, lit := a.hdr, a.lit
	r := opReader{b: a.ops, ok: true}
	for len(r.b) > 0 {
		a.opNo++
		if a.opNo%256 == 0 {
			if err := a.ctx.Err(); err != nil {
				return err
			}
		}
		kind := r.b[0]
		r.b = r.b[1:]
		switch kind {
		case opCopy:
			b := r.uvarint()
			d := r.varint()
			n := r.uvarint()
			if !r.ok {
				return corruptf("op %d: truncated copy", a.opNo)
			}
			off, err := a.baseRange("copy", b, d, n)
			if err != nil {
				return err
			}
			if n == 0 {
				return corruptf("op %d: empty copy", a.opNo)
			}
			if err := a.copyBase(int(b), off, int64(n)); err != nil {
				return err
			}
		case opHeader, opLiteral:
			n := r.uvarint()
			if !r.ok {
				return corruptf("op %d: truncated op", a.opNo)
			}
			src, name := &hdr, "header"
			if kind == opLiteral {
				src, name = &lit, "literal"
			}
			if n == 0 || n > uint64(len(*src)) {
				return corruptf("op %d: %s of %d bytes, %d left in block %d", a.opNo, name, n, len(*src), a.block)
			}
			if _, err := a.out.Write((*src)[:n]); err != nil {
				return err
			}
			*src = (*src)[n:]
		case opHeaderXor:
			b := r.uvarint()
			d := r.varint()
			n := r.uvarint()
			if !r.ok {
				return corruptf("op %d: truncated header xor", a.opNo)
			}
			if n == 0 || n > uint64(len(hdr)) {
				return corruptf("op %d: header xor of %d bytes, %d left in block %d", a.opNo, n, len(hdr), a.block)
			}
			off, err := a.baseRange("header xor", b, d, n)
			if err != nil {
				return err
			}
			a.copyBuf = grow(a.copyBuf, int(n), maxHeaderSection)
			x := a.copyBuf
			if err := a.readBase(int(b), off, x); err != nil {
				return err
			}
			for i := range x {
				x[i] ^= hdr[i]
			}
			if _, err := a.out.Write(x); err != nil {
				return err
			}
			hdr = hdr[n:]
		case opPatch, opPatchHist:
			if kind == opPatchHist && a.version < patchHistSince {
				return corruptf("op %d: unknown op 0x%02x in a version %d delta", a.opNo, kind, a.version)
			}
			b := r.uvarint()
			d := r.varint()
			baseLen := r.uvarint()
			targetLen := r.uvarint()
			payLen := r.uvarint()
			if !r.ok {
				return corruptf("op %d: truncated patch", a.opNo)
			}
			off, err := a.baseRange("patch", b, d, baseLen)
			if err != nil {
				return err
			}
			if err := a.patch(int(b), off, baseLen, targetLen, payLen, kind == opPatchHist); err != nil {
				return err
			}
		case opBsdiff, opExediff:
			k := bsdiffPatches
			if kind == opExediff {
				k = exediffPatches
			}
			if a.version < k.since {
				return corruptf("op %d: unknown op 0x%02x in a version %d delta", a.opNo, kind, a.version)
			}
			b := r.uvarint()
			d := r.varint()
			oldLen := r.uvarint()
			targetLen := r.uvarint()
			payLen := r.uvarint()
			if !r.ok {
				return corruptf("op %d: truncated %s", a.opNo, k.name)
			}
			off, err := a.baseRange(k.name, b, d, oldLen)
			if err != nil {
				return err
			}
			if err := a.binaryPatch(k, int(b), off, oldLen, targetLen, payLen); err != nil {
				return err
			}
		default:
			return corruptf("op %d: unknown op 0x%02x", a.opNo, kind)
		}
	}
	if len(hdr) != 0 || len(lit) != 0 {
		return corruptf("block %d: %d header and %d literal bytes left unused", a.block, len(hdr), len(lit))
	}
	return nil
}

// baseRange resolves a relative base offset and checks the range lies
// inside base b; it then records the range end for the next relative offset.
func (a *applier) baseRange(what string, b uint64, d int64, n uint64) (int64, error) {
	if b >= uint64(len(a.sizes)) {
		return 0, corruptf("op %d: %s from base %d out of range (%d bases)", a.opNo, what, b, len(a.sizes))
	}
	size, last := a.sizes[b], a.lastEnd[b]
	if d < -last || d > size-last {
		return 0, corruptf("op %d: %s offset %+d from %d outside base %d (%d bytes)", a.opNo, what, d, last, b, size)
	}
	off := last + d
	if n > uint64(size-off) {
		return 0, corruptf("op %d: %s of %d bytes at %d overruns base %d (%d bytes)", a.opNo, what, n, off, b, size)
	}
	a.lastEnd[b] = off + int64(n)
	return off, nil
}

func (a *applier) readBase(b int, off int64, p []byte) error {
	n, err := a.bases[b].ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("tardelta: reading base %d at %d: %w", b, off, err)
}

func (a *applier) copyBase(b int, off, n int64) error {
	if len(a.copyBuf) < 1<<20 {
		a.copyBuf = grow(a.copyBuf, 1<<20, maxHeaderSection)
	}
	for n > 0 {
		k := min(n, int64(len(a.copyBuf)))
		if err := a.readBase(b, off, a.copyBuf[:k]); err != nil {
			return err
		}
		if _, err := a.out.Write(a.copyBuf[:k]); err != nil {
			return err
		}
		off += k
		n -= k
		if n > 0 {
			if err := a.ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *applier) patch(b int, off int64, baseLen, targetLen, payLen uint64, withHist bool) error {
	if baseLen == 0 || baseLen > maxPatchBase {
		return corruptf("op %d: patch dictionary of %d bytes (limit %d)", a.opNo, baseLen, maxPatchBase)
	}
	if targetLen == 0 || targetLen > maxPatchTarget {
		return corruptf("op %d: patch output of %d bytes (limit %d)", a.opNo, targetLen, maxPatchTarget)
	}
	if int64(baseLen) > maxDictFor(int(targetLen)) {
		return corruptf("op %d: patch dictionary of %d bytes for %d output bytes", a.opNo, baseLen, targetLen)
	}
	if payLen == 0 || payLen > maxPatchPayload {
		return corruptf("op %d: patch payload of %d bytes (limit %d)", a.opNo, payLen, maxPatchPayload)
	}
	var h []byte
	if withHist {
		h = lastHist(a.hist)
	}
	a.dict = grow(a.dict, len(h)+int(baseLen), maxPatchBase+histMax)
	copy(a.dict, h)
	if err := a.readBase(b, off, a.dict[len(h):]); err != nil {
		return err
	}
	a.scratch = grow(a.scratch, int(payLen), maxPatchPayload)
	if _, err := io.ReadFull(a.br, a.scratch); err != nil {
		return a.readErr("patch payload", err)
	}
	if err := a.patchDec.ResetWithOptions(nil, zstd.WithDecoderDictRaw(0, a.dict)); err != nil {
		return fmt.Errorf("tardelta: %w", err)
	}
	a.target = grow(a.target, int(targetLen), maxPatchTarget)
	out, err := a.patchDec.DecodeAll(a.scratch, a.target[:0:targetLen])
	if err != nil {
		return corruptf("op %d: patch against base %d at %d: %v", a.opNo, b, off, err)
	}
	if len(out) != int(targetLen) {
		return corruptf("op %d: patch decodes to %d bytes, want %d", a.opNo, len(out), targetLen)
	}
	if _, err = a.out.Write(out); err != nil {
		return err
	}
	a.remember(out)
	return nil
}

// patchKind is a binary patch format an operation carries: the delta
// version that introduced it, its limits and functions. Both read the old
// range through the base's ReaderAt as they go, never holding it.
type patchKind struct {
	name       string
	since      byte
	maxOld     func(targetLen uint64) uint64
	maxTarget  uint64
	newSize    func(patch []byte) (int64, error)
	apply      func(old io.ReaderAt, oldSize int64, patch []byte, w io.Writer) (int64, error)
	errCorrupt error
	// remembered: the output goes into the history a PATCHH refers to.
	remembered bool
}

var (
	// BSDIFF: the package's decoders add at most 4 MiB of windows.
	bsdiffPatches = patchKind{
		name:       "bsdiff",
		since:      2,
		maxOld:     func(n uint64) uint64 { return uint64(maxDictFor(int(n))) },
		maxTarget:  maxPatchTarget,
		newSize:    bsdiff.NewSize,
		apply:      bsdiff.Apply,
		errCorrupt: bsdiff.ErrCorrupt,
		remembered: true,
	}
	// EXEDIFF, against a whole base executable: its memory is the
	// predictions (package exediff), not the files.
	exediffPatches = patchKind{
		name:       "exediff",
		since:      exediffSince, // version 3's are of an older model (format.go)
		maxOld:     func(n uint64) uint64 { return min(exediff.MaxSize, 2*n+patchDictSlack) },
		maxTarget:  exediff.MaxSize,
		newSize:    exediff.NewSize,
		apply:      exediff.Apply,
		errCorrupt: exediff.ErrCorrupt,
	}
)

func (a *applier) binaryPatch(k patchKind, b int, off int64, oldLen, targetLen, payLen uint64) error {
	if targetLen == 0 || targetLen > k.maxTarget {
		return corruptf("op %d: %s output of %d bytes (limit %d)", a.opNo, k.name, targetLen, k.maxTarget)
	}
	if oldLen == 0 || oldLen > k.maxOld(targetLen) {
		return corruptf("op %d: %s of %d base bytes for %d output bytes (limit %d)", a.opNo, k.name, oldLen, targetLen, k.maxOld(targetLen))
	}
	if payLen == 0 || payLen > maxPatchPayload {
		return corruptf("op %d: %s payload of %d bytes (limit %d)", a.opNo, k.name, payLen, maxPatchPayload)
	}
	a.scratch = grow(a.scratch, int(payLen), maxPatchPayload)
	if _, err := io.ReadFull(a.br, a.scratch); err != nil {
		return a.readErr(k.name+" payload", err)
	}
	// The size check comes first: Apply would otherwise write whatever a
	// damaged patch claims.
	if n, err := k.newSize(a.scratch); err != nil || n != int64(targetLen) {
		if err == nil {
			err = fmt.Errorf("it describes %d bytes", n)
		}
		return corruptf("op %d: %s against base %d at %d for %d bytes: %v", a.opNo, k.name, b, off, targetLen, err)
	}
	old := io.NewSectionReader(a.bases[b], off, int64(oldLen))
	var w io.Writer = &a.out
	if k.remembered {
		w = histWriter{a}
	}
	if _, err := k.apply(old, int64(oldLen), a.scratch, w); err != nil {
		if errors.Is(err, k.errCorrupt) {
			return corruptf("op %d: %s against base %d at %d: %v", a.opNo, k.name, b, off, err)
		}
		return fmt.Errorf("tardelta: op %d: %w", a.opNo, err)
	}
	return nil
}
