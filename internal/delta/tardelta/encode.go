package tardelta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"path"
	"runtime"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/outpost-registry/outpost/internal/delta/bsdiff"
	"github.com/outpost-registry/outpost/internal/delta/exediff"
	"github.com/outpost-registry/outpost/internal/iocount"
)

// Base is a tar the receiver already holds: its index and random access to
// its uncompressed bytes (read for patch dictionaries only).
type Base struct {
	Index *Index
	Data  io.ReaderAt
}

// Options tunes Encode. The zero value is the recommended setting.
type Options struct {
	// Level is the zstd level for header, literal and large patch data.
	// Zero means zstd.SpeedBestCompression: delta size matters more than
	// sender CPU. Patches of small contents always use
	// zstd.SpeedBetterCompression (see patchBestMin).
	Level zstd.EncoderLevel

	// Concurrency is the number of goroutines compressing blocks besides
	// the one parsing the target and computing patches; 0 means
	// min(2, GOMAXPROCS).
	Concurrency int

	// TargetIndex, when not nil, receives the index of the target, saving a
	// second pass when the target later serves as a base.
	TargetIndex *Index

	// PatchMemory bounds what one content's binary patch may take, by the
	// estimates of exediff.DiffMemory and bsdiff.DiffMemory: a content
	// whose EXEDIFF or BSDIFF would need more goes as zstd patches of its
	// segments (or literal bytes), whose memory the segment size bounds.
	// A parent sets it from its memory limit, so that a large executable
	// costs bytes on the link rather than the node. Zero: no bound beyond
	// exediff.MaxSize and the segment size.
	PatchMemory int64

	// Version is the format version to write: 0 for the newest (5), 4 for
	// a reader that does not apply PATCHH, or 2 for one that does not apply
	// EXEDIFF either (or applies version 3's, of an older model).
	Version int
}

// Stats describes an encoded delta. "In" counts target bytes, "Out" counts
// delta bytes.
type Stats struct {
	TargetBytes  int64 // size of the target tar
	Entries      int   // tar entries in the target
	CopyBytes    int64 // target bytes reproduced by COPY operations
	CopyOps      int64
	PatchIn      int64 // target bytes reproduced by PATCH and BSDIFF operations
	PatchOut     int64 // their payload bytes
	Patches      int64
	BsdiffIn     int64 // part of PatchIn reproduced by BSDIFF operations
	BsdiffOut    int64 // part of PatchOut
	Bsdiffs      int64 // part of Patches
	Exediffs     int64 // part of Bsdiffs: EXEDIFF operations
	OverMemory   int64 // EXEDIFF and BSDIFF left out: over Options.PatchMemory
	LiteralIn    int64 // content bytes sent as literals
	LiteralOut   int64 // compressed literal sections
	HeaderIn     int64 // header, padding and trailer bytes sent (not copied)
	HeaderXor    int64 // part of HeaderIn sent as XOR with a similar base header
	HeaderOut    int64 // compressed header sections
	OpsOut       int64 // compressed ops sections
	Blocks       int64
	EncodedBytes int64 // total delta size
}

const (
	// patchBestMin is the target segment size from which patches use the
	// configured level. Below it the best level's per-dictionary setup
	// (tens of MiB of match tables cleared and rebuilt) costs more than the
	// few per cent it saves; zstd's "better" level indexes only the
	// dictionary itself.
	patchBestMin = 256 << 10

	// minPatch: below this a patch frame's fixed cost is not worth trying.
	minPatch = 64

	trailerKey = "\x00trailer"
)

// patchBlockLimit bounds the patch payloads buffered for one block. A
// variable so that tests can make blocks close early.
var patchBlockLimit = 8 << 20

// bsdiffEnabled lets tests compare deltas made without BSDIFF.
var bsdiffEnabled = true

// Encode reads the target tar once and writes a delta that Apply turns back
// into the exact same bytes given the same bases in the same order.
//
// Encode streams the target in one pass and spools nothing to disk: it holds
// one segment (SegmentSize) of content and one patch dictionary at a time,
// plus a pipeline of Concurrency+2 blocks (typically a few MiB each, at most
// about 40 MiB when large patches pile up), the zstd encoders' match tables
// (about 70 MiB per best-level encoder in use: up to one for large patches,
// one per block compressor, one for literal estimates) and lookup tables
// built from the base indexes, proportional to their entry counts. Trying
// bsdiff on a segment adds, for its duration, the suffix
// array and search tables of the dictionary (about 6 bytes per byte: up to
// about 110 MiB for a full segment) and the patch's streams; bsdiff costs
// about 0.3 s of CPU per MiB, which is why it is tried only where it may
// pay (see tryBsdiff).
//
// Any byte stream is accepted as target: what does not parse as tar is
// carried as trailer bytes.
func Encode(ctx context.Context, target io.Reader, bases []Base, w io.Writer, opts Options) (Stats, error) {
	if len(bases) > maxBases {
		return Stats{}, fmt.Errorf("tardelta: %d bases, at most %d supported", len(bases), maxBases)
	}
	for i, b := range bases {
		if b.Index == nil || b.Data == nil {
			return Stats{}, fmt.Errorf("tardelta: base %d lacks an index or data", i)
		}
		if err := b.Index.validate(); err != nil {
			return Stats{}, fmt.Errorf("tardelta: base %d: %w", i, err)
		}
	}
	level := opts.Level
	if level == 0 {
		level = zstd.SpeedBestCompression
	}
	if level < zstd.SpeedFastest || level > zstd.SpeedBestCompression {
		return Stats{}, fmt.Errorf("tardelta: unknown zstd level %d", level)
	}
	version := opts.Version
	if version == 0 {
		version = deltaVersion
	}
	if version != 2 && version != exediffSince && version != deltaVersion {
		return Stats{}, fmt.Errorf("tardelta: cannot write format version %d (2, %d or %d)", version, exediffSince, deltaVersion)
	}
	workers := opts.Concurrency
	if workers <= 0 {
		workers = min(2, runtime.GOMAXPROCS(0))
	}

	cw := &iocount.Writer{W: w}
	hdr := []byte(deltaMagic)
	hdr = append(hdr, byte(version), 0)
	hdr = binary.AppendUvarint(hdr, uint64(len(bases)))
	for _, b := range bases {
		hdr = binary.AppendUvarint(hdr, uint64(b.Index.Size))
	}
	if _, err := cw.Write(hdr); err != nil {
		return Stats{}, err
	}

	e, err := newEncoder(ctx, bases, level)
	if err != nil {
		return Stats{}, err
	}
	e.version = version
	e.patchMemory = opts.PatchMemory
	defer e.close()
	tr := &crcReader{r: target}
	e.sc = newScanner(tr)
	e.em = newEmitter(cw, level, workers, len(bases), &e.st)
	if opts.TargetIndex != nil {
		e.tidx = &Index{}
	}

	err = e.run()
	if err2 := e.em.finish(); err == nil {
		err = err2
	}
	if err != nil {
		return e.st, err
	}
	end := []byte{recEnd}
	end = binary.AppendUvarint(end, uint64(e.sc.off))
	end = binary.LittleEndian.AppendUint32(end, tr.crc)
	if _, err := cw.Write(end); err != nil {
		return e.st, err
	}
	e.st.TargetBytes = e.sc.off
	e.st.EncodedBytes = cw.N
	if e.tidx != nil {
		e.tidx.Size = e.sc.off
		*opts.TargetIndex = *e.tidx
	}
	return e.st, nil
}

type crcReader struct {
	r   io.Reader
	crc uint32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	return n, err
}

// ref names a base entry; entry -1 is the base's trailer.
type ref struct {
	base, entry int32
}

type encoder struct {
	ctx   context.Context
	bases []Base

	byHeader, byContent, bySeg0 map[[32]byte]ref
	byPath, byName              map[string]ref
	byHeaderPath                map[string]ref
	byNorm, byHeaderNorm        normIndex

	sc   *scanner
	em   *emitter
	st   Stats
	tidx *Index

	seg, dict []byte
	est, hbuf []byte
	patchOut  bytes.Buffer
	// hist is what the PATCH, PATCHH and BSDIFF operations so far output,
	// as the applier keeps it (version 5 on); histDict and histOut serve
	// the PATCHH attempts.
	hist, histDict []byte
	histOut        bytes.Buffer
	patchBest      *zstd.Encoder
	patchBetter    *zstd.Encoder
	literalEst     *zstd.Encoder
	level          zstd.EncoderLevel
	whole          contentHasher

	version int
	// patchMemory is Options.PatchMemory.
	patchMemory int64
	// unitLen is the current entry's declared content length (-1: the
	// trailer); exeNew and exeOld hold an executable and its base whole.
	unitLen        int64
	exeNew, exeOld []byte
}

func newEncoder(ctx context.Context, bases []Base, level zstd.EncoderLevel) (*encoder, error) {
	e := &encoder{
		ctx:       ctx,
		bases:     bases,
		byHeader:  map[[32]byte]ref{},
		byContent: map[[32]byte]ref{},
		bySeg0:    map[[32]byte]ref{},
		byPath:    map[string]ref{},
		byNorm:    newNormIndex(),
		byName:    map[string]ref{},

		byHeaderPath: map[string]ref{},
		byHeaderNorm: newNormIndex(),
	}
	for bi, b := range bases {
		for ei := range b.Index.Entries {
			e.addBase(ref{int32(bi), int32(ei)}, &b.Index.Entries[ei], pathKey(b.Index.Entries[ei].Name))
		}
		e.addBase(ref{int32(bi), -1}, &b.Index.Trailer, trailerKey)
	}
	e.level = level
	return e, nil
}

// zstd encoders at the high levels carry tens of MiB of match tables that
// are expensive to allocate and clear, so they are created lazily and pooled
// across Encode calls.
const (
	encPatch = iota
	encSection
)

type encKey struct {
	kind  int
	level zstd.EncoderLevel
}

var encPools sync.Map // encKey -> *sync.Pool

func getEncoder(kind int, level zstd.EncoderLevel) (*zstd.Encoder, error) {
	p, _ := encPools.LoadOrStore(encKey{kind, level}, &sync.Pool{})
	if z, ok := p.(*sync.Pool).Get().(*zstd.Encoder); ok {
		return z, nil
	}
	if kind == encSection {
		return zstd.NewWriter(nil,
			zstd.WithEncoderLevel(level),
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(8<<20),
			zstd.WithLowerEncoderMem(true),
			zstd.WithEncoderCRC(false))
	}
	// Patch encoders stream (ResetWithOptions, Write, Close) rather than use
	// EncodeAll: ResetWithOptions already indexes the dictionary for the
	// streaming state, and EncodeAll would index it again in another
	// encoder. The window reaches a whole dictionary (segment plus margins)
	// from anywhere in the segment.
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(maxWindow),
		zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderCRC(false),
		// Adding or removing a dictionary on reset rebuilds the encoder,
		// so it always has one; this placeholder is replaced before use.
		zstd.WithEncoderDictRaw(0, []byte{0}))
}

func putEncoder(kind int, level zstd.EncoderLevel, z *zstd.Encoder) {
	if z == nil {
		return
	}
	if p, ok := encPools.Load(encKey{kind, level}); ok {
		p.(*sync.Pool).Put(z)
	}
}

// patchEncoder returns the encoder for a patch of n target bytes.
func (e *encoder) patchEncoder(n int) (*zstd.Encoder, error) {
	var err error
	if n >= patchBestMin {
		if e.patchBest == nil {
			e.patchBest, err = getEncoder(encPatch, e.level)
		}
		return e.patchBest, err
	}
	if e.patchBetter == nil {
		e.patchBetter, err = getEncoder(encPatch, min(e.level, zstd.SpeedBetterCompression))
	}
	return e.patchBetter, err
}

func (e *encoder) close() {
	putEncoder(encPatch, e.level, e.patchBest)
	putEncoder(encPatch, min(e.level, zstd.SpeedBetterCompression), e.patchBetter)
	putEncoder(encSection, e.level, e.literalEst)
	e.patchBest, e.patchBetter, e.literalEst = nil, nil, nil
}

func (e *encoder) addBase(r ref, ent *Entry, key string) {
	putNew := func(m map[[32]byte]ref, k [32]byte) {
		if _, ok := m[k]; !ok {
			m[k] = r
		}
	}
	putNewS := func(m map[string]ref, k string) {
		if _, ok := m[k]; !ok {
			m[k] = r
		}
	}
	if ent.Header.Size > 0 {
		putNew(e.byHeader, ent.Header.Sum)
		putNewS(e.byHeaderPath, key)
		e.byHeaderNorm.add(key, r)
	}
	if ent.Data.Size == 0 {
		return
	}
	putNew(e.byContent, ent.Data.Sum)
	if len(ent.Segments) > 0 {
		putNew(e.bySeg0, ent.Segments[0])
	}
	putNewS(e.byPath, key)
	e.byNorm.add(key, r)
	putNewS(e.byName, path.Base(key))
}

// pathKey makes equivalent spellings of a member name compare equal.
func pathKey(name string) string {
	for {
		switch {
		case strings.HasPrefix(name, "./"):
			name = name[2:]
		case strings.HasPrefix(name, "/"):
			name = name[1:]
		default:
			return name
		}
	}
}

// normIndex finds a base path that equals a target path up to version
// numbers: lib/python3.11/x.py for lib/python3.12/x.py, pkg@v1.20.1/f.go for
// pkg@v1.20.3/f.go, libfoo.so.1.2.3 for libfoo.so.1.2.4. Digits in directory
// names are ignored first, keeping the file name exact; ignoring digits in
// the file name too is used only when it designates a single base path,
// since numbered files (img_001.png, 0001-fix.patch) would otherwise pair
// up arbitrarily.
type normIndex struct {
	dirs map[string]ref // digits ignored in directory names; first wins
	all  map[string]ref // digits ignored everywhere; entry -2 when ambiguous
}

const ambiguous = -2

func newNormIndex() normIndex {
	return normIndex{dirs: map[string]ref{}, all: map[string]ref{}}
}

func (n normIndex) add(key string, r ref) {
	d := normKey(path.Dir(key)) + "/" + path.Base(key)
	if _, ok := n.dirs[d]; !ok {
		n.dirs[d] = r
	}
	a := normKey(key)
	if _, ok := n.all[a]; ok {
		n.all[a] = ref{entry: ambiguous}
	} else {
		n.all[a] = r
	}
}

func (n normIndex) lookup(key string) *ref {
	if r, ok := n.dirs[normKey(path.Dir(key))+"/"+path.Base(key)]; ok {
		return &r
	}
	if r, ok := n.all[normKey(key)]; ok && r.entry != ambiguous {
		return &r
	}
	return nil
}

// normKey replaces runs of digits by '#'.
func normKey(key string) string {
	var b strings.Builder
	digits := false
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= '0' && c <= '9' {
			if !digits {
				b.WriteByte('#')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteByte(c)
	}
	return b.String()
}

func (e *encoder) entry(r ref) *Entry {
	idx := e.bases[r.base].Index
	if r.entry < 0 {
		return &idx.Trailer
	}
	return &idx.Entries[r.entry]
}

// entry0 is entry for an optional ref.
func (e *encoder) entry0(r ref, ok bool) *Entry {
	if !ok {
		return nil
	}
	return e.entry(r)
}

func (e *encoder) run() error {
	var u unit
	for {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		if err := e.em.writeErr(); err != nil {
			return err
		}
		if err := e.sc.next(&u); err != nil {
			return err
		}
		e.unitLen = u.dataLen
		if u.trailer {
			t := Entry{Data: Region{Offset: u.metaOff}}
			if _, _, err := e.content(nil, trailerKey, &t, func(*ref) error { return nil }); err != nil {
				return err
			}
			if e.tidx != nil {
				e.tidx.Trailer = t
			}
			return nil
		}
		e.st.Entries++
		te := Entry{
			Name:     u.name,
			Linkname: u.linkname,
			Type:     u.typ,
			Sparse:   u.sparse,
			Header:   Region{Offset: u.metaOff, Size: int64(len(u.meta)), Sum: sha256.Sum256(u.meta)},
		}
		te.Data.Offset = te.Header.Offset + te.Header.Size
		key := pathKey(u.name)
		var hint *ref
		hdrDone := false
		if r, ok := e.headerSource(te.Header.Sum); ok {
			he := e.entry(r)
			e.em.copy(int(r.base), he.Header.Offset, he.Header.Size)
			hint, hdrDone = &r, true
		}
		// A header that changed is sent once the content's first segment is
		// known, so that a renamed file's header can be coded against the
		// header of the base file holding the same content.
		emitHeader := func(related *ref) error {
			if hdrDone {
				return nil
			}
			hdrDone = true
			return e.header(u.meta, key, related)
		}
		last, lastOK, err := e.content(hint, key, &te, emitHeader)
		if err == nil {
			err = emitHeader(nil)
		}
		if err != nil {
			return err
		}
		pad, err := e.sc.readPad()
		if err != nil {
			return err
		}
		te.PadSize, te.PadZero = int64(len(pad)), allZero(pad)
		if len(pad) > 0 {
			// Padding follows a verbatim copy of a whole base content with
			// the same (zero) padding: extend the copy instead of sending it.
			if le := e.entry0(last, lastOK); le != nil && te.PadZero && le.PadZero && le.PadSize == te.PadSize {
				e.em.copy(int(last.base), le.Data.Offset+le.Data.Size, le.PadSize)
			} else {
				e.em.header(pad)
			}
		}
		if e.tidx != nil {
			e.tidx.Entries = append(e.tidx.Entries, te)
		}
	}
}

// headerSource finds base header bytes equal to a target header, preferring
// the one that continues the current copy so unchanged runs stay one op.
func (e *encoder) headerSource(sum [32]byte) (ref, bool) {
	if b, end, ok := e.em.copyEnd(); ok {
		idx := e.bases[b].Index
		if i := idx.entryAtHeaderOffset(end); i >= 0 && idx.Entries[i].Header.Sum == sum {
			return ref{int32(b), int32(i)}, true
		}
	}
	r, ok := e.byHeader[sum]
	return r, ok
}

// contentSource finds a base content equal to a target content.
func (e *encoder) contentSource(sum [32]byte, size int64, hint *ref) (ref, bool) {
	if hint != nil {
		if he := e.entry(*hint); he.Data.Size == size && he.Data.Sum == sum {
			return *hint, true
		}
	}
	if b, end, ok := e.em.copyEnd(); ok {
		// The trailer has no header to carry the continuation.
		if t := &e.bases[b].Index.Trailer; t.Data.Offset == end && t.Data.Size == size && t.Data.Sum == sum {
			return ref{int32(b), -1}, true
		}
	}
	r, ok := e.byContent[sum]
	if ok && e.entry(r).Data.Size != size {
		return ref{}, false
	}
	return r, ok
}

// patchSource picks the base content a changed target content is patched
// against: the same path in the first base that has it, else a path equal up
// to version numbers, else a same-named file of similar size.
func (e *encoder) patchSource(key string, size int64) (ref, bool) {
	if r, ok := e.byPath[key]; ok {
		return r, true
	}
	if key == trailerKey {
		return ref{}, false
	}
	if r := e.byNorm.lookup(key); r != nil {
		return *r, true
	}
	if r, ok := e.byName[path.Base(key)]; ok {
		if bs := e.entry(r).Data.Size; bs <= 2*size && size <= 2*bs {
			return r, true
		}
	}
	return ref{}, false
}

// content encodes the content of the current unit, segment by segment, and
// fills in te's data fields. It reports the base entry whose content end was
// the end of the last COPY, so its padding can be copied too.
//
// emitHeader is called once, before any content operation, with the base
// entry the content was found in (or nil).
func (e *encoder) content(hint *ref, key string, te *Entry, emitHeader func(*ref) error) (last ref, lastOK bool, err error) {
	n, err := e.readSegment()
	if err != nil || n == 0 {
		return ref{}, false, err
	}
	seg := e.seg[:n]
	if r, ok := e.exeBase(seg, key); ok {
		return e.executable(r, seg, key, hint, te, emitHeader)
	}
	if n < SegmentSize || !e.sc.more() {
		// The whole content is in memory.
		sum := sha256.Sum256(seg)
		te.Data.Size, te.Data.Sum = int64(n), sum
		r, ok := e.contentSource(sum, int64(n), hint)
		if err := emitHeader(ptrIf(r, ok)); err != nil {
			return ref{}, false, err
		}
		if ok {
			re := e.entry(r)
			e.em.copy(int(r.base), re.Data.Offset, re.Data.Size)
			return r, true, nil
		}
		return ref{}, false, e.changed(seg, key, 0)
	}

	// A large content: match, patch or send each segment.
	e.whole.reset(0) // whole-content sum only; segment sums are taken here
	sum0 := sha256.Sum256(seg)
	var cand *Entry
	var candRef ref
	for _, r := range []*ref{hint, lookup(e.byPath, key)} {
		if r != nil {
			if re := e.entry(*r); len(re.Segments) > 0 && re.Segments[0] == sum0 {
				cand, candRef = re, *r
				break
			}
		}
	}
	if cand == nil {
		if r, ok := e.bySeg0[sum0]; ok {
			cand, candRef = e.entry(r), r
		}
	}
	if err := emitHeader(ptrIf(candRef, cand != nil)); err != nil {
		return ref{}, false, err
	}
	var segs [][32]byte
	for i := 0; ; i++ {
		e.whole.Write(seg)
		s := sum0
		if i > 0 {
			s = sha256.Sum256(seg)
		}
		segs = append(segs, s)
		lastOK = false
		if cand != nil && i < len(cand.Segments) && cand.Segments[i] == s {
			off := int64(i) * SegmentSize
			e.em.copy(int(candRef.base), cand.Data.Offset+off, int64(len(seg)))
			last, lastOK = candRef, off+int64(len(seg)) == cand.Data.Size
		} else if err := e.changedSegment(seg, key, i, cand, candRef); err != nil {
			return ref{}, false, err
		}
		if err := e.ctx.Err(); err != nil {
			return ref{}, false, err
		}
		if len(seg) < SegmentSize {
			break
		}
		n, err := e.readSegment()
		if err != nil {
			return ref{}, false, err
		}
		if n == 0 {
			break
		}
		seg = e.seg[:n]
	}
	te.Data.Size, te.Data.Sum, _ = e.whole.finish()
	if te.Data.Size > SegmentSize {
		te.Segments = segs
	}
	return last, lastOK, nil
}

// minExecutable is the smallest executable sent as EXEDIFF: below it, the
// plain patches cost little anyway.
const minExecutable = 256 << 10

var elfMagic = []byte("\x7fELF")

// exeBase returns the base executable to code the current content against
// as EXEDIFF, if the delta may use it, the content (of which seg is the
// start) is an ELF file within exediff's limits, and a related base
// content is one too.
func (e *encoder) exeBase(seg []byte, key string) (ref, bool) {
	if e.version < exediffSince || !bsdiffEnabled || e.unitLen < minExecutable || e.unitLen > exediff.MaxSize || !bytes.HasPrefix(seg, elfMagic) {
		return ref{}, false
	}
	r, ok := e.patchSource(key, e.unitLen)
	if !ok || r.entry < 0 {
		return ref{}, false
	}
	re := e.entry(r)
	if re.Data.Size < minExecutable || re.Data.Size > exediff.MaxSize {
		return ref{}, false
	}
	var magic [4]byte
	if n, _ := e.bases[r.base].Data.ReadAt(magic[:], re.Data.Offset); n < len(magic) || !bytes.Equal(magic[:], elfMagic) {
		return ref{}, false
	}
	return r, e.memoryAllows(exediff.DiffMemory(re.Data.Size, e.unitLen))
}

// executable encodes an executable content (seg is its start) related to
// base content r: read whole, it is copied if a base holds it verbatim,
// else sent as an EXEDIFF against r when exediff models both files, else
// segment by segment as any content.
func (e *encoder) executable(r ref, seg []byte, key string, hint *ref, te *Entry, emitHeader func(*ref) error) (ref, bool, error) {
	e.exeNew = append(e.exeNew[:0], seg...)
	for int64(len(e.exeNew)) < e.unitLen {
		n, err := e.readSegment()
		if err != nil {
			return ref{}, false, err
		}
		if n == 0 {
			break
		}
		e.exeNew = append(e.exeNew, e.seg[:n]...)
	}
	t := e.exeNew
	sum := sha256.Sum256(t)
	te.Data.Size, te.Data.Sum = int64(len(t)), sum
	if len(t) > SegmentSize {
		te.Segments = te.Segments[:0]
		for i := 0; i < len(t); i += SegmentSize {
			te.Segments = append(te.Segments, sha256.Sum256(t[i:min(len(t), i+SegmentSize)]))
		}
	}
	if src, ok := e.contentSource(sum, int64(len(t)), hint); ok {
		if err := emitHeader(&src); err != nil {
			return ref{}, false, err
		}
		se := e.entry(src)
		e.em.copy(int(src.base), se.Data.Offset, se.Data.Size)
		return src, true, nil
	}
	if err := emitHeader(&r); err != nil {
		return ref{}, false, err
	}
	re := e.entry(r)
	e.exeOld = grow(e.exeOld, int(re.Data.Size), exediff.MaxSize)
	if n, err := e.bases[r.base].Data.ReadAt(e.exeOld, re.Data.Offset); n < len(e.exeOld) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return ref{}, false, fmt.Errorf("tardelta: reading base %d at %d: %w", r.base, re.Data.Offset, err)
	}
	p, err := exediff.Diff(e.exeOld, t)
	if err != nil && !errors.Is(err, exediff.ErrNotExecutable) {
		return ref{}, false, fmt.Errorf("tardelta: %w", err)
	}
	// A patch near the content's size means unrelated files: the
	// segments' own coding (zstd patch or literal) does as well.
	if err == nil && len(p) <= maxPatchPayload && len(p) < len(t)/2 {
		e.em.patch(opExediff, int(r.base), re.Data.Offset, re.Data.Size, len(t), p)
		return ref{}, false, nil
	}
	for i := 0; i*SegmentSize < len(t); i++ {
		if err := e.changed(t[i*SegmentSize:min(len(t), (i+1)*SegmentSize)], key, i); err != nil {
			return ref{}, false, err
		}
	}
	return ref{}, false, nil
}

func ptrIf(r ref, ok bool) *ref {
	if ok {
		return &r
	}
	return nil
}

// header sends header bytes that no base has verbatim. If a related base
// header (same path, else the entry whose content the target reuses, else
// the same path up to digits) has the same length and differs in few bytes,
// the section gets the XOR with it: mostly zeros, which costs next to
// nothing once compressed, whereas the names and fields repeated from the
// base would not.
func (e *encoder) header(meta []byte, key string, related *ref) error {
	if len(meta) <= maxHeaderSection {
		cands := [3]*ref{lookup(e.byHeaderPath, key), related, e.byHeaderNorm.lookup(key)}
		for _, r := range cands {
			if r == nil {
				continue
			}
			re := e.entry(*r)
			if re.Header.Size != int64(len(meta)) {
				continue
			}
			e.hbuf = grow(e.hbuf, len(meta), maxHeaderSection)
			if n, err := e.bases[r.base].Data.ReadAt(e.hbuf, re.Header.Offset); n < len(meta) {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("tardelta: reading base %d at %d: %w", r.base, re.Header.Offset, err)
			}
			diff := 0
			for i, c := range meta {
				if c != e.hbuf[i] {
					diff++
				}
			}
			if diff*8 <= len(meta) {
				e.em.headerXor(int(r.base), re.Header.Offset, meta, e.hbuf)
				return nil
			}
		}
	}
	e.em.header(meta)
	return nil
}

func lookup(m map[string]ref, key string) *ref {
	if r, ok := m[key]; ok {
		return &r
	}
	return nil
}

// readSegment reads up to SegmentSize content bytes into e.seg, which grows
// on demand so that small targets do not pay for a full segment buffer.
func (e *encoder) readSegment() (int, error) {
	n := 0
	for n < SegmentSize {
		if n == len(e.seg) {
			e.seg = append(e.seg, make([]byte, min(max(64<<10, len(e.seg)), SegmentSize-len(e.seg)))...)
			e.seg = e.seg[:cap(e.seg)]
			if len(e.seg) > SegmentSize {
				e.seg = e.seg[:SegmentSize]
			}
		}
		m, err := e.sc.Read(e.seg[n:])
		n += m
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// changedSegment handles a segment of a large content that no base has
// verbatim at the aligned position: patch it against the same path's
// segment, or against the content whose first segment matched.
func (e *encoder) changedSegment(seg []byte, key string, i int, cand *Entry, candRef ref) error {
	if _, ok := e.byPath[key]; !ok && cand != nil {
		return e.patch(seg, candRef, i)
	}
	return e.changed(seg, key, i)
}

// changed sends segment i of a content no base holds verbatim: against a
// related base content when there is one, else as literal bytes.
func (e *encoder) changed(seg []byte, key string, i int) error {
	if len(seg) >= minPatch {
		if r, ok := e.patchSource(key, int64(len(seg))+int64(i)*SegmentSize); ok {
			return e.patch(seg, r, i)
		}
	}
	e.em.literal(seg)
	return nil
}

const (
	// minTrim is the shortest common prefix or suffix worth a COPY of its
	// own rather than leaving it to the patch.
	minTrim = 16 << 10
	// anchorLen is the probe searched for in the dictionary when the
	// aligned position does not match (content shifted by an insertion or
	// deletion). It stays within the SIMD fast path of bytes.Index.
	anchorLen = 32
	// focusMargin is how far around the anchors a focused patch dictionary
	// reaches.
	focusMargin = 1 << 20
)

// patch sends seg (segment i of its content) relative to base content r.
// The dictionary is r's segment aligned with seg, widened by segmentMargin
// on both sides. A long common prefix and suffix are copied from the
// dictionary's base range (zstd would spend a few bytes per 128 KiB block on
// them, and time); what remains in between goes as a zstd patch with the
// dictionary, or as literal bytes when that is not smaller.
func (e *encoder) patch(seg []byte, r ref, i int) error {
	re := e.entry(r)
	size := re.Data.Size
	lo := int64(i)*SegmentSize - segmentMargin
	hi := int64(i+1)*SegmentSize + segmentMargin
	lo, hi = max(lo, 0), min(hi, size)
	if lo >= hi {
		// The target grew past the base's end: its tail is the best guess.
		lo, hi = max(0, size-maxPatchBase), size
	}
	if hi <= lo {
		e.em.literal(seg)
		return nil
	}
	e.dict = grow(e.dict, int(hi-lo), maxPatchBase)
	dict := e.dict
	dictOff := re.Data.Offset + lo
	if n, err := e.bases[r.base].Data.ReadAt(dict, dictOff); n < len(dict) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("tardelta: reading base %d at %d: %w", r.base, dictOff, err)
	}
	b := int(r.base)
	align := int64(i)*SegmentSize - lo // dictionary position of seg[0] if nothing moved
	mid := seg
	var sufPos, sufLen int
	trimmed := false
	if len(seg) >= 2*minTrim {
		if pos, n := findPrefix(seg, dict, align); n >= minTrim {
			e.em.copy(b, dictOff+int64(pos), int64(n))
			mid = seg[n:]
			align = int64(pos + n)
			trimmed = true
		}
		if end, n := findSuffix(mid, dict, align+int64(len(mid))); n >= minTrim {
			sufPos, sufLen = end-n, n
			mid = mid[:len(mid)-n]
			trimmed = true
		}
	}
	if len(mid) > 0 {
		pd, pdOff := dict, dictOff
		if trimmed {
			// The changed part sits between known anchors: a dictionary
			// focused around them finds more of its matches (hash tables
			// forget the start of a large dictionary) and is faster to set
			// up.
			start, end := align, align+int64(len(mid))
			if sufLen > 0 {
				start, end = min(start, int64(sufPos-len(mid))), max(end, int64(sufPos))
			}
			dlo := max(0, start-focusMargin)
			dhi := min(int64(len(dict)), end+focusMargin)
			if dlo < dhi {
				pd, pdOff = dict[dlo:dhi], dictOff+dlo
			}
		}
		if int64(len(pd)) > maxDictFor(len(mid)) {
			// Keep within the ratio Apply accepts: around the aligned
			// position, as much as allowed.
			dlo := max(0, align-focusMargin)
			dhi := min(int64(len(dict)), dlo+maxDictFor(len(mid)))
			if dlo >= dhi {
				dlo = max(0, dhi-maxDictFor(len(mid)))
			}
			pd, pdOff = dict[dlo:dhi], dictOff+dlo
		}
		ok, err := e.tryPatch(mid, pd, b, pdOff)
		if err != nil {
			return err
		}
		if !ok {
			e.em.literal(mid)
		}
	}
	if sufLen > 0 {
		e.em.copy(b, dictOff+int64(sufPos), int64(sufLen))
	}
	return nil
}

// findPrefix finds where in dict the longest prefix of t starts: at the
// aligned position, or else where t's first bytes occur.
func findPrefix(t, dict []byte, align int64) (pos, n int) {
	if align >= 0 && align < int64(len(dict)) {
		pos, n = int(align), bsdiff.CommonPrefix(t, dict[align:])
	}
	if n < minTrim && len(t) >= anchorLen {
		if q := bytes.Index(dict, t[:anchorLen]); q >= 0 {
			if m := bsdiff.CommonPrefix(t, dict[q:]); m > n {
				pos, n = q, m
			}
		}
	}
	return pos, n
}

// findSuffix is findPrefix from the end: it returns the dict position just
// after the longest suffix of t found, and its length.
func findSuffix(t, dict []byte, alignEnd int64) (end, n int) {
	if alignEnd > 0 && alignEnd <= int64(len(dict)) {
		end, n = int(alignEnd), commonSuffix(t, dict[:alignEnd])
	}
	if n < minTrim && len(t) >= anchorLen {
		if q := bytes.LastIndex(dict, t[len(t)-anchorLen:]); q >= 0 {
			if m := commonSuffix(t, dict[:q+anchorLen]); m > n {
				end, n = q+anchorLen, m
			}
		}
	}
	return end, n
}

func commonSuffix(a, b []byte) int {
	n := min(len(a), len(b))
	a, b = a[len(a)-n:], b[len(b)-n:]
	i := n
	for ; i >= 8; i -= 8 {
		if x := binary.LittleEndian.Uint64(a[i-8:]) ^ binary.LittleEndian.Uint64(b[i-8:]); x != 0 {
			return n - i + bits.LeadingZeros64(x)/8
		}
	}
	for ; i > 0 && a[i-1] == b[i-1]; i-- {
	}
	return n - i
}

// tryPatch codes t against dict (base bytes at dictOff of base b): as a zstd
// frame with dict as raw dictionary, or as a bsdiff patch against dict when
// that is plausible and smaller, and emits it if that beats compressing t
// alone.
func (e *encoder) tryPatch(t, dict []byte, b int, dictOff int64) (bool, error) {
	if len(t) < minPatch {
		return false, nil
	}
	enc, err := e.patchEncoder(len(t))
	if err != nil {
		return false, err
	}
	p, err := encodeWithDict(enc, &e.patchOut, dict, t)
	if err != nil {
		return false, err
	}
	kind := byte(opPatch)
	if len(p) > maxPatchPayload {
		return false, nil
	}
	if hp, err := e.tryPatchHist(enc, t, dict, len(p)); err != nil {
		return false, err
	} else if hp != nil {
		p, kind = hp, opPatchHist
	}
	if bp, err := e.tryBsdiff(t, dict, len(p)); err != nil {
		return false, err
	} else if bp != nil {
		p, kind = bp, opBsdiff
	}
	// A patch far smaller than its input obviously beats literal
	// compression. For large inputs the patch is made at the literal level,
	// so without useful dictionary matches it degrades to about the same
	// size: only incompressible data needs catching. Small patches use a
	// weaker level than literals and are cheap to compare.
	if len(t) >= patchBestMin {
		if len(p) >= len(t) {
			return false, nil
		}
	} else if len(p)*16 > len(t) {
		if e.literalEst == nil {
			if e.literalEst, err = getEncoder(encSection, e.level); err != nil {
				return false, err
			}
		}
		e.est = e.literalEst.EncodeAll(t, e.est[:0])
		if len(p) >= len(e.est) {
			return false, nil
		}
	}
	e.em.patch(kind, b, dictOff, int64(len(dict)), len(t), p)
	if e.version >= patchHistSince {
		e.hist = appendHist(e.hist, t)
	}
	return true, nil
}

// tryPatchHist returns t coded as a PATCHH (the history before dict) if
// the delta may use one and it is smaller than the PATCH of patchLen
// bytes, else nil.
func (e *encoder) tryPatchHist(enc *zstd.Encoder, t, dict []byte, patchLen int) ([]byte, error) {
	if e.version < patchHistSince || len(e.hist) == 0 || patchLen <= histMinSaving {
		return nil, nil
	}
	e.histDict = append(append(e.histDict[:0], lastHist(e.hist)...), dict...)
	hp, err := encodeWithDict(enc, &e.histOut, e.histDict, t)
	if err != nil || len(hp)+histMinSaving > patchLen {
		return nil, err
	}
	return hp, nil
}

// encodeWithDict compresses t into out, reset first, as one zstd frame with
// dict as raw dictionary, and returns out's bytes.
func encodeWithDict(enc *zstd.Encoder, out *bytes.Buffer, dict, t []byte) ([]byte, error) {
	out.Reset()
	if err := enc.ResetWithOptions(out, zstd.WithEncoderDictRaw(0, dict)); err != nil {
		return nil, err
	}
	if _, err := enc.Write(t); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// histMinSaving: a PATCHH must save this much over its PATCH, since the
// child sets up a dictionary of up to histMax more bytes to decode it
// (about 0.2 ms).
const histMinSaving = 64

// bsdiffMinSaving: bsdiff is tried only when the zstd patch is at least
// this large, since it can save at most that much and costs about 0.3 s per
// MiB.
const bsdiffMinSaving = 1 << 10

// tryBsdiff returns a bsdiff patch of t against dict if bsdiff is worth
// trying and beats the zstd patch of zstdLen bytes, else nil.
//
// bsdiff pays where a rebuild moved code and data: executables and
// libraries, whose changed addresses each cost zstd a new match (measured on
// two Go builds 20 commits apart: 1.19 MB instead of 3.19 MB for a 26 MB
// binary). It also beats zstd on text edited in many places, such as a
// JavaScript bundle from one release to the next (an npm tree with three
// packages upgraded: 187 KB of patches with zstd alone, 173 KB with bsdiff
// where smaller, for 0.7 s more of the parent's CPU). It is tried only when
// the zstd patch is neither tiny (little to save) nor close to the input's
// size (unrelated or incompressible content, where bsdiff would search at
// every other byte for nothing).
func (e *encoder) tryBsdiff(t, dict []byte, zstdLen int) ([]byte, error) {
	if !bsdiffEnabled || zstdLen < bsdiffMinSaving || zstdLen*4 >= len(t)*3 || !e.memoryAllows(bsdiff.DiffMemory(len(dict), len(t))) {
		return nil, nil
	}
	p, err := bsdiff.Diff(dict, t)
	if err != nil {
		return nil, fmt.Errorf("tardelta: %w", err)
	}
	if len(p) >= zstdLen || len(p) > maxPatchPayload {
		return nil, nil
	}
	return p, nil
}

// memoryAllows reports whether a patch estimated to take need bytes fits
// Options.PatchMemory, and counts those that do not.
func (e *encoder) memoryAllows(need int64) bool {
	if e.patchMemory <= 0 || need <= e.patchMemory {
		return true
	}
	e.st.OverMemory++
	return false
}

// emitter turns operations into blocks: it merges adjacent operations,
// encodes them, and hands full blocks to a pipeline of compressing workers
// whose output is written in order.
type emitter struct {
	st      *Stats
	cur     *block
	pend    pendOp
	lastEnd []int64

	free  chan *block
	jobs  chan *block
	order chan *block
	done  chan struct{}

	mu   sync.Mutex
	werr error // first compression or write error, set by the writer goroutine
}

type pendOp struct {
	kind   byte // 0: none
	base   int
	off, n int64
}

type block struct {
	ops, hdr, lit, patches []byte
	out                    []byte // compressed sections, written before patches
	hdrOut, litOut, opsOut int64
	err                    error
	ready                  chan struct{}
}

func newEmitter(w io.Writer, level zstd.EncoderLevel, workers, nbases int, st *Stats) *emitter {
	m := &emitter{
		st:      st,
		lastEnd: make([]int64, nbases),
		free:    make(chan *block, workers+2),
		jobs:    make(chan *block, workers),
		order:   make(chan *block, workers+2),
		done:    make(chan struct{}),
	}
	for i := 0; i < workers+2; i++ {
		m.free <- &block{}
	}
	m.cur = <-m.free
	for i := 0; i < workers; i++ {
		go func() {
			var enc *zstd.Encoder
			var err error
			var scratch []byte
			for b := range m.jobs {
				if enc == nil && err == nil {
					enc, err = getEncoder(encSection, level)
				}
				if err == nil {
					scratch = b.compress(enc, scratch)
				}
				b.err = err
				close(b.ready)
			}
			putEncoder(encSection, level, enc)
		}()
	}
	go func() {
		defer close(m.done)
		var err error
		for b := range m.order {
			<-b.ready
			if err == nil {
				err = b.err
				if err == nil {
					err = b.write(w)
				}
				if err != nil {
					m.mu.Lock()
					m.werr = err
					m.mu.Unlock()
				}
			}
			st.HeaderOut += b.hdrOut
			st.LiteralOut += b.litOut
			st.OpsOut += b.opsOut
			m.free <- b
		}
	}()
	return m
}

// copyEnd reports the base and end offset of the pending COPY, if any.
func (m *emitter) copyEnd() (int, int64, bool) {
	if m.pend.kind == opCopy {
		return m.pend.base, m.pend.off + m.pend.n, true
	}
	return 0, 0, false
}

func (m *emitter) copy(b int, off, n int64) {
	if n == 0 {
		return
	}
	m.st.CopyBytes += n
	if m.pend.kind == opCopy && m.pend.base == b && m.pend.off+m.pend.n == off {
		m.pend.n += n
		return
	}
	m.flushPending()
	m.pend = pendOp{kind: opCopy, base: b, off: off, n: n}
}

func (m *emitter) header(p []byte) {
	m.st.HeaderIn += int64(len(p))
	m.section(opHeader, p)
}

// headerXor sends meta as its XOR with base bytes at off in base b.
func (m *emitter) headerXor(b int, off int64, meta, base []byte) {
	m.st.HeaderIn += int64(len(meta))
	m.st.HeaderXor += int64(len(meta))
	if maxHeaderSection-len(m.cur.hdr) < len(meta) {
		m.flushBlock()
	}
	m.flushPending()
	for i, c := range meta {
		m.cur.hdr = append(m.cur.hdr, c^base[i])
	}
	o := append(m.cur.ops, opHeaderXor)
	o = binary.AppendUvarint(o, uint64(b))
	o = binary.AppendVarint(o, off-m.lastEnd[b])
	o = binary.AppendUvarint(o, uint64(len(meta)))
	m.cur.ops = o
	m.lastEnd[b] = off + int64(len(meta))
	m.checkOps()
}

func (m *emitter) literal(p []byte) {
	m.st.LiteralIn += int64(len(p))
	m.section(opLiteral, p)
}

func (m *emitter) section(kind byte, p []byte) {
	limit := maxHeaderSection
	if kind == opLiteral {
		limit = maxLiteralSection
	}
	for len(p) > 0 {
		dst := &m.cur.hdr
		if kind == opLiteral {
			dst = &m.cur.lit
		}
		room := limit - len(*dst)
		if room == 0 {
			m.flushBlock()
			continue
		}
		k := min(room, len(p))
		if m.pend.kind != kind {
			m.flushPending()
			m.pend = pendOp{kind: kind}
		}
		*dst = append(*dst, p[:k]...)
		m.pend.n += int64(k)
		p = p[k:]
	}
}

// patch emits a PATCH or BSDIFF op (kind) and its payload.
func (m *emitter) patch(kind byte, b int, off, baseLen int64, targetLen int, payload []byte) {
	if len(m.cur.patches) > 0 && len(m.cur.patches)+len(payload) > patchBlockLimit {
		m.flushBlock()
	}
	m.flushPending()
	o := append(m.cur.ops, kind)
	o = binary.AppendUvarint(o, uint64(b))
	o = binary.AppendVarint(o, off-m.lastEnd[b])
	o = binary.AppendUvarint(o, uint64(baseLen))
	o = binary.AppendUvarint(o, uint64(targetLen))
	o = binary.AppendUvarint(o, uint64(len(payload)))
	m.cur.ops = o
	m.lastEnd[b] = off + baseLen
	m.cur.patches = append(m.cur.patches, payload...)
	m.st.Patches++
	m.st.PatchIn += int64(targetLen)
	m.st.PatchOut += int64(len(payload))
	if kind == opExediff {
		m.st.Exediffs++
	}
	if kind == opBsdiff || kind == opExediff {
		m.st.Bsdiffs++
		m.st.BsdiffIn += int64(targetLen)
		m.st.BsdiffOut += int64(len(payload))
	}
	m.checkOps()
}

// flushPending appends the pending operation to the current block.
func (m *emitter) flushPending() {
	p := m.pend
	m.pend = pendOp{}
	switch p.kind {
	case 0:
		return
	case opCopy:
		o := append(m.cur.ops, opCopy)
		o = binary.AppendUvarint(o, uint64(p.base))
		o = binary.AppendVarint(o, p.off-m.lastEnd[p.base])
		o = binary.AppendUvarint(o, uint64(p.n))
		m.cur.ops = o
		m.lastEnd[p.base] = p.off + p.n
		m.st.CopyOps++
	default:
		m.cur.ops = binary.AppendUvarint(append(m.cur.ops, p.kind), uint64(p.n))
	}
	m.checkOps()
}

func (m *emitter) checkOps() {
	// An encoded op takes at most 1+5*10 bytes.
	if len(m.cur.ops) > maxOpsSection-64 {
		m.flushBlock()
	}
}

func (m *emitter) flushBlock() {
	m.flushPending()
	b := m.cur
	if len(b.ops) == 0 {
		return
	}
	m.st.Blocks++
	b.ready = make(chan struct{})
	m.order <- b
	m.jobs <- b
	n := <-m.free
	n.ops, n.hdr, n.lit, n.patches = n.ops[:0], n.hdr[:0], n.lit[:0], n.patches[:0]
	m.cur = n
}

// writeErr reports the first error of the pipeline, so that the encoder
// stops reading the target when the delta cannot be written.
func (m *emitter) writeErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.werr
}

// finish flushes the last block and waits for the pipeline to drain.
func (m *emitter) finish() error {
	m.flushBlock()
	close(m.jobs)
	close(m.order)
	<-m.done
	return m.writeErr()
}

// compress builds the block record up to the patch payloads: for each
// section its raw length, stored length and bytes, zstd-compressed unless
// that does not make them smaller.
func (b *block) compress(enc *zstd.Encoder, scratch []byte) []byte {
	out := append(b.out[:0], recBlock)
	for _, s := range []struct {
		raw []byte
		n   *int64
	}{{b.ops, &b.opsOut}, {b.hdr, &b.hdrOut}, {b.lit, &b.litOut}} {
		start := len(out)
		out = binary.AppendUvarint(out, uint64(len(s.raw)))
		stored := s.raw
		if len(s.raw) > 0 {
			scratch = enc.EncodeAll(s.raw, scratch[:0])
			if len(scratch) < len(s.raw) {
				stored = scratch
			}
		}
		out = binary.AppendUvarint(out, uint64(len(stored)))
		out = append(out, stored...)
		*s.n = int64(len(out) - start)
	}
	b.out = out
	return scratch
}

func (b *block) write(w io.Writer) error {
	if _, err := w.Write(b.out); err != nil {
		return err
	}
	_, err := w.Write(b.patches)
	return err
}
