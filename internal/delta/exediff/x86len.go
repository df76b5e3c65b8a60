package exediff

// A length decoder for x86-64: it finds where each instruction ends and
// whether it holds a 4-byte PC-relative field (a rel32 branch or call
// target, or a RIP-relative displacement), which is all the prediction
// needs. Full disassemblers cost ten times more per byte, and their
// releases would become part of the patch format (both sides must find the
// same slots); this one is pinned by the patch magic.
//
// It follows the Intel SDM's opcode maps for 64-bit mode: legacy
// prefixes, REX, the one-byte, 0F, 0F38 and 0F3A maps, VEX (C4, C5) and
// EVEX (62). Operand values do not matter, only the sizes of ModRM, SIB,
// displacement and immediate.

// Operand shapes of an opcode, in an opcode map's table.
const (
	opNone    = iota // no ModRM, no immediate
	opModRM          // ModRM (+SIB, displacement)
	opModRMIb        // ModRM and an 8-bit immediate
	opModRMIz        // ModRM and a 16/32-bit immediate
	opIb             // 8-bit immediate (or rel8)
	opIw             // 16-bit immediate
	opIz             // 16/32-bit immediate
	opIv             // 16/32/64-bit immediate (MOV r, imm)
	opRel32          // rel32 branch or call
	opMoffs          // 64-bit (32 with 67) absolute address
	opEnter          // 16-bit and 8-bit immediates
	opGroup3         // F6/F7: ModRM, immediate only for TEST (/0, /1)
	opPrefix         // legacy prefix
	opREX            // REX prefix
	opEscape         // 0F
	opVEX3           // C4
	opVEX2           // C5
	opEVEX           // 62
	opInvalid        // not valid in 64-bit mode
)

// x86Map1 and x86Map0F are the operand shapes of the one-byte and 0F
// opcode maps.
var x86Map1, x86Map0F = func() (m1, m2 [256]uint8) {
	set := func(m *[256]uint8, lo, hi int, v uint8) {
		for i := lo; i <= hi; i++ {
			m[i] = v
		}
	}
	// One-byte map: the eight ALU blocks first (ADD ... CMP), each
	// r/m,r forms, then AL,ib and eAX,iz.
	for b := 0x00; b < 0x40; b += 8 {
		set(&m1, b, b+3, opModRM)
		m1[b+4], m1[b+5] = opIb, opIz
		m1[b+6], m1[b+7] = opInvalid, opInvalid
	}
	m1[0x0f] = opEscape
	for _, p := range []int{0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3} {
		m1[p] = opPrefix
	}
	set(&m1, 0x40, 0x4f, opREX)
	set(&m1, 0x50, 0x5f, opNone)
	m1[0x60], m1[0x61], m1[0x62], m1[0x63] = opInvalid, opInvalid, opEVEX, opModRM
	m1[0x68], m1[0x69], m1[0x6a], m1[0x6b] = opIz, opModRMIz, opIb, opModRMIb
	set(&m1, 0x6c, 0x6f, opNone)
	set(&m1, 0x70, 0x7f, opIb)
	m1[0x80], m1[0x81], m1[0x82], m1[0x83] = opModRMIb, opModRMIz, opInvalid, opModRMIb
	set(&m1, 0x84, 0x8f, opModRM)
	set(&m1, 0x90, 0x9f, opNone)
	m1[0x9a] = opInvalid
	set(&m1, 0xa0, 0xa3, opMoffs)
	set(&m1, 0xa4, 0xaf, opNone)
	m1[0xa8], m1[0xa9] = opIb, opIz
	set(&m1, 0xb0, 0xb7, opIb)
	set(&m1, 0xb8, 0xbf, opIv)
	m1[0xc0], m1[0xc1], m1[0xc2], m1[0xc3] = opModRMIb, opModRMIb, opIw, opNone
	m1[0xc4], m1[0xc5], m1[0xc6], m1[0xc7] = opVEX3, opVEX2, opModRMIb, opModRMIz
	m1[0xc8], m1[0xc9], m1[0xca], m1[0xcb] = opEnter, opNone, opIw, opNone
	m1[0xcc], m1[0xcd], m1[0xce], m1[0xcf] = opNone, opIb, opInvalid, opNone
	set(&m1, 0xd0, 0xd3, opModRM)
	m1[0xd4], m1[0xd5], m1[0xd6], m1[0xd7] = opInvalid, opInvalid, opInvalid, opNone
	set(&m1, 0xd8, 0xdf, opModRM) // x87
	set(&m1, 0xe0, 0xe7, opIb)    // LOOP, JrCXZ (rel8), IN, OUT
	m1[0xe8], m1[0xe9], m1[0xea], m1[0xeb] = opRel32, opRel32, opInvalid, opIb
	set(&m1, 0xec, 0xef, opNone)
	m1[0xf1], m1[0xf4], m1[0xf5] = opNone, opNone, opNone
	m1[0xf6], m1[0xf7] = opGroup3, opGroup3
	set(&m1, 0xf8, 0xfd, opNone)
	m1[0xfe], m1[0xff] = opModRM, opModRM

	// 0F map: ModRM unless listed.
	set(&m2, 0x00, 0xff, opModRM)
	for _, b := range []int{0x04, 0x0a, 0x0c, 0x24, 0x25, 0x26, 0x27, 0x36, 0x39, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0xa6, 0xa7} {
		m2[b] = opInvalid
	}
	for _, b := range []int{0x05, 0x06, 0x07, 0x08, 0x09, 0x0b, 0x0e, 0x77, 0xa0, 0xa1, 0xa2, 0xa8, 0xa9, 0xaa} {
		m2[b] = opNone
	}
	set(&m2, 0x30, 0x37, opNone) // WRMSR ... GETSEC
	m2[0x38], m2[0x3a] = opEscape, opEscape
	set(&m2, 0x70, 0x73, opModRMIb)
	set(&m2, 0x80, 0x8f, opRel32)
	set(&m2, 0xc8, 0xcf, opNone) // BSWAP
	for _, b := range []int{0x0f, 0xa4, 0xac, 0xba, 0xc2, 0xc4, 0xc5, 0xc6} {
		m2[b] = opModRMIb
	}
	return m1, m2
}()

// vexImm8 reports whether a VEX or EVEX instruction of map 0F takes an
// 8-bit immediate (those of map 0F3A all do, of 0F38 none).
func vexImm8(op byte) bool {
	return op >= 0x70 && op <= 0x73 || op == 0xc2 || op >= 0xc4 && op <= 0xc6
}

// decodeX86 decodes the instruction at the start of b: its length n and
// the offset rel of its 4-byte PC-relative field (0 if none). ok is false
// when b does not start with a valid instruction.
func decodeX86(b []byte) (n, rel int, ok bool) {
	const maxLen = 15
	i := 0
	opsize, addrsize, rexW := false, false, false
	at := func(k int) (byte, bool) {
		if k >= len(b) || k >= maxLen {
			return 0, false
		}
		return b[k], true
	}
	// Legacy prefixes, then an optional REX.
	var op byte
	var shape uint8
	for {
		c, ok := at(i)
		if !ok {
			return 0, 0, false
		}
		shape = x86Map1[c]
		if shape != opPrefix {
			op = c
			break
		}
		opsize = opsize || c == 0x66
		addrsize = addrsize || c == 0x67
		i++
	}
	if shape == opREX {
		rexW = op&8 != 0
		i++
		c, ok := at(i)
		if !ok {
			return 0, 0, false
		}
		op, shape = c, x86Map1[c]
		if shape == opPrefix || shape == opREX {
			return 0, 0, false // a prefix after REX: not emitted by compilers
		}
	}
	i++ // the opcode byte
	imm := 0
	switch shape {
	case opInvalid, opPrefix, opREX:
		return 0, 0, false
	case opNone:
		return i, 0, true
	case opModRM:
	case opModRMIb:
		imm = 1
	case opModRMIz:
		if op == 0xc7 && i < len(b) && b[i] == 0xf8 && !opsize { // XBEGIN rel32
			return checkLen(b, i+5, i+1)
		}
		imm = izSize(opsize)
	case opIb:
		return checkLen(b, i+1, 0)
	case opIw:
		return checkLen(b, i+2, 0)
	case opIz:
		return checkLen(b, i+izSize(opsize), 0)
	case opIv:
		switch {
		case rexW:
			return checkLen(b, i+8, 0)
		case opsize:
			return checkLen(b, i+2, 0)
		}
		return checkLen(b, i+4, 0)
	case opRel32:
		return checkLen(b, i+4, i)
	case opMoffs:
		if addrsize {
			return checkLen(b, i+4, 0)
		}
		return checkLen(b, i+8, 0)
	case opEnter:
		return checkLen(b, i+3, 0)
	case opGroup3:
		m, ok := at(i)
		if !ok {
			return 0, 0, false
		}
		if (m>>3)&7 <= 1 { // TEST r/m, imm
			if op == 0xf6 {
				imm = 1
			} else {
				imm = izSize(opsize)
			}
		}
	case opEscape:
		c, ok := at(i)
		if !ok {
			return 0, 0, false
		}
		i++
		switch c {
		case 0x38:
			if i++; i > len(b) {
				return 0, 0, false
			}
		case 0x3a:
			if i++; i > len(b) {
				return 0, 0, false
			}
			imm = 1
		default:
			switch x86Map0F[c] {
			case opInvalid:
				return 0, 0, false
			case opNone:
				return checkLen(b, i, 0)
			case opRel32:
				return checkLen(b, i+4, i)
			case opModRMIb:
				imm = 1
			}
		}
	case opVEX2, opVEX3, opEVEX:
		if i > 1 {
			return 0, 0, false // VEX and EVEX take no legacy prefix or REX
		}
		payload, mapSel := 1, 1 // VEX2: one byte, the 0F map
		if shape != opVEX2 {
			payload = 2
			if shape == opEVEX {
				payload = 3
			}
			p0, ok := at(i)
			if !ok {
				return 0, 0, false
			}
			mapSel = int(p0 & 0x1f)
			if shape == opEVEX {
				mapSel = int(p0 & 7)
			}
		}
		i += payload
		c, ok := at(i)
		if !ok {
			return 0, 0, false
		}
		i++
		switch mapSel {
		case 1:
			if c == 0x77 && shape != opEVEX { // VZEROUPPER, VZEROALL
				return checkLen(b, i, 0)
			}
			if vexImm8(c) {
				imm = 1
			}
		case 2, 5, 6:
		case 3:
			imm = 1
		default:
			return 0, 0, false
		}
	}
	return modRM(b, i, imm)
}

func izSize(opsize bool) int {
	if opsize {
		return 2
	}
	return 4
}

// modRM decodes the ModRM byte at b[i], its SIB and displacement, and imm
// bytes of immediate after them.
func modRM(b []byte, i, imm int) (n, rel int, ok bool) {
	if i >= len(b) {
		return 0, 0, false
	}
	m := b[i]
	i++
	mod, rm := m>>6, m&7
	disp := 0
	switch mod {
	case 0:
		if rm == 5 { // RIP-relative
			return checkLen(b, i+4+imm, i)
		}
	case 1:
		disp = 1
	case 2:
		disp = 4
	}
	if mod != 3 && rm == 4 { // SIB
		if i >= len(b) {
			return 0, 0, false
		}
		if mod == 0 && b[i]&7 == 5 {
			disp = 4
		}
		i++
	}
	return checkLen(b, i+disp+imm, 0)
}

// checkLen returns n and rel if an instruction of n bytes fits in b and in
// the architecture's 15.
func checkLen(b []byte, n, rel int) (int, int, bool) {
	if n > len(b) || n > 15 {
		return 0, 0, false
	}
	return n, rel, true
}
