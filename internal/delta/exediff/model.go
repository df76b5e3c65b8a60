package exediff

import (
	"cmp"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/outpost-registry/outpost/internal/delta/bsdiff"
)

// section is an allocated ELF section: where it sits in memory and in the
// file.
type section struct {
	addr, off, size uint64
	nobits          bool // occupies memory only (.bss)
}

// Table bases: the addresses Go's runtime tables count their offsets from.
const (
	baseText     = iota // moduledata.text: function entries
	basePctab           // pc-value tables (pcsp, pcfile, pcln, pcdata)
	baseFuncname        // function names
	baseFunctab         // the function table and function records
	baseTypes           // type data (typelinks, name and type offsets)
	baseGofunc          // go:func.* (funcdata)
	baseRodata          // moduledata.rodata: stack objects' GC data
	// DWARF sections, as file offsets in the expanded file (dwarf.go):
	// what the offsets in .debug_info count from.
	baseDebugInfo
	baseDebugLine
	baseDebugLoclists
	baseDebugRnglists
	baseDebugAddr
	baseDebugFrame
	numBases
)

// layout is what the prediction needs of a file: its sections and table
// bases (0: unknown). The new file's travels in the patch header.
type layout struct {
	secs  []section
	bases [numBases]uint64
}

// offAddr returns the address file offset o is loaded at.
func (l *layout) offAddr(o uint64) (uint64, bool) {
	for _, s := range l.secs {
		if !s.nobits && o >= s.off && o-s.off < s.size {
			return o - s.off + s.addr, true
		}
	}
	return 0, false
}

// model is an old (or new) file as the prediction sees it.
type model struct {
	layout
	size    int64
	x86     bool
	arm64   bool
	exec    []section // executable, in the file
	data    []section // other allocated sections in the file
	lo, hi  uint64    // addresses the image spans
	pcln    section
	nfunc   uint64 // functions in the pclntab; 0 when it is not one this package reads
	typelnk section
	etypes  uint64 // end of the type data (its start is bases[baseTypes])
	// debug: the DWARF sections by name, where they lie in the file;
	// dwarf: .debug_info's and .debug_abbrev's contents in the expanded
	// file (expand).
	debug                   map[string]debugSection
	dwInfo, dwAbbrev        span
	dwAddr, dwLine, dwFrame span
	// zcand: the SHF_COMPRESSED sections that lie after every allocated
	// one, in section-table order (compressedSections reads their
	// headers).
	zcand []zsection
}

// debugSection is a non-allocated .debug_* section in the file.
type debugSection struct {
	off, size  uint64
	compressed bool
}

// span is a run of bytes of the expanded file.
type span struct{ off, n uint64 }

// Go's pclntab header (runtime.pcHeader, Go 1.20 on) and the offsets in
// runtime.moduledata of the fields read here, for 64-bit targets.
const (
	pclnMagic      = 0xfffffff1
	pclnHeaderSize = 72
	mdTypes        = 296
	mdEtypes       = 304
	mdRodata       = 312
	mdGofunc       = 320
	mdSize         = 336
	funcRecordSize = 44 // runtime._func before its pcdata and funcdata
)

// readModel parses r's ELF headers and, for Go binaries, the table bases.
// Anything it cannot read leaves a part of the model out: the prediction
// is then weaker, never wrong, since both sides build the same model.
func readModel(r io.ReaderAt, size int64) (m *model, err error) {
	defer func() {
		// debug/elf is not hardened against every malformed input.
		if p := recover(); p != nil {
			m, err = nil, fmt.Errorf("%w: %v", ErrNotExecutable, p)
		}
	}()
	f, err := elf.NewFile(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotExecutable, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB {
		return nil, ErrNotExecutable
	}
	m = &model{size: size, x86: f.Machine == elf.EM_X86_64, arm64: f.Machine == elf.EM_AARCH64, lo: ^uint64(0)}
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 && strings.HasPrefix(s.Name, ".debug_") && s.Type != elf.SHT_NOBITS &&
			s.Offset <= uint64(size) && s.FileSize <= uint64(size)-s.Offset {
			if m.debug == nil {
				m.debug = map[string]debugSection{}
			}
			m.debug[s.Name] = debugSection{off: s.Offset, size: s.FileSize, compressed: s.Flags&elf.SHF_COMPRESSED != 0}
		}
		if s.Flags&elf.SHF_ALLOC == 0 || s.Addr == 0 || s.Addr+s.Size < s.Addr {
			continue
		}
		sec := section{addr: s.Addr, off: s.Offset, size: s.Size, nobits: s.Type == elf.SHT_NOBITS}
		if !sec.nobits && (s.Offset > uint64(size) || s.Size > uint64(size)-s.Offset) {
			continue
		}
		m.secs = append(m.secs, sec)
		m.lo, m.hi = min(m.lo, sec.addr), max(m.hi, sec.addr+sec.size)
		switch {
		case sec.nobits:
		case s.Flags&elf.SHF_EXECINSTR != 0:
			m.exec = append(m.exec, sec)
			if s.Name == ".text" {
				m.bases[baseText] = sec.addr
			}
		default:
			m.data = append(m.data, sec)
			switch s.Name {
			case ".gopclntab":
				m.pcln = sec
			case ".typelink":
				m.typelnk = sec
			}
		}
	}
	if len(m.secs) == 0 {
		return nil, fmt.Errorf("%w: no allocated sections", ErrNotExecutable)
	}
	m.zcand = compressedCandidates(f.Sections, uint64(size))
	if err := m.readGoTables(r); err != nil {
		return nil, err
	}
	return m, nil
}

// readGoTables reads the pclntab header and finds runtime.moduledata for
// the type and funcdata bases.
func (m *model) readGoTables(r io.ReaderAt) error {
	if m.pcln.size < pclnHeaderSize {
		return nil
	}
	w := newWindow(r, m.size, 4<<10)
	h := w.at(int64(m.pcln.off), pclnHeaderSize)
	if h == nil {
		return w.err
	}
	le := binary.LittleEndian
	if le.Uint32(h) != pclnMagic || h[7] != 8 {
		return nil
	}
	nfunc := le.Uint64(h[8:])
	fields := [...]struct {
		at   int
		base int
	}{{32, baseFuncname}, {56, basePctab}, {64, baseFunctab}}
	for _, fd := range fields {
		o := le.Uint64(h[fd.at:])
		if o >= m.pcln.size {
			return nil
		}
		m.bases[fd.base] = m.pcln.addr + o
	}
	if nfunc == 0 || nfunc > (m.pcln.size-(m.bases[baseFunctab]-m.pcln.addr))/8 {
		m.bases[baseFuncname], m.bases[basePctab], m.bases[baseFunctab] = 0, 0, 0
		return nil
	}
	m.nfunc = nfunc
	// moduledata starts with the pcHeader's address and funcnametab's.
	sw := newWindow(r, m.size, 1<<20)
	for _, s := range m.data {
		for o := alignUp(s.off, 8); o+mdSize <= s.off+s.size; o += 8 {
			b := sw.at(int64(o), 16)
			if b == nil {
				return sw.err
			}
			if le.Uint64(b) != m.pcln.addr || le.Uint64(b[8:]) != m.bases[baseFuncname] {
				continue
			}
			md := sw.at(int64(o), mdSize)
			if md == nil {
				return sw.err
			}
			for _, fd := range [...]struct{ at, base int }{{mdTypes, baseTypes}, {mdGofunc, baseGofunc}, {mdRodata, baseRodata}} {
				if v := le.Uint64(md[fd.at:]); m.fileBacked(v) {
					m.bases[fd.base] = v
				}
			}
			if t, e := m.bases[baseTypes], le.Uint64(md[mdEtypes:]); t != 0 && e > t && m.fileBacked(e-1) {
				m.etypes = e
			}
			return nil
		}
	}
	return nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// fileBacked reports whether address v lies in a section stored in the
// file.
func (m *model) fileBacked(v uint64) bool {
	_, ok := m.addrOff(v)
	return ok
}

// addrOff returns the file offset address v is loaded from.
func (m *model) addrOff(v uint64) (uint64, bool) {
	for _, s := range m.secs {
		if !s.nobits && v >= s.addr && v-s.addr < s.size {
			return v - s.addr + s.off, true
		}
	}
	return 0, false
}

// piece maps old file offsets [old, old+n) to [old+shift, old+shift+n).
type piece struct {
	old, shift, n int64
}

// piecesOf turns bsdiff's alignment into a map: sorted by old offset,
// disjoint (where matches overlap in the old file, the earlier-starting
// one keeps the overlap), without matches shorter than minPiece.
func piecesOf(ms []bsdiff.Match) []piece {
	ps := make([]piece, 0, len(ms))
	for _, mt := range ms {
		if mt.Len >= minPiece {
			ps = append(ps, piece{old: int64(mt.Old), shift: int64(mt.New - mt.Old), n: int64(mt.Len)})
		}
	}
	slices.SortStableFunc(ps, func(a, b piece) int { return cmp.Compare(a.old, b.old) })
	out := ps[:0]
	end := int64(0)
	for _, p := range ps {
		if p.old+p.n <= end {
			continue
		}
		if cut := end - p.old; cut > 0 {
			p.old, p.n = p.old+cut, p.n-cut
		}
		out = append(out, p)
		end = p.old + p.n
	}
	return out
}

// mapper moves old addresses and offsets to where the map says they went.
type mapper struct {
	old    *model
	new    *layout
	pieces []piece
	// the k-th section without file content in old is the k-th in new
	nobitsNew []section
}

func newMapper(old *model, new *layout, pieces []piece) *mapper {
	m := &mapper{old: old, new: new, pieces: pieces}
	for _, s := range new.secs {
		if s.nobits {
			m.nobitsNew = append(m.nobitsNew, s)
		}
	}
	return m
}

// off maps an old file offset.
func (m *mapper) off(o int64) (int64, bool) {
	i := sort.Search(len(m.pieces), func(i int) bool { return m.pieces[i].old > o }) - 1
	if i < 0 || o >= m.pieces[i].old+m.pieces[i].n {
		return 0, false
	}
	return o + m.pieces[i].shift, true
}

// addr maps an old address.
func (m *mapper) addr(v uint64) (uint64, bool) {
	k := 0
	for _, s := range m.old.secs {
		if v < s.addr || v-s.addr >= s.size {
			if s.nobits {
				k++
			}
			continue
		}
		if s.nobits {
			// Memory-only data moves with its section as a whole.
			if k >= len(m.nobitsNew) {
				return 0, false
			}
			return v - s.addr + m.nobitsNew[k].addr, true
		}
		no, ok := m.off(int64(v - s.addr + s.off))
		if !ok || no < 0 {
			return 0, false
		}
		return m.new.offAddr(uint64(no))
	}
	return 0, false
}

// pred is a predicted 4-byte little-endian value at old offset pos; an
// 8-byte slot is two, for the halves that change. Eight bytes each: the
// child holds them all while it applies.
type pred struct {
	pos uint32 // MaxSize keeps offsets within 32 bits
	val uint32
}

// predWidth is the bytes a pred covers.
const predWidth = 4

// Bounds on what the prediction holds, whatever the old file: 32 MB of
// predictions (a 26 MB Go binary needs 0.4 M one commit apart, 0.9 M 20
// commits apart), 8 MB of type references (0.2 M) and 16 MB of funcdata
// symbols (0.15 M).
const (
	maxPreds    = 4 << 20
	maxTypeRefs = 1 << 20
	maxFuncdata = 1 << 20
)

// put writes the prediction into b, which holds the old file from offset
// base on; the bytes outside b are left out.
func (p pred) put(b []byte, base int64) {
	var v [predWidth]byte
	binary.LittleEndian.PutUint32(v[:], p.val)
	for i := range int64(predWidth) {
		if at := int64(p.pos) + i - base; at >= 0 && at < int64(len(b)) {
			b[at] = v[i]
		}
	}
}

func predsCRC(preds []pred) uint32 {
	var b [8]byte
	crc := uint32(0)
	for _, p := range preds {
		binary.LittleEndian.PutUint32(b[:], p.pos)
		binary.LittleEndian.PutUint32(b[4:], p.val)
		crc = crc32.Update(crc, castagnoli, b[:])
	}
	return crc
}

// predictor finds the slots of the old file and predicts their values.
type predictor struct {
	m     *mapper
	seq   *window // sequential scans
	rnd   *window // scattered reads (type data)
	preds []pred
	// typeRefs: old addresses in the type data that operands and
	// pointers refer to, where type descriptors may start (goTypes).
	typeRefs []uint64
	// limit bounds preds; over marks an add past it, which a predictor
	// running beside another reports (predictParallel).
	limit int
	over  bool
}

func newPredictor(m *mapper, r io.ReaderAt, size int64) *predictor {
	return &predictor{m: m, seq: newWindow(r, size, 1<<20), rnd: newScattered(r, size), limit: maxPreds}
}

func (p *predictor) err() error {
	if err := p.seq.err; err != nil {
		return err
	}
	return p.rnd.err
}

// predict returns the predictions for the old file r (whose model om is)
// given the new file's layout and the map, sorted by position and without
// overlaps. Slots whose value does not change are left out.
func (om *model) predict(r io.ReaderAt, newLayout layout, pieces []piece) ([]pred, error) {
	m := newMapper(om, &newLayout, pieces)
	preds, err := om.predictParallel(r, m)
	if errors.Is(err, errOverLimit) {
		return om.predictSerial(r, m)
	}
	return preds, err
}

// predictSerial runs the passes one after the other; their order is the
// predictions' (sorting keeps it among equal positions, and a limit keeps
// the first ones).
func (om *model) predictSerial(r io.ReaderAt, m *mapper) ([]pred, error) {
	p := newPredictor(m, r, om.size)
	p.goTables()
	p.x86Operands()
	p.arm64Operands()
	p.pointers()
	p.goTypes()
	p.dwarfInfo()
	p.dwarfTables()
	return p.finish()
}

// parallelLimit bounds each side's predictions in predictParallel, so that
// the two together hold no more than one serial run; a variable for tests.
var parallelLimit = maxPreds / 2

var errOverLimit = errors.New("exediff: a parallel prediction reached its limit")

// predictParallel gives the same predictions as predictSerial, with the
// operand passes over the code (a third of a Go binary's prediction, and
// the child's other core idle meanwhile: the layer's recompression waits
// for the file) on a goroutine of their own beside the function tables and
// pointers, and the results put together in the serial order. A side that
// reaches parallelLimit makes it return errOverLimit: the serial run then
// decides which predictions the limits keep.
func (om *model) predictParallel(r io.ReaderAt, m *mapper) ([]pred, error) {
	// Both goroutines read r: io.ReaderAt allows parallel calls.
	code := newPredictor(m, r, om.size)
	code.limit = parallelLimit
	done := make(chan struct{})
	go func() {
		defer close(done)
		code.x86Operands()
		code.arm64Operands()
	}()
	p := newPredictor(m, r, om.size)
	p.limit = parallelLimit
	p.goTables()
	k := len(p.preds)
	p.pointers()
	<-done
	if err := cmp.Or(code.err(), p.err()); err != nil {
		return nil, err
	}
	if code.over || p.over {
		return nil, errOverLimit
	}
	p.preds = slices.Concat(p.preds[:k], code.preds, p.preds[k:])
	p.typeRefs = append(code.typeRefs, p.typeRefs...)
	p.typeRefs = p.typeRefs[:min(len(p.typeRefs), maxTypeRefs)]
	p.limit = maxPreds
	p.goTypes()
	p.dwarfInfo()
	p.dwarfTables()
	return p.finish()
}

// finish sorts the predictions by position and drops those that overlap
// an earlier one.
func (p *predictor) finish() ([]pred, error) {
	if err := p.err(); err != nil {
		return nil, err
	}
	ps := p.preds
	slices.SortStableFunc(ps, func(a, b pred) int { return cmp.Compare(a.pos, b.pos) })
	out := ps[:0]
	end := int64(0)
	for _, q := range ps {
		if int64(q.pos) >= end {
			out = append(out, q)
			end = int64(q.pos) + predWidth
		}
	}
	return out, nil
}

// add records a prediction, up to maxPreds.
func (p *predictor) add(pos int64, val uint32) {
	if len(p.preds) < p.limit {
		p.preds = append(p.preds, pred{pos: uint32(pos), val: val})
	} else {
		p.over = true
	}
}

// add64 records the halves of an 8-byte slot whose value changes from
// old to val.
func (p *predictor) add64(pos int64, old, val uint64) {
	if uint32(val) != uint32(old) {
		p.add(pos, uint32(val))
	}
	if val>>32 != old>>32 {
		p.add(pos+4, uint32(val>>32))
	}
}

// usable reports whether offsets from table base b can be predicted.
func (p *predictor) usable(b int) bool {
	return p.m.old.bases[b] != 0 && p.m.new.bases[b] != 0
}

// offset predicts a 4-byte offset from table base b at old offset pos.
func (p *predictor) offset(w *window, pos int64, b int) {
	v := w.at(pos, 4)
	if v == nil {
		return
	}
	old := binary.LittleEndian.Uint32(v)
	nt, ok := p.m.addr(p.m.old.bases[b] + uint64(old))
	if !ok {
		return
	}
	d := nt - p.m.new.bases[b]
	if nt < p.m.new.bases[b] || d > 0xffffffff {
		return
	}
	if uint32(d) != old {
		p.add(pos, uint32(d))
	}
}

// pointers: aligned 8-byte words in data sections whose value is an
// address within the image. (A number that merely looks like one gets a
// wrong prediction, which costs what an unpredicted change does.)
func (p *predictor) pointers() {
	om := p.m.old
	le := binary.LittleEndian
	for _, s := range om.data {
		for a := alignUp(s.addr, 8); a+8 <= s.addr+s.size; a += 8 {
			pos := int64(a - s.addr + s.off)
			b := p.seq.at(pos, 8)
			if b == nil {
				return
			}
			v := le.Uint64(b)
			if v < om.lo || v >= om.hi {
				continue
			}
			p.typeRef(v)
			if nv, ok := p.m.addr(v); ok && nv != v {
				p.add64(pos, v, nv)
			}
		}
	}
}

// typeRef notes old address v if it lies in the type data.
func (p *predictor) typeRef(v uint64) {
	if t := p.m.old.bases[baseTypes]; v >= t && v < p.m.old.etypes && len(p.typeRefs) < maxTypeRefs {
		p.typeRefs = append(p.typeRefs, v)
	}
}

// window reads a file through a buffer: scans cost one read per buffer. A window made by
// newScattered caches pages instead, for reads all over a region such as the type data: a
// plain 4 KiB window re-read 128 MB in 31,000 reads for each prediction of a 25 MB Go
// binary, a fifth of the child's whole apply.
type window struct {
	r    io.ReaderAt
	size int64
	buf  []byte
	off  int64 // file offset of buf[0]
	n    int   // valid bytes in buf
	err  error

	// The page cache: pageSlots pages of pageSize bytes in buf, direct-mapped by page
	// number; tags[i] is 1 + the number of the page in slot i (0: none).
	tags    []int64
	lens    []int
	scratch []byte
}

const (
	pageSize  = 4 << 10
	pageSlots = 256
)

func newWindow(r io.ReaderAt, size int64, n int) *window {
	return &window{r: r, size: size, buf: make([]byte, n)}
}

// newScattered returns a window caching pageSlots pages; a read may be up to a page long.
func newScattered(r io.ReaderAt, size int64) *window {
	return &window{r: r, size: size, buf: make([]byte, pageSize*pageSlots),
		tags: make([]int64, pageSlots), lens: make([]int, pageSlots), scratch: make([]byte, pageSize)}
}

// at returns the n bytes at file offset off (valid until the next call),
// or nil if they lie outside the file or cannot be read (then err says
// why).
func (w *window) at(off int64, n int) []byte {
	limit := len(w.buf)
	if w.tags != nil {
		limit = pageSize
	}
	if w.err != nil || off < 0 || n < 0 || n > limit || off > w.size-int64(n) {
		return nil
	}
	if w.tags != nil {
		return w.cached(off, n)
	}
	if off >= w.off && off+int64(n) <= w.off+int64(w.n) {
		return w.buf[off-w.off : off-w.off+int64(n)]
	}
	k := int(min(int64(len(w.buf)), w.size-off))
	if !w.read(w.buf[:k], off) {
		return nil
	}
	w.off, w.n = off, k
	return w.buf[:n]
}

// read fills b from off, or records why it could not.
func (w *window) read(b []byte, off int64) bool {
	m, err := w.r.ReadAt(b, off)
	if m < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		w.err, w.n = fmt.Errorf("exediff: reading the old file at %d: %w", off, err), 0
		return false
	}
	return true
}

// cached is at for a page cache: bytes within a page come from it, bytes across two pages
// are copied together.
func (w *window) cached(off int64, n int) []byte {
	first, last := off/pageSize, (off+int64(max(n, 1))-1)/pageSize
	a := w.page(first)
	if a == nil {
		return nil
	}
	start := int(off - first*pageSize)
	if first == last {
		return a[start : start+n]
	}
	k := copy(w.scratch, a[start:])
	b := w.page(last) // another slot: the pages are consecutive
	if b == nil {
		return nil
	}
	copy(w.scratch[k:n], b)
	return w.scratch[:n]
}

// page returns page p of the file, reading it into its slot unless it is there.
func (w *window) page(p int64) []byte {
	slot := int(p % pageSlots)
	buf := w.buf[slot*pageSize : (slot+1)*pageSize]
	if w.tags[slot] == p+1 {
		return buf[:w.lens[slot]]
	}
	k := int(min(pageSize, w.size-p*pageSize))
	if !w.read(buf[:k], p*pageSize) {
		w.tags[slot] = 0
		return nil
	}
	w.tags[slot], w.lens[slot] = p+1, k
	return buf[:k]
}

// predictedReader reads the old file with the predictions in place.
type predictedReader struct {
	r     io.ReaderAt
	preds []pred
}

func (p *predictedReader) ReadAt(b []byte, off int64) (int, error) {
	n, err := p.r.ReadAt(b, off)
	end := off + int64(n)
	i := sort.Search(len(p.preds), func(i int) bool { return int64(p.preds[i].pos)+predWidth > off })
	for ; i < len(p.preds) && int64(p.preds[i].pos) < end; i++ {
		p.preds[i].put(b[:n], off)
	}
	return n, err
}
