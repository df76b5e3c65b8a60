package exediff

import (
	"cmp"
	"encoding/binary"
	"slices"
)

// Go's funcdata kinds read here (internal/abi FUNCDATA_*).
const (
	funcdataStackObjects = 2
	funcdataInlTree      = 3
)

// funcdata is one funcdata symbol: its old address and kind.
type funcdata struct {
	addr uint64
	kind uint8
}

// goTables: the offsets in the Go runtime's pclntab and funcdata. (The
// type data waits for goTypes, which needs the other passes' references.)
func (p *predictor) goTables() {
	p.funcdata(p.functab())
}

// functab: the function table (entry and record offsets) and each
// function record's entry, name, pc-value table and funcdata offsets. It
// returns the funcdata symbols the records name.
func (p *predictor) functab() []funcdata {
	om := p.m.old
	le := binary.LittleEndian
	if om.nfunc == 0 || !p.usable(baseFunctab) {
		return nil
	}
	var fds []funcdata
	var pcdata, fdOffs []uint32 // each record's, reused
	ftab, _ := om.addrOff(om.bases[baseFunctab])
	text, pctab, fname, gofunc := p.usable(baseText), p.usable(basePctab), p.usable(baseFuncname), p.usable(baseGofunc)
	for i := range om.nfunc + 1 {
		e := int64(ftab + 8*i)
		ent := p.seq.at(e, 8)
		if ent == nil {
			return fds
		}
		funcoff := le.Uint32(ent[4:])
		if text {
			p.offset(p.seq, e, baseText)
		}
		p.offset(p.seq, e+4, baseFunctab)
		if i == om.nfunc {
			break
		}
		f := int64(ftab) + int64(funcoff)
		rec := p.rnd.at(f, funcRecordSize)
		if rec == nil {
			continue
		}
		npc, nfd := le.Uint32(rec[28:]), uint32(rec[43])
		pcdata, fdOffs = pcdata[:0], fdOffs[:0]
		if npc > 64 {
			// Not a record this package reads: only its fixed fields.
		} else if b := p.rnd.at(f+funcRecordSize, int(4*(npc+nfd))); b != nil {
			for k := range npc + nfd {
				if k < npc {
					pcdata = append(pcdata, le.Uint32(b[4*k:]))
				} else {
					fdOffs = append(fdOffs, le.Uint32(b[4*k:]))
				}
			}
		}
		if text {
			p.offset(p.rnd, f, baseText)
		}
		if fname {
			p.offset(p.rnd, f+4, baseFuncname)
		}
		if pctab {
			for _, k := range [...]int64{16, 20, 24} {
				p.offset(p.rnd, f+k, basePctab)
			}
			for k, v := range pcdata {
				if v != 0 {
					p.offset(p.rnd, f+funcRecordSize+4*int64(k), basePctab)
				}
			}
		}
		if !gofunc {
			continue
		}
		for k, v := range fdOffs {
			if v == ^uint32(0) {
				continue
			}
			p.offset(p.rnd, f+funcRecordSize+4*int64(npc)+4*int64(k), baseGofunc)
			if len(fds) < maxFuncdata {
				fds = append(fds, funcdata{addr: om.bases[baseGofunc] + uint64(v), kind: uint8(k)})
			}
		}
	}
	return fds
}

// funcdata: the offsets inside funcdata symbols. Each symbol runs at most
// to the next one's start (they are laid out one after another):
//   - stack objects: a count, then 16-byte records whose last word is
//     their GC data's offset from moduledata.rodata;
//   - inline trees: 16-byte entries whose second word is the inlined
//     function's name offset (runtime.inlinedCall).
func (p *predictor) funcdata(fds []funcdata) {
	if len(fds) == 0 {
		return
	}
	le := binary.LittleEndian
	slices.SortFunc(fds, func(a, b funcdata) int {
		if a.addr != b.addr {
			return cmp.Compare(a.addr, b.addr)
		}
		return int(a.kind) - int(b.kind)
	})
	rodata, fname := p.usable(baseRodata), p.usable(baseFuncname)
	for i, fd := range fds {
		if i > 0 && fds[i-1].addr == fd.addr {
			continue // shared symbol: read once
		}
		end := p.m.old.pcln.addr + p.m.old.pcln.size
		for _, next := range fds[i+1:] {
			if next.addr != fd.addr {
				end = next.addr
				break
			}
		}
		off, ok := p.m.old.addrOff(fd.addr)
		if !ok || end <= fd.addr {
			continue
		}
		room := int64(end - fd.addr)
		pos := int64(off)
		switch {
		case fd.kind == funcdataStackObjects && rodata:
			b := p.rnd.at(pos, 8)
			if b == nil {
				continue
			}
			n := le.Uint64(b)
			if n > uint64(room-8)/16 {
				continue
			}
			for k := range int64(n) {
				p.offset(p.rnd, pos+8+16*k+12, baseRodata)
			}
		case fd.kind == funcdataInlTree && fname:
			for k := int64(0); k+16 <= room; k += 16 {
				b := p.rnd.at(pos+k, 16)
				if b == nil || b[1]|b[2]|b[3] != 0 {
					break // not an inlinedCall: the tree has ended
				}
				p.offset(p.rnd, pos+k+4, baseFuncname)
			}
		}
	}
}
