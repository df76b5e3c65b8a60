package exediff

import (
	"encoding/binary"
	"math"
)

// DWARF. Decompressed (compressed.go), an unstripped Go binary's
// .debug_info still changes throughout with a small change: its DIEs refer
// to each other, above all to the type DIEs, by offsets into the section
// that shift when any DIE before them grows, and to the line, location and
// range lists by offsets into those sections. The walker below finds
// those offsets, and the code and data addresses, in the old file's DIEs
// (DWARF 4 and 5, 32-bit format, as Go's linker and C compilers write
// them) and predicts them like the others.

// expand moves the model to the expanded file's coordinates: zs
// decompressed (they lie after every allocated section, so code and data
// keep their offsets). It sets the size and the DWARF sections' places.
func (m *model) expand(zs []zsection) {
	at := func(off uint64) uint64 { // where file offset off lands
		g := int64(0)
		for _, z := range zs {
			if z.off < off {
				g += z.growth()
			}
		}
		return uint64(int64(off) + g)
	}
	for _, z := range zs {
		m.size += z.growth()
	}
	spanOf := func(name string) span {
		d, ok := m.debug[name]
		if !ok {
			return span{}
		}
		if !d.compressed {
			return span{at(d.off), d.size}
		}
		for _, z := range zs {
			if z.off == d.off {
				return span{at(d.off) + chdrSize, z.rawSize}
			}
		}
		return span{} // still compressed: not readable
	}
	for name, b := range map[string]int{".debug_info": baseDebugInfo, ".debug_line": baseDebugLine,
		".debug_loclists": baseDebugLoclists, ".debug_rnglists": baseDebugRnglists, ".debug_addr": baseDebugAddr,
		".debug_frame": baseDebugFrame} {
		if s := spanOf(name); s.n > 0 {
			m.bases[b] = s.off
		}
	}
	m.dwInfo, m.dwAbbrev = spanOf(".debug_info"), spanOf(".debug_abbrev")
	m.dwAddr, m.dwLine, m.dwFrame = spanOf(".debug_addr"), spanOf(".debug_line"), spanOf(".debug_frame")
}

// DWARF constants used here (DWARF 5, section 7).
const (
	formAddr       = 0x01
	formBlock2     = 0x03
	formBlock4     = 0x04
	formData2      = 0x05
	formData4      = 0x06
	formData8      = 0x07
	formString     = 0x08
	formBlock      = 0x09
	formBlock1     = 0x0a
	formData1      = 0x0b
	formFlag       = 0x0c
	formSdata      = 0x0d
	formStrp       = 0x0e
	formUdata      = 0x0f
	formRefAddr    = 0x10
	formRef1       = 0x11
	formRef2       = 0x12
	formRef4       = 0x13
	formRef8       = 0x14
	formRefUdata   = 0x15
	formSecOffset  = 0x17
	formExprloc    = 0x18
	formFlagPres   = 0x19
	formStrx       = 0x1a
	formAddrx      = 0x1b
	formRefSup4    = 0x1c
	formStrpSup    = 0x1d
	formData16     = 0x1e
	formLineStrp   = 0x1f
	formRefSig8    = 0x20
	formImplicit   = 0x21
	formLoclistx   = 0x22
	formRnglistx   = 0x23
	formRefSup8    = 0x24
	formStrx1      = 0x25
	formStrx4      = 0x28
	formAddrx1     = 0x29
	formAddrx4     = 0x2c
	attrStmtList   = 0x10
	attrGoType     = 0x2904 // DW_AT_go_runtime_type: the type descriptor, from the type data's start
	attrRanges     = 0x55
	attrAddrBase   = 0x73
	attrRnglistsB  = 0x74
	attrLoclistsB  = 0x8c
	opAddr         = 0x03
	maxUnit        = 64 << 20 // larger units are left out
	maxAbbrevBytes = 1 << 20
)

// abbrev is one abbreviation: its attributes' names and forms.
type abbrev struct {
	children bool
	attrs    [][2]uint64
}

// dwarfInfo predicts the offsets and addresses in the old file's
// .debug_info, unit by unit.
func (p *predictor) dwarfInfo() {
	om := p.m.old
	if om.dwInfo.n == 0 || om.dwAbbrev.n == 0 || om.dwAbbrev.n > maxAbbrevBytes || !p.usable(baseDebugInfo) {
		return
	}
	r := p.seq.r
	abbr := make([]byte, om.dwAbbrev.n)
	if _, err := r.ReadAt(abbr, int64(om.dwAbbrev.off)); err != nil {
		return
	}
	tables := map[uint64]map[uint64]abbrev{}
	var unit []byte
	le := binary.LittleEndian
	for u := uint64(0); u+4 <= om.dwInfo.n; {
		var h [4]byte
		if _, err := r.ReadAt(h[:], int64(om.dwInfo.off+u)); err != nil {
			return
		}
		n := uint64(le.Uint32(h[:])) + 4
		if n < 11 || n > om.dwInfo.n-u || n-4 >= 0xfffffff0 {
			return // 64-bit DWARF, or not a unit
		}
		if n <= maxUnit {
			if uint64(cap(unit)) < n {
				unit = make([]byte, n)
			}
			unit = unit[:n]
			if _, err := r.ReadAt(unit, int64(om.dwInfo.off+u)); err != nil {
				return
			}
			p.dwarfUnit(unit, int64(om.dwInfo.off+u), abbr, tables)
		}
		u += n
	}
}

// dwarfUnit walks one unit's DIEs, at old offset pos.
func (p *predictor) dwarfUnit(b []byte, pos int64, abbr []byte, tables map[uint64]map[uint64]abbrev) {
	le := binary.LittleEndian
	version := le.Uint16(b[4:])
	var abbrOff uint64
	var asize byte
	i := 0
	switch {
	case version == 5 && len(b) >= 12:
		asize, abbrOff, i = b[7], uint64(le.Uint32(b[8:])), 12
		switch b[6] { // unit type
		case 2, 6: // type units: signature and type offset
			i += 12
		case 4, 5: // skeleton and split units: their id
			i += 8
		}
	case version == 3 || version == 4: // (version 2's ref_addr has another size)
		abbrOff, asize, i = uint64(le.Uint32(b[6:])), b[10], 11
	default:
		return
	}
	t, ok := tables[abbrOff]
	if !ok {
		t = parseAbbrevs(abbr, abbrOff)
		tables[abbrOff] = t
	}
	for i < len(b) {
		code, k := uvarint(b[i:])
		if k <= 0 {
			return
		}
		i += k
		if code == 0 {
			continue
		}
		a, ok := t[code]
		if !ok {
			return
		}
		for _, at := range a.attrs {
			if i = p.dwarfAttr(b, i, pos, at[0], at[1], asize); i < 0 || i > len(b) {
				return
			}
		}
	}
}

// dwarfAttr reads the attribute of form form at b[i], predicts it if it
// is an offset or an address, and returns where the next one starts (-1:
// a form it cannot skip).
func (p *predictor) dwarfAttr(b []byte, i int, pos int64, attr, form uint64, asize byte) int {
	le := binary.LittleEndian
	fixed := func(n int) int {
		if i+n > len(b) {
			return -1
		}
		return i + n
	}
	block := func(n uint64, k int) int {
		if k <= 0 || n > uint64(len(b)) {
			return -1
		}
		return fixed(k + int(n))
	}
	switch form {
	case formAddr:
		if asize == 8 && i+8 <= len(b) {
			if attr == attrGoType {
				p.goTypeOffset(pos+int64(i), le.Uint64(b[i:]))
			} else {
				p.dwarfAddr(pos+int64(i), le.Uint64(b[i:]))
			}
		}
		return fixed(int(asize))
	case formRefAddr:
		if i+4 <= len(b) {
			p.secOffset(pos+int64(i), le.Uint32(b[i:]), baseDebugInfo)
		}
		return fixed(4)
	case formSecOffset:
		if i+4 <= len(b) {
			base := baseDebugLoclists
			switch attr {
			case attrStmtList:
				base = baseDebugLine
			case attrRanges, attrRnglistsB:
				base = baseDebugRnglists
			case attrAddrBase:
				base = baseDebugAddr
			case attrLoclistsB:
				base = baseDebugLoclists
			}
			p.secOffset(pos+int64(i), le.Uint32(b[i:]), base)
		}
		return fixed(4)
	case formExprloc, formBlock:
		n, k := uvarint(b[i:])
		p.loneAddr(b, i+k, n, pos, asize)
		return block(n, k)
	case formBlock1:
		if i >= len(b) {
			return -1
		}
		p.loneAddr(b, i+1, uint64(b[i]), pos, asize)
		return block(uint64(b[i]), 1)
	case formBlock2:
		if i+2 > len(b) {
			return -1
		}
		return block(uint64(le.Uint16(b[i:])), 2)
	case formBlock4:
		if i+4 > len(b) {
			return -1
		}
		return block(uint64(le.Uint32(b[i:])), 4)
	case formData1, formRef1, formFlag, formStrx1, formAddrx1:
		return fixed(1)
	case formData2, formRef2, formStrx1 + 1, formAddrx1 + 1:
		return fixed(2)
	case formStrx1 + 2, formAddrx1 + 2:
		return fixed(3)
	case formData4, formRef4, formStrp, formRefSup4, formStrpSup, formLineStrp, formStrx4, formAddrx4:
		return fixed(4)
	case formData8, formRef8, formRefSig8, formRefSup8:
		return fixed(8)
	case formData16:
		return fixed(16)
	case formSdata, formUdata, formRefUdata, formStrx, formAddrx, formLoclistx, formRnglistx:
		_, k := uvarint(b[i:])
		if k <= 0 {
			return -1
		}
		return i + k
	case formString:
		for j := i; j < len(b); j++ {
			if b[j] == 0 {
				return j + 1
			}
		}
		return -1
	case formFlagPres, formImplicit:
		return i
	}
	return -1
}

// secOffset predicts a 4-byte offset into the section whose expanded
// start is base b, at old expanded offset pos.
func (p *predictor) secOffset(pos int64, old uint32, b int) {
	if !p.usable(b) {
		return
	}
	nt, ok := p.m.off(int64(p.m.old.bases[b]) + int64(old))
	if !ok {
		return
	}
	d := nt - int64(p.m.new.bases[b])
	if d < 0 || d > math.MaxUint32 || uint32(d) == old {
		return
	}
	p.add(pos, uint32(d))
}

// dwarfAddr predicts an 8-byte address at old expanded offset pos.
func (p *predictor) dwarfAddr(pos int64, v uint64) {
	if v < p.m.old.lo || v >= p.m.old.hi {
		return
	}
	if nv, ok := p.m.addr(v); ok && nv != v {
		p.add64(pos, v, nv)
	}
}

// loneAddr predicts the address in a location expression of n bytes at
// b[i] that is a lone DW_OP_addr: a variable's (Go writes its globals'
// in block1 forms).
func (p *predictor) loneAddr(b []byte, i int, n uint64, pos int64, asize byte) {
	if n == 9 && asize == 8 && i >= 0 && i+9 <= len(b) && b[i] == opAddr {
		p.dwarfAddr(pos+int64(i+1), binary.LittleEndian.Uint64(b[i+1:]))
	}
}

// goTypeOffset predicts Go's DW_AT_go_runtime_type at old expanded offset
// pos: an 8-byte offset from the type data's start, in an addr form. (Most
// of a Go type's DIE: every type whose descriptor moved changes it.)
func (p *predictor) goTypeOffset(pos int64, v uint64) {
	om := p.m.old
	if !p.usable(baseTypes) || v >= om.etypes-om.bases[baseTypes] {
		return
	}
	nt, ok := p.m.addr(om.bases[baseTypes] + v)
	if base := p.m.new.bases[baseTypes]; ok && nt >= base && nt-base != v {
		p.add64(pos, v, nt-base)
	}
}

// parseAbbrevs parses the abbreviation table at off of .debug_abbrev's
// contents b.
func parseAbbrevs(b []byte, off uint64) map[uint64]abbrev {
	t := map[uint64]abbrev{}
	if off >= uint64(len(b)) {
		return t
	}
	i := int(off)
	next := func() (uint64, bool) {
		v, k := uvarint(b[i:])
		if k <= 0 {
			return 0, false
		}
		i += k
		return v, true
	}
	for {
		code, ok := next()
		if !ok || code == 0 {
			return t
		}
		if _, ok := next(); !ok || i >= len(b) { // tag
			return t
		}
		a := abbrev{children: b[i] != 0}
		i++
		for {
			attr, ok1 := next()
			form, ok2 := next()
			if !ok1 || !ok2 {
				return t
			}
			if attr == 0 && form == 0 {
				break
			}
			if form == formImplicit {
				if _, k := binary.Varint(b[i:]); k > 0 { // its value lives here
					i += k
				}
			}
			a.attrs = append(a.attrs, [2]uint64{attr, form})
		}
		t[code] = a
	}
}

// uvarint reads an unsigned LEB128 number (binary.Uvarint's encoding).
func uvarint(b []byte) (uint64, int) { return binary.Uvarint(b) }

// dwarfTables predicts the addresses in the other DWARF sections, where
// code addresses sit whole: .debug_addr's entries, the DW_LNE_set_address
// operands that start .debug_line's sequences, and .debug_frame's FDEs
// (their CIE offset and initial location).
func (p *predictor) dwarfTables() {
	om := p.m.old
	le := binary.LittleEndian
	// .debug_addr: contributions of a header (length, version, address
	// and segment selector sizes) and addresses.
	p.units(om.dwAddr, func(b []byte, u, n int) {
		if b[u+6] == 8 && b[u+7] == 0 {
			for a := u + 8; a+8 <= u+4+n; a += 8 {
				p.dwarfAddr(int64(om.dwAddr.off)+int64(a), le.Uint64(b[a:]))
			}
		}
	})
	p.units(om.dwLine, func(b []byte, u, n int) {
		p.lineProgram(b[u:u+4+n], int64(om.dwLine.off)+int64(u))
	})
	p.units(om.dwFrame, func(b []byte, u, n int) {
		if id := le.Uint32(b[u+4:]); id != 0xffffffff && n >= 4+16 { // an FDE
			pos := int64(om.dwFrame.off) + int64(u)
			p.secOffset(pos+4, id, baseDebugFrame)
			p.dwarfAddr(pos+8, le.Uint64(b[u+8:]))
		}
	})
}

// units reads the section at s (up to maxUnit bytes) and calls f with it
// and the offset and length of each of its length-prefixed units or
// entries of at least 4 bytes, in order, up to the first that is not one.
func (p *predictor) units(s span, f func(b []byte, u, n int)) {
	if s.n == 0 || s.n > maxUnit {
		return
	}
	b := make([]byte, s.n)
	if _, err := p.seq.r.ReadAt(b, int64(s.off)); err != nil {
		return
	}
	for u := 0; u+4 <= len(b); {
		n, ok := unitLength(b, u, 4)
		if !ok {
			return
		}
		f(b, u, n)
		u += 4 + n
	}
}

// lineProgram predicts the DW_LNE_set_address operands of one line
// program (DWARF 2 to 5, 32-bit format) at old offset pos.
func (p *predictor) lineProgram(b []byte, pos int64) {
	le := binary.LittleEndian
	if len(b) < 10 {
		return
	}
	version := le.Uint16(b[4:])
	i := 6
	if version >= 5 {
		i += 2 // address and segment selector sizes
	}
	if version < 2 || version > 5 || i+4 > len(b) {
		return
	}
	hlen := int(le.Uint32(b[i:]))
	i += 4
	prog := i + hlen
	// minimum_instruction_length, [maximum_operations_per_instruction,]
	// default_is_stmt, line_base, line_range, opcode_base, then the
	// standard opcodes' operand counts.
	k := i + 4
	if version >= 4 {
		k++
	}
	if hlen < 0 || prog > len(b) || k >= prog {
		return
	}
	opBase := int(b[k])
	if opBase == 0 || k+opBase > prog {
		return
	}
	lengths := b[k+1 : k+opBase]
	for i = prog; i < len(b); {
		op := int(b[i])
		i++
		switch {
		case op >= opBase: // special opcode
		case op == 0: // extended: length, sub-opcode, operands
			n, k := uvarint(b[i:])
			if k <= 0 || n == 0 || n > uint64(len(b)-i-k) {
				return
			}
			if b[i+k] == 2 && n == 9 { // DW_LNE_set_address
				p.dwarfAddr(pos+int64(i+k+1), le.Uint64(b[i+k+1:]))
			}
			i += k + int(n)
		case op == 9: // DW_LNS_fixed_advance_pc: a uhalf
			i += 2
		default:
			for range lengths[op-1] {
				_, k := uvarint(b[i:])
				if k <= 0 {
					return
				}
				i += k
			}
		}
	}
}

// unitLength returns the length of the DWARF unit or entry at b[u] (not
// counting its 4-byte length field) if it is at least least bytes and fits
// in b; 64-bit DWARF (0xffffffff) and the reserved lengths do not.
func unitLength(b []byte, u, least int) (int, bool) {
	n := binary.LittleEndian.Uint32(b[u:])
	if n < uint32(least) || n >= 0xfffffff0 || uint64(n) > uint64(len(b)-u-4) {
		return 0, false
	}
	return int(n), true
}
