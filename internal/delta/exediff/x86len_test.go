package exediff

import (
	"bytes"
	"debug/elf"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"github.com/outpost-registry/outpost/internal/delta/exediff/exetest"
)

// textOf returns the executable sections' bytes of an x86-64 ELF file.
func textOf(t *testing.T, b []byte) [][]byte {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if f.Machine != elf.EM_X86_64 {
		t.Skipf("not x86-64 code (%v)", f.Machine)
	}
	var out [][]byte
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_EXECINSTR != 0 && s.Type == elf.SHT_PROGBITS {
			d, err := s.Data()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, d)
		}
	}
	return out
}

// compareX86asm walks code with decodeX86 and checks every instruction
// against golang.org/x/arch's full disassembler: the same length and the
// same 4-byte PC-relative field. Instructions x86asm does not know
// (AVX-512, say) are counted, not compared. It returns the instructions
// compared.
func compareX86asm(t *testing.T, name string, code []byte) int {
	t.Helper()
	compared, unknown, bad := 0, 0, 0
	for pos := 0; pos < len(code); {
		b := code[pos:min(pos+15, len(code))]
		n, rel, ok := decodeX86(b)
		inst, err := x86asm.Decode(b, 64)
		switch {
		case err != nil && !ok:
			pos++
			continue
		case err != nil || x86asmWrong(b, n, rel, inst):
			unknown++
		case !ok || n != inst.Len || rel != pcRel32(inst):
			bad++
			if bad <= 40 {
				t.Errorf("%s+%#x: % x: decodeX86 = %d, %d, %v; x86asm: %v, length %d, rel32 at %d", name, pos, b[:min(len(b), max(n, inst.Len))], n, rel, ok, inst, inst.Len, pcRel32(inst))
			}
		default:
			compared++
		}
		if !ok {
			n = max(inst.Len, 1)
		}
		pos += n
	}
	t.Logf("%s: %d instructions agree, %d unknown to x86asm, %d differ", name, compared, unknown, bad)
	return compared
}

// x86asmWrong reports the encodings x86asm v0.32.0 decodes wrongly:
// VZEROUPPER and VZEROALL (it reads a ModRM byte they do not have), EVEX
// and some VEX RIP-relative operands (it does not mark them PC-relative),
// and ENDBR64 (one byte, it says).
func x86asmWrong(b []byte, n, rel int, inst x86asm.Inst) bool {
	vexRIP := (b[0] == 0xc4 || b[0] == 0xc5) && n == inst.Len && rel > 0 && pcRel32(inst) == 0
	return vexRIP || bytes.HasPrefix(b, []byte{0xc5, 0xf8, 0x77}) || bytes.HasPrefix(b, []byte{0xc5, 0xfc, 0x77}) ||
		b[0] == 0x62 || bytes.HasPrefix(b, []byte{0xf3, 0x0f, 0x1e})
}

func pcRel32(inst x86asm.Inst) int {
	if inst.PCRel == 4 && inst.PCRelOff > 0 && inst.PCRelOff+4 <= inst.Len {
		return inst.PCRelOff
	}
	return 0
}

// TestX86Lengths: the length decoder agrees with x86asm on every
// instruction of a Go program and, where the machine has them, of
// C-compiled code with SSE, AVX and AVX-512 (libc's string functions).
func TestX86Lengths(t *testing.T) {
	prog, _ := exetest.GoBuilds(t)
	n := 0
	for _, code := range textOf(t, prog) {
		n += compareX86asm(t, "go program", code)
	}
	if n < 10000 {
		t.Errorf("only %d instructions compared", n)
	}
	for _, path := range []string{"/lib/x86_64-linux-gnu/libc.so.6", "/bin/bash"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Logf("%s: %v (not compared)", path, err)
			continue
		}
		for _, code := range textOf(t, b) {
			compareX86asm(t, path, code)
		}
	}
}

// TestX86Encodings: hand-picked encodings, above all those x86asm cannot
// check (VEX with immediates, EVEX).
func TestX86Encodings(t *testing.T) {
	for _, c := range []struct {
		hex     string
		n, rel  int
		invalid bool
	}{
		{hex: "e8 00 00 00 00", n: 5, rel: 1},                                   // CALL rel32
		{hex: "0f 84 10 00 00 00", n: 6, rel: 2},                                // JE rel32
		{hex: "48 8d 05 10 00 00 00", n: 7, rel: 3},                             // LEAQ off(RIP), AX
		{hex: "81 3d 10 00 00 00 78 56 34 12", n: 10, rel: 2},                   // CMPL $imm32, off(RIP)
		{hex: "66 66 2e 0f 1f 84 00 00 00 00 00", n: 11},                        // long NOP
		{hex: "48 b8 01 02 03 04 05 06 07 08", n: 10},                           // MOVQ $imm64, AX
		{hex: "c5 fd 70 c1 1b", n: 5},                                           // VPSHUFD ymm (VEX2, imm8)
		{hex: "c4 e3 7d 38 c1 01", n: 6},                                        // VINSERTI128 (VEX3 map 0F3A)
		{hex: "c4 e2 7d 58 05 10 00 00 00", n: 9, rel: 5},                       // VPBROADCASTD off(RIP), ymm
		{hex: "62 f1 7c 48 10 05 10 00 00 00", n: 10, rel: 6},                   // VMOVUPS off(RIP), zmm (EVEX)
		{hex: "62 f3 7d 48 3f c1 00", n: 7},                                     // VPCMPB $0, zmm (EVEX map 0F3A)
		{hex: "62 f1 7c 48 10 44 24 01", n: 8},                                  // VMOVUPS 64(SP), zmm (disp8*N)
		{hex: "c5 f8 77", n: 3},                                                 // VZEROUPPER
		{hex: "f3 0f 1e fa", n: 4},                                              // ENDBR64
		{hex: "a1 01 02 03 04 05 06 07 08", n: 9},                               // MOVL moffs64, EAX
		{hex: "f6 c1 01", n: 3},                                                 // TESTB $1, CL
		{hex: "f7 d8", n: 2},                                                    // NEGL AX
		{hex: "c8 10 00 01", n: 4},                                              // ENTER
		{hex: "06", invalid: true},                                              // PUSH ES: not in 64-bit mode
		{hex: "48 66 90", invalid: true},                                        // a prefix after REX
		{hex: "66 c5 f8 77", invalid: true},                                     // a prefix before VEX
		{hex: "e8 00 00", invalid: true},                                        // truncated
		{hex: "66 66 66 66 66 66 66 66 66 66 66 66 66 66 66 90", invalid: true}, // 16 bytes
	} {
		b := mustHex(t, c.hex)
		n, rel, ok := decodeX86(b)
		if c.invalid {
			if ok {
				t.Errorf("% x: decoded as %d bytes, want invalid", b, n)
			}
			continue
		}
		if !ok || n != c.n || rel != c.rel {
			t.Errorf("% x: %d, %d, %v; want %d, %d", b, n, rel, ok, c.n, c.rel)
		}
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzDecodeX86: any bytes decode to an in-bounds length and field, or to
// invalid; never a panic.
func FuzzDecodeX86(f *testing.F) {
	f.Add([]byte{0xe8, 0, 0, 0, 0})
	f.Add([]byte{0x62, 0xf1, 0x7c, 0x48, 0x10, 0x05, 0x10, 0, 0, 0})
	f.Add([]byte{0xc4, 0xe3, 0x7d, 0x38, 0xc1, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, rel, ok := decodeX86(b)
		if !ok {
			return
		}
		if n < 1 || n > 15 || n > len(b) || rel < 0 || (rel > 0 && rel+4 > n) {
			t.Fatalf("% x: length %d, rel32 at %d", b, n, rel)
		}
	})
}
