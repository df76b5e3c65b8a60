package exediff

import "encoding/binary"

// x86Operands: rel32 branch and call operands and RIP-relative
// displacements in x86-64 code, found by decoding the executable sections
// from their start (Go and C compilers put no data there; where decoding
// fails it resumes at the next byte).
func (p *predictor) x86Operands() {
	if !p.m.old.x86 {
		return
	}
	for _, s := range p.m.old.exec {
		end := int64(s.off + s.size)
		for pos := int64(s.off); pos < end; {
			b := p.seq.at(pos, int(min(15, end-pos)))
			if b == nil {
				return
			}
			n, rel, ok := decodeX86(b)
			if !ok {
				pos++
				continue
			}
			if rel > 0 {
				p.rel32(pos+int64(rel), pos+int64(n))
			}
			pos += int64(n)
		}
	}
}

// rel32 predicts an operand at old offset pos relative to the instruction
// end at old offset end.
func (p *predictor) rel32(pos, end int64) {
	v := p.seq.at(pos, 4)
	if v == nil {
		return
	}
	old := int32(binary.LittleEndian.Uint32(v))
	oe, ok := p.m.old.offAddr(uint64(end))
	if !ok {
		return
	}
	target := oe + uint64(int64(old))
	p.typeRef(target)
	ne, ok := p.m.off(end)
	if !ok || ne < 0 {
		return
	}
	nea, ok := p.m.new.offAddr(uint64(ne))
	if !ok {
		return
	}
	nt, ok := p.m.addr(target)
	if !ok {
		return
	}
	d := int64(nt - nea)
	if d != int64(int32(d)) || int32(d) == old {
		return
	}
	p.add(pos, uint32(int32(d)))
}
