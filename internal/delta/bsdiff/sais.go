package bsdiff

import "math"

// MaxSuffixArrayInput is the longest text SuffixArray accepts: offsets are
// int32, which halves the array's memory against int.
const MaxSuffixArrayInput = math.MaxInt32

// SuffixArray returns the suffix array of text: the start offsets of all its
// suffixes in lexicographic order (a suffix that is a prefix of another sorts
// first). It panics if text is longer than MaxSuffixArrayInput.
//
// The construction is SA-IS (induced sorting of the leftmost S-type
// suffixes, recursing on a reduced string of their names), linear in the
// text length. Beyond the result it needs a bit per byte of text and, in the
// recursion, one int32 per distinct name (at most half the result's
// size).
func SuffixArray(text []byte) []int32 {
	return suffixArrayInto(text, nil)
}

// suffixArrayInto is SuffixArray reusing sa's storage when large enough.
func suffixArrayInto(text []byte, sa []int32) []int32 {
	if len(text) > MaxSuffixArrayInput {
		panic("bsdiff: text too long for a suffix array")
	}
	if cap(sa) < len(text) {
		sa = make([]int32, len(text))
	}
	sa = sa[:len(text)]
	sais(text, sa, 256)
	return sa
}

type symbol interface{ ~byte | ~int32 }

// bitset records suffix types: set for S-type (smaller than the next
// suffix), clear for L-type.
type bitset []uint64

func (b bitset) get(i int) bool { return b[i>>6]&(1<<(uint(i)&63)) != 0 }
func (b bitset) set(i int)      { b[i>>6] |= 1 << (uint(i) & 63) }

// lms reports whether i is a leftmost S-type position: S-type with an
// L-type left neighbour.
func (b bitset) lms(i int) bool { return i > 0 && b.get(i) && !b.get(i-1) }

// sais fills sa (len(text) entries) with the suffix array of text, whose
// symbols lie in [0, k). The text is treated as followed by a virtual
// sentinel smaller than every symbol, so the last suffix is L-type.
func sais[T symbol](text []T, sa []int32, k int) {
	n := len(text)
	switch n {
	case 0:
		return
	case 1:
		sa[0] = 0
		return
	}
	st := make(bitset, (n+63)/64)
	for i := n - 2; i >= 0; i-- {
		if text[i] < text[i+1] || (text[i] == text[i+1] && st.get(i+1)) {
			st.set(i)
		}
	}
	// One bucket array, recounted when needed: in the recursion k can be
	// large, and a second array would cost as much as a quarter of sa.
	bkt := make([]int32, k)

	// Sort the LMS substrings: seed their positions at the bucket ends in
	// any order and induce; the LMS positions then appear sorted by their
	// substring (up to the next LMS position).
	for i := range sa {
		sa[i] = -1
	}
	bucketEnds(text, bkt)
	for i := 1; i < n; i++ {
		if st.lms(i) {
			c := text[i]
			bkt[c]--
			sa[bkt[c]] = int32(i)
		}
	}
	induce(text, sa, st, bkt)

	// Gather the sorted LMS positions at the front and name them: equal
	// substrings get equal names. Names go to sa[m+p/2], distinct since LMS
	// positions are at least two apart, and free since m <= n/2.
	m := 0
	for _, p := range sa {
		if st.lms(int(p)) {
			sa[m] = p
			m++
		}
	}
	for i := m; i < n; i++ {
		sa[i] = -1
	}
	names := 0
	prev := -1
	for i := 0; i < m; i++ {
		p := int(sa[i])
		if prev < 0 || !equalLMS(text, st, p, prev) {
			names++
		}
		prev = p
		sa[m+p/2] = int32(names - 1)
	}
	j := n - 1
	for i := n - 1; i >= m; i-- {
		if sa[i] >= 0 {
			sa[j] = sa[i]
			j--
		}
	}

	// The reduced string (names in text order) sits in sa[n-m:]; its
	// suffix array goes to sa[:m]. Unique names give it directly.
	reduced, sa1 := sa[n-m:], sa[:m]
	if names < m {
		sais(reduced, sa1, names)
	} else {
		for i, c := range reduced {
			sa1[c] = int32(i)
		}
	}

	// Map reduced ranks back to text positions, then induce the full order
	// from the LMS suffixes, now correctly sorted.
	j = 0
	for i := 1; i < n; i++ {
		if st.lms(i) {
			reduced[j] = int32(i)
			j++
		}
	}
	for i, r := range sa1 {
		sa1[i] = reduced[r]
	}
	for i := m; i < n; i++ {
		sa[i] = -1
	}
	bucketEnds(text, bkt)
	for i := m - 1; i >= 0; i-- {
		p := sa[i]
		sa[i] = -1
		c := text[p]
		bkt[c]--
		sa[bkt[c]] = p
	}
	induce(text, sa, st, bkt)
}

// induce places L-type suffixes left to right from the seeded LMS suffixes,
// then S-type suffixes right to left from the L-type ones.
func induce[T symbol](text []T, sa []int32, st bitset, bkt []int32) {
	n := len(text)
	bucketStarts(text, bkt)
	// The virtual sentinel sorts first; its predecessor, the last suffix,
	// is therefore the first L-type suffix induced in its bucket.
	c := text[n-1]
	sa[bkt[c]] = int32(n - 1)
	bkt[c]++
	for i := 0; i < n; i++ {
		if p := sa[i]; p > 0 && !st.get(int(p)-1) {
			c := text[p-1]
			sa[bkt[c]] = p - 1
			bkt[c]++
		}
	}
	bucketEnds(text, bkt)
	for i := n - 1; i >= 0; i-- {
		if p := sa[i]; p > 0 && st.get(int(p)-1) {
			c := text[p-1]
			bkt[c]--
			sa[bkt[c]] = p - 1
		}
	}
}

func bucketStarts[T symbol](text []T, bkt []int32) {
	clear(bkt)
	for _, c := range text {
		bkt[c]++
	}
	sum := int32(0)
	for i, c := range bkt {
		bkt[i] = sum
		sum += c
	}
}

func bucketEnds[T symbol](text []T, bkt []int32) {
	clear(bkt)
	for _, c := range text {
		bkt[c]++
	}
	sum := int32(0)
	for i, c := range bkt {
		sum += c
		bkt[i] = sum
	}
}

// equalLMS reports whether the LMS substrings at a and b (a != b) are
// equal: same symbols and types up to and including the next LMS position.
// A substring reaching the sentinel equals no other.
func equalLMS[T symbol](text []T, st bitset, a, b int) bool {
	n := len(text)
	for i := 0; ; i++ {
		if a+i == n || b+i == n {
			return false
		}
		if text[a+i] != text[b+i] || st.get(a+i) != st.get(b+i) {
			return false
		}
		// Types so far are equal, so both are LMS here or neither is.
		if i > 0 && st.lms(a+i) {
			return true
		}
	}
}
