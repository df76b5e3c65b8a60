package exediff

import "encoding/binary"

// Go type descriptors (internal/abi, 64-bit targets): abi.Type's fields
// read here, the kinds whose descriptors differ in size, and the uncommon
// data (package path and method table) that follows a descriptor whose
// TFlagUncommon is set.
const (
	typeSize      = 48 // abi.Type
	typeTFlag     = 20
	typeKind      = 23
	typeStr       = 40 // NameOff of the type's string
	typePtrToThis = 44 // TypeOff, 0 if none
	tflagUncommon = 1
	// Go before 1.26 keeps two flags in Kind_'s top bits.
	kindMask = 31

	kindArray     = 17
	kindChan      = 18
	kindFunc      = 19
	kindInterface = 20
	kindMap       = 21
	kindPointer   = 22
	kindSlice     = 23
	kindStruct    = 25
	kindLast      = 26 // UnsafePointer

	// abi.InterfaceType's Methods slice follows abi.Type and PkgPath.
	ifaceMethods = typeSize + 8
	imethodSize  = 8  // abi.Imethod: Name NameOff, Typ TypeOff
	uncommonSize = 16 // abi.UncommonType
	methodSize   = 16 // abi.Method: Name, Mtyp, Ifn, Tfn
	maxMethods   = 1 << 16
)

// descSizes returns the sizes a descriptor of kind may have before its
// uncommon data: maps have two, Go 1.24's swiss-table layout and the
// layout before it.
func descSizes(kind byte) []int64 {
	switch kind {
	case kindStruct, kindInterface:
		return []int64{80}
	case kindPointer, kindSlice, kindFunc:
		return []int64{56}
	case kindArray:
		return []int64{72}
	case kindChan:
		return []int64{64}
	case kindMap:
		return []int64{112, 88}
	}
	return []int64{typeSize}
}

// goTypes: the offsets in Go's type data. Type descriptors are found from
// the typelinks, from every operand and pointer that refers into the type
// data (typeRefs), and from the type offsets of the descriptors found;
// each is checked to look like one before its offsets are predicted: its
// name and pointer-type offsets, its uncommon data's package path and
// method table (names, method types, and the two code offsets of each
// method), and an interface's method names and types.
func (p *predictor) goTypes() {
	om := p.m.old
	if !p.usable(baseTypes) || om.etypes == 0 {
		return
	}
	types := om.bases[baseTypes]
	queue := p.typeRefs
	p.typeRefs = nil
	if om.typelnk.size > 0 {
		for o := om.typelnk.off; o+4 <= om.typelnk.off+om.typelnk.size; o += 4 {
			v := p.seq.at(int64(o), 4)
			if v == nil {
				break
			}
			queue = append(queue, types+uint64(binary.LittleEndian.Uint32(v)))
			p.offset(p.seq, int64(o), baseTypes)
		}
	}
	// Descriptors are 8-byte aligned: a bit per 8 bytes of type data.
	seen := make([]uint64, (om.etypes-types)/8/64+1)
	for len(queue) > 0 {
		t := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if t%8 != 0 || t < types || t >= om.etypes {
			continue
		}
		k := (t - types) / 8
		if seen[k/64]&(1<<(k%64)) != 0 {
			continue
		}
		seen[k/64] |= 1 << (k % 64)
		queue = p.goType(t, queue)
	}
}

// goType predicts the offsets of the descriptor at old address t, if it
// looks like one, and returns queue with the types it refers to by offset.
func (p *predictor) goType(t uint64, queue []uint64) []uint64 {
	om := p.m.old
	le := binary.LittleEndian
	types, tlen := om.bases[baseTypes], om.etypes-om.bases[baseTypes]
	off, ok := om.addrOff(t)
	if !ok || t+typeSize > om.etypes {
		return queue
	}
	pos := int64(off)
	b := p.rnd.at(pos, typeSize)
	if b == nil {
		return queue
	}
	kind, tflag := b[typeKind]&kindMask, b[typeTFlag]
	str, ptr := le.Uint32(b[typeStr:]), le.Uint32(b[typePtrToThis:])
	if kind == 0 || kind > kindLast || uint64(str) >= tlen || uint64(ptr) >= tlen {
		return queue
	}
	p.offset(p.rnd, pos+typeStr, baseTypes)
	if ptr != 0 {
		p.offset(p.rnd, pos+typePtrToThis, baseTypes)
		queue = append(queue, types+uint64(ptr))
	}
	if kind == kindInterface {
		queue = p.imethods(pos, queue)
	}
	if tflag&tflagUncommon == 0 {
		return queue
	}
	for _, size := range descSizes(kind) {
		u := pos + size
		b := p.rnd.at(u, uncommonSize)
		if b == nil {
			return queue
		}
		pkg, mcount, xcount, moff := le.Uint32(b), uint64(le.Uint16(b[4:])), le.Uint16(b[6:]), uint64(le.Uint32(b[8:]))
		if uint64(pkg) >= tlen || uint64(xcount) > mcount || moff < uncommonSize ||
			t+uint64(size)+moff+mcount*methodSize > om.etypes {
			continue // not this layout
		}
		if pkg != 0 {
			p.offset(p.rnd, u, baseTypes)
		}
		text := p.usable(baseText)
		for m := range int64(mcount) {
			at := u + int64(moff) + m*methodSize
			var ok bool
			if queue, ok = p.nameAndType(at, queue); !ok {
				return queue
			}
			if text {
				p.offset(p.rnd, at+8, baseText)
				p.offset(p.rnd, at+12, baseText)
			}
		}
		return queue
	}
	return queue
}

// imethods predicts the method names and types of the interface type
// descriptor at old offset pos.
func (p *predictor) imethods(pos int64, queue []uint64) []uint64 {
	om := p.m.old
	le := binary.LittleEndian
	types := om.bases[baseTypes]
	b := p.rnd.at(pos+ifaceMethods, 16)
	if b == nil {
		return queue
	}
	ms, n := le.Uint64(b), le.Uint64(b[8:])
	if n == 0 || n > maxMethods || ms < types || ms+n*imethodSize > om.etypes {
		return queue
	}
	off, ok := om.addrOff(ms)
	if !ok {
		return queue
	}
	for k := range int64(n) {
		var ok bool
		if queue, ok = p.nameAndType(int64(off)+k*imethodSize, queue); !ok {
			break
		}
	}
	return queue
}

// nameAndType predicts the name and type offsets that start a method or
// interface method at old offset at, and queues the type. ok is false if
// they cannot be read.
func (p *predictor) nameAndType(at int64, queue []uint64) (_ []uint64, ok bool) {
	om := p.m.old
	b := p.rnd.at(at, 8)
	if b == nil {
		return queue, false
	}
	typ := uint64(binary.LittleEndian.Uint32(b[4:])) // before the window moves
	p.offset(p.rnd, at, baseTypes)
	if typ < om.etypes-om.bases[baseTypes] {
		p.offset(p.rnd, at+4, baseTypes)
		queue = append(queue, om.bases[baseTypes]+typ)
	}
	return queue, true
}
