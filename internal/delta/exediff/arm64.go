package exediff

import "encoding/binary"

// arm64Operands: the PC-relative fields of arm64 code. Every aligned word
// of the executable sections is looked at (instructions are four bytes;
// a literal pool word that looks like an instruction gets a wrong
// prediction, which costs what an unpredicted change does):
//   - B and BL (imm26), B.cond, CBZ and CBNZ (imm19), TBZ and TBNZ
//     (imm14): branch targets, in words;
//   - ADRP followed by an ADD or a load or store of the register it set:
//     an address as a 4 KiB page relative to the instruction's page plus
//     the low 12 bits (Go's and C compilers' way to address data).
func (p *predictor) arm64Operands() {
	if !p.m.old.arm64 {
		return
	}
	le := binary.LittleEndian
	for _, s := range p.m.old.exec {
		for pos := int64(alignUp(s.off, 4)); pos+4 <= int64(s.off+s.size); pos += 4 {
			b := p.seq.at(pos, 4)
			if b == nil {
				return
			}
			w := le.Uint32(b)
			switch {
			case w&0x7c000000 == 0x14000000: // B, BL
				p.arm64Branch(pos, w, 0, 26)
			case w&0xff000010 == 0x54000000, // B.cond
				w&0x7e000000 == 0x34000000: // CBZ, CBNZ
				p.arm64Branch(pos, w, 5, 19)
			case w&0x7e000000 == 0x36000000: // TBZ, TBNZ
				p.arm64Branch(pos, w, 5, 14)
			case w&0x9f000000 == 0x90000000: // ADRP
				if pos+8 <= int64(s.off+s.size) {
					p.arm64Page(pos, w)
				}
			}
		}
	}
}

// signExtend returns the low bits of v as a signed number.
func signExtend(v uint32, bits uint) int64 {
	return int64(int32(v<<(32-bits)) >> (32 - bits))
}

// arm64Places returns the old address of the instruction at old offset
// pos and the new address it moved to.
func (p *predictor) arm64Places(pos int64) (pc, npc uint64, ok bool) {
	pc, ok = p.m.old.offAddr(uint64(pos))
	if !ok {
		return 0, 0, false
	}
	np, ok := p.m.off(pos)
	if !ok || np < 0 {
		return 0, 0, false
	}
	npc, ok = p.m.new.offAddr(uint64(np))
	return pc, npc, ok
}

// arm64Branch predicts the branch w at old offset pos, whose word offset
// is the bits-wide field at bit shift.
func (p *predictor) arm64Branch(pos int64, w uint32, shift, bits uint) {
	mask := uint32(1)<<bits - 1
	pc, npc, ok := p.arm64Places(pos)
	if !ok {
		return
	}
	nt, ok := p.m.addr(pc + uint64(signExtend(w>>shift&mask, bits)*4))
	if !ok {
		return
	}
	d := int64(nt-npc) / 4
	if int64(nt-npc)%4 != 0 || d != signExtend(uint32(d)&mask, bits) {
		return
	}
	if nw := w&^(mask<<shift) | (uint32(d)&mask)<<shift; nw != w {
		p.add(pos, nw)
	}
}

// arm64Page predicts the ADRP w at old offset pos and the instruction
// after it, if that adds to or loads from or stores through the register
// ADRP set: together they hold an address.
func (p *predictor) arm64Page(pos int64, w uint32) {
	b := p.seq.at(pos+4, 4)
	if b == nil {
		return
	}
	lo := binary.LittleEndian.Uint32(b)
	rd := w & 31
	var scale uint // the low 12 bits' scale: the access size
	switch {
	case lo&0xffc00000 == 0x91000000: // ADD Xd, Xn, #imm12
	case lo&0x3b000000 == 0x39000000: // LDR/STR (unsigned offset, scaled)
		scale = uint(lo >> 30)
		if lo&(1<<26) != 0 && scale == 0 && lo&(1<<23) != 0 {
			scale = 4 // 128-bit SIMD register
		}
	default:
		return
	}
	if lo>>5&31 != rd {
		return
	}
	pc, npc, ok := p.arm64Places(pos)
	if !ok {
		return
	}
	page := signExtend(w>>29&3|(w>>5&0x7ffff)<<2, 21) << 12
	target := pc&^0xfff + uint64(page) + uint64(lo>>10&0xfff)<<scale
	p.typeRef(target)
	nt, ok := p.m.addr(target)
	if !ok || nt&(1<<scale-1) != 0 {
		return
	}
	np := int64(nt&^0xfff-npc&^0xfff) >> 12
	if np != signExtend(uint32(np)&0x1fffff, 21) {
		return
	}
	imm := uint32(np) & 0x1fffff
	if nw := w&^(3<<29|0x7ffff<<5) | (imm&3)<<29 | (imm>>2)<<5; nw != w {
		p.add(pos, nw)
	}
	if nlo := lo&^(0xfff<<10) | uint32(nt&0xfff>>scale)<<10; nlo != lo {
		p.add(pos+4, nlo)
	}
}
