package exediff

import "testing"

// FuzzDwarf: the DIE walker, the line program reader and the abbreviation
// parser take any bytes (a crafted executable in an image reaches them on
// both sides) without panicking or predicting outside their input.
func FuzzDwarf(f *testing.F) {
	// A DWARF 5 unit: header, one DIE of abbrev 1 (ref_addr, sec_offset,
	// addr, exprloc, string), the end.
	abbr := []byte{1, 0x11, 1, 0x49, 0x10, 0x10, 0x17, 0x11, 0x01, 0x02, 0x18, 0x03, 0x08, 0, 0, 0}
	unit := []byte{0, 0, 0, 0, 5, 0, 1, 8, 0, 0, 0, 0,
		1, 4, 0, 0, 0, 8, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 9, 3, 1, 2, 3, 4, 5, 6, 7, 8, 'a', 0, 0}
	unit[0] = byte(len(unit) - 4)
	f.Add(unit, abbr)
	f.Add([]byte{7, 0, 0, 0, 4, 0, 0, 0, 0, 0, 8}, abbr)
	f.Fuzz(func(t *testing.T, unit, abbr []byte) {
		om := &model{lo: 0x1000, hi: 0x2000}
		for b := range om.bases {
			om.bases[b] = 0x100
		}
		nl := &layout{bases: om.bases}
		p := &predictor{m: newMapper(om, nl, []piece{{old: 0, shift: 8, n: 1 << 20}}), limit: maxPreds}
		if len(unit) >= 11 {
			p.dwarfUnit(unit, 0, abbr, map[uint64]map[uint64]abbrev{})
		}
		p.lineProgram(unit, 0)
		for _, q := range p.preds {
			if int64(q.pos)+predWidth > int64(len(unit)) {
				t.Fatalf("prediction at %d outside the %d-byte unit", q.pos, len(unit))
			}
		}
		parseAbbrevs(abbr, uint64(len(abbr)/2))
	})
}

// TestDwarfUnit: the walker predicts each kind of slot in a hand-made unit.
func TestDwarfUnit(t *testing.T) {
	// ref_addr, sec_offset (stmt_list), addr (low_pc), exprloc, string
	// (name), addr (Go's runtime type), block1 (location).
	abbr := []byte{1, 0x11, 1, 0x49, 0x10, 0x10, 0x17, 0x11, 0x01, 0x02, 0x18, 0x03, 0x08,
		0x84, 0x52, 0x01, 0x02, 0x0a, 0, 0, 0}
	unit := []byte{0, 0, 0, 0, 5, 0, 1, 8, 0, 0, 0, 0,
		1, 4, 0, 0, 0, 8, 0, 0, 0, 0x10, 0x10, 0, 0, 0, 0, 0, 0, 9, 3, 0x20, 0x10, 0, 0, 0, 0, 0, 0, 'a', 0,
		0x10, 0, 0, 0, 0, 0, 0, 0, 9, 3, 0x30, 0x10, 0, 0, 0, 0, 0, 0, 0}
	unit[0] = byte(len(unit) - 4)
	// Old and new: the same sections, every file offset moved by 8 in
	// the new file, and addresses with them; the type data starts at
	// 0x1100 in both, so offsets into it grow by 8.
	om := &model{lo: 0x1000, hi: 0x2000, layout: layout{secs: []section{{addr: 0x1000, off: 0x1000, size: 0x1000}}}, etypes: 0x1200}
	nl := layout{secs: []section{{addr: 0x1000, off: 0x1000, size: 0x1008}}}
	for b := baseDebugInfo; b < numBases; b++ {
		om.bases[b], nl.bases[b] = 0x100, 0x100
	}
	om.bases[baseTypes], nl.bases[baseTypes] = 0x1100, 0x1100
	p := &predictor{m: newMapper(om, &nl, []piece{{old: 0, shift: 8, n: 1 << 20}}), limit: maxPreds}
	p.dwarfUnit(unit, 0x100, abbr, map[uint64]map[uint64]abbrev{})
	got := map[uint32]uint32{}
	for _, q := range p.preds {
		got[q.pos-0x100] = q.val
	}
	want := map[uint32]uint32{13: 4 + 8, 17: 8 + 8, 21: 0x1010 + 8, 31: 0x1020 + 8, 41: 0x10 + 8, 51: 0x1030 + 8}
	if len(got) != len(want) {
		t.Fatalf("predictions %v, want %v", got, want)
	}
	for pos, v := range want {
		if got[pos] != v {
			t.Errorf("at %d: %#x, want %#x", pos, got[pos], v)
		}
	}
}
