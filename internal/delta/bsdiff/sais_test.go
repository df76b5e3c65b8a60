package bsdiff

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

func naiveSuffixArray(text []byte) []int32 {
	sa := make([]int32, len(text))
	for i := range sa {
		sa[i] = int32(i)
	}
	slices.SortFunc(sa, func(a, b int32) int { return bytes.Compare(text[a:], text[b:]) })
	return sa
}

// suffixInputs yields small texts that stress the recursion: constant,
// periodic, tiny alphabets and runs.
func suffixInputs(rng *rand.Rand, yield func(string, []byte)) {
	for n := range 40 {
		yield("zeros", make([]byte, n))
	}
	for _, period := range []int{1, 2, 3, 5, 8, 13} {
		for _, n := range []int{period, 2*period + 1, 100, 1000} {
			unit := make([]byte, period)
			for i := range unit {
				unit[i] = byte(rng.IntN(3))
			}
			t := bytes.Repeat(unit, n/period+1)[:n]
			yield("periodic", t)
			if n > 2 {
				u := bytes.Clone(t)
				u[rng.IntN(n)] ^= 1
				yield("periodic with a flaw", u)
			}
		}
	}
	for _, alpha := range []int{1, 2, 4, 256} {
		for range 150 {
			t := make([]byte, rng.IntN(600))
			for i := range t {
				t[i] = byte(rng.IntN(alpha))
			}
			yield("random", t)
		}
	}
	for range 100 {
		// Runs of random lengths: many equal LMS substrings.
		var t []byte
		for len(t) < 500 {
			t = append(t, bytes.Repeat([]byte{byte(rng.IntN(4))}, 1+rng.IntN(6))...)
		}
		yield("runs", t)
	}
	fib := []byte("a")
	prev := []byte("b")
	for len(fib) < 3000 {
		fib, prev = append(bytes.Clone(fib), prev...), fib
	}
	yield("fibonacci", fib)
}

func TestSuffixArray(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	count := 0
	suffixInputs(rng, func(name string, text []byte) {
		count++
		got := SuffixArray(text)
		want := naiveSuffixArray(text)
		if !slices.Equal(got, want) {
			t.Fatalf("%s %q: got %v, want %v", name, text, got, want)
		}
	})
	t.Logf("%d texts", count)
}

// TestSuffixArrayLarge checks order and completeness on inputs too large
// for the naive sort, with deep recursion.
func TestSuffixArrayLarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	n := 1 << 20
	if raceEnabled {
		n = 1 << 16
	}
	texts := map[string][]byte{"zeros": make([]byte, n)}
	r := make([]byte, n)
	for i := range r {
		r[i] = byte(rng.IntN(256))
	}
	texts["random"] = r
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(2))
	}
	texts["binary"] = b
	texts["repeated block"] = bytes.Repeat(r[:4099], n/4099)
	for name, text := range texts {
		checkSuffixArray(t, name, text, SuffixArray(text))
	}
}

// checkSuffixArray verifies sa in linear time: it must be a permutation,
// and adjacent suffixes must be ordered by first byte, then by the ranks of
// the suffixes that follow it (the empty suffix ranking lowest).
func checkSuffixArray(t *testing.T, name string, text []byte, sa []int32) {
	t.Helper()
	if len(sa) != len(text) {
		t.Fatalf("%s: %d entries for %d bytes", name, len(sa), len(text))
	}
	rank := make([]int, len(text)+1)
	for i := range rank {
		rank[i] = -1
	}
	for i, p := range sa {
		if p < 0 || int(p) >= len(text) || rank[p] >= 0 {
			t.Fatalf("%s: entry %d = %d invalid or repeated", name, i, p)
		}
		rank[p] = i
	}
	rank[len(text)] = -1
	for i := 1; i < len(sa); i++ {
		a, b := sa[i-1], sa[i]
		if text[a] > text[b] || (text[a] == text[b] && rank[a+1] >= rank[b+1]) {
			t.Fatalf("%s: suffixes %d and %d out of order", name, a, b)
		}
	}
}

// TestLongest checks the search against bytes.Index: the match it returns
// is real, and no longer one exists. Small alphabets make the prefix
// classes large enough for three- and four-byte tables.
func TestLongest(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	n := 200 << 10
	if raceEnabled {
		n = 50 << 10
	}
	for _, alpha := range []int{2, 3, 16, 256} {
		old := make([]byte, n)
		for i := range old {
			old[i] = byte(rng.IntN(alpha))
		}
		d := &differ{start: make([]int32, keyCount+1), subOf: make([]int32, keyCount)}
		d.index(old)
		if alpha <= 3 && d.tables() == 0 {
			t.Fatalf("alphabet %d: no prefix tables built", alpha)
		}
		for q := range 300 {
			var probe []byte
			switch q % 3 {
			case 0: // a piece of old, perhaps altered
				p := rng.IntN(n)
				probe = bytes.Clone(old[p:min(n, p+1+rng.IntN(60))])
				if len(probe) > 1 && rng.IntN(2) == 0 {
					probe[rng.IntN(len(probe))] ^= 1
				}
			case 1: // random
				probe = make([]byte, 1+rng.IntN(30))
				for i := range probe {
					probe[i] = byte(rng.IntN(alpha + 1))
				}
			case 2: // very short
				probe = []byte{byte(rng.IntN(alpha + 1)), byte(rng.IntN(alpha + 1))}[:1+rng.IntN(2)]
			}
			pos, m := d.longest(probe)
			if m < 0 || m > len(probe) || pos < 0 || pos+m > n || !bytes.Equal(old[pos:pos+m], probe[:m]) {
				t.Fatalf("alphabet %d: longest(%x) = %d, %d: not a match", alpha, probe, pos, m)
			}
			if m < len(probe) && bytes.Contains(old, probe[:m+1]) {
				t.Fatalf("alphabet %d: longest(%x) = %d bytes, a longer match exists", alpha, probe, m)
			}
		}
	}
}
