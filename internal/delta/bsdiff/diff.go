package bsdiff

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/klauspost/compress/zstd"
)

const (
	// keyCount is the number of two-byte prefix classes: for each first
	// byte, the suffix of length one, then one class per second byte.
	keyCount = 256 * 257

	// Two-byte classes larger than subMin get a table of their three-byte
	// subclasses (subSize boundaries: the two-byte suffix, then one per
	// third byte, then the end), whose large subclasses get one for the
	// fourth byte, up to maxLevel. A table and its child links take about
	// 2 KiB, so each level stays within a byte per byte of old (a tenth on
	// executables).
	subMin   = 2048
	subSize  = 258
	maxLevel = 4

	// maxMatch caps the length a single search compares. A longer match
	// is found again, in pieces, by the following searches, so little is
	// lost; without it, each search inside long repeated runs would
	// compare megabytes.
	maxMatch = 64 << 10

	// scanStep is how far the scan moves when a match does not beat the
	// current alignment. bsdiff moves by one byte; two halves the
	// searches, and patches of executables stayed within 0.3% (as often
	// smaller as larger), while three lost 3% on some.
	scanStep = 2
)

// searchBudget (per byte of new) and searchBudgetBase bound the bytes the
// searches compare in total (an estimate: steps times match length). Past
// the budget, the scan skips half of each long match that does not beat
// the alignment instead of searching again one step further, which keeps
// inputs made of long repeats linear. Real inputs stay far below it (two
// Go builds: an estimated 1 GB compared for a 6.9 GB budget). Variables so
// that tests can exhaust the budget.
var (
	searchBudget     int64 = 256
	searchBudgetBase int64 = 64 << 20
)

// differ holds Diff's working memory, pooled because the suffix array of a
// large old is tens of MiB.
type differ struct {
	old         []byte
	sa          []int32
	start       []int32  // SA range of each two-byte prefix class
	subOf       []int32  // index of the class's subclass table in sub, or -1
	sub         []int32  // subclass tables, subSize boundaries each
	child       []int32  // parallel to sub: the subclass's own table, or -1
	work        int64    // bytes compared by searches so far
	filter      []uint64 // bit set of hashes of old's 8-byte strings
	filterShift uint

	triples []triple
	cursor  int // old position after the last triple
	streams [numStreams][]byte
}

type triple struct {
	seek          int64
	diffN, extraN int
}

var differs = sync.Pool{New: func() any {
	return &differ{start: make([]int32, keyCount+1), subOf: make([]int32, keyCount)}
}}

// DiffMemory is what Diff may take for inputs of these sizes, at worst
// (see Diff): callers with a memory budget check it first.
func DiffMemory(oldLen, newLen int) int64 {
	return 7*int64(oldLen) + 3*int64(newLen) + 40<<20
}

// Diff returns a patch that turns old into new (see the package
// documentation for its layout). old may be at most MaxSuffixArrayInput
// bytes.
//
// Diff's memory is about 6 bytes per byte of old (suffix array 4, hash
// filter up to 1, prefix tables usually a fifth, at worst 2) and up to 3
// per byte of new (the streams, compressed and not, and the patch), plus a
// pooled zstd encoder (about 40 MiB). Its time is 0.25 to 0.3 µs per byte
// on executables, and about as much on unrelated inputs, where it gains
// nothing (random data: 0.2 µs per byte of old, 0.15 per byte of new):
// callers should try it only where it may pay.
//
// Diff is deterministic: the same inputs give the same patch.
func Diff(old, new []byte) (patch []byte, err error) {
	err = scan(old, new, func(d *differ) error {
		d.build(new)
		patch, err = d.encode(len(new))
		return err
	})
	return patch, err
}

// scan runs Diff's search of new against old and then f, with a pooled
// differ.
func scan(old, new []byte, f func(*differ) error) error {
	if len(old) > MaxSuffixArrayInput {
		return fmt.Errorf("bsdiff: old of %d bytes exceeds %d", len(old), MaxSuffixArrayInput)
	}
	d := differs.Get().(*differ)
	defer func() {
		d.old = nil
		differs.Put(d)
	}()
	d.index(old)
	d.scan(new)
	return f(d)
}

// Match is a region that Diff pairs: new[New:New+Len] is coded as its
// differences from old[Old:Old+Len].
type Match struct{ Old, New, Len int }

// Align returns the regions Diff would pair, in new's order: an alignment
// of the two files, for callers that model how content moved (package
// exediff). It costs what Diff's search does, without the coding.
func Align(old, new []byte) ([]Match, error) {
	var out []Match
	err := scan(old, new, func(d *differ) error {
		o, w := 0, 0
		for _, t := range d.triples {
			o += int(t.seek)
			if t.diffN > 0 {
				out = append(out, Match{Old: o, New: w, Len: t.diffN})
			}
			o += t.diffN
			w += t.diffN + t.extraN
		}
		return nil
	})
	return out, err
}

// index builds the suffix array of old and the tables of its prefix
// classes: suffixes sharing their first two bytes, then, for large
// classes, sharing one more byte, and so on. The tables replace the first
// steps of every binary search, each a cache miss or two in the suffix
// array and old.
func (d *differ) index(old []byte) {
	d.old = old
	d.sa = suffixArrayInto(old, d.sa)
	clear(d.start)
	for i := range old {
		d.start[prefixKey(old[i:])+1]++
	}
	for i := 1; i < len(d.start); i++ {
		d.start[i] += d.start[i-1]
	}
	d.buildFilter()
	d.sub, d.child = d.sub[:0], d.child[:0]
	first := 0 // first table of the level being built
	for k := range d.subOf {
		d.subOf[k] = -1
		if d.start[k+1]-d.start[k] > subMin {
			d.subOf[k] = d.newTable(d.start[k])
		}
	}
	n := len(old)
	for level := 3; level <= maxLevel && first < d.tables(); level++ {
		// Count each subclass at the slot after its own, then sum: each
		// slot becomes the SA index where its subclass starts.
		for i := 0; i+level-1 <= n; i++ {
			j := d.subOf[prefixKey(old[i:])]
			for l := 3; l < level && j >= 0; l++ {
				j = d.child[int(j)*subSize+1+int(old[i+l-1])]
			}
			if j < 0 {
				continue
			}
			if i+level-1 == n {
				d.sub[int(j)*subSize+1]++
			} else {
				d.sub[int(j)*subSize+2+int(old[i+level-1])]++
			}
		}
		last := d.tables()
		for j := first; j < last; j++ {
			t := d.sub[j*subSize:][:subSize]
			for x := 1; x < subSize; x++ {
				t[x] += t[x-1]
			}
		}
		if level == maxLevel {
			break
		}
		for j := first; j < last; j++ {
			for x := 1; x < subSize-1; x++ {
				if lo, hi := d.sub[j*subSize+x], d.sub[j*subSize+x+1]; hi-lo > subMin {
					d.child[j*subSize+x] = d.newTable(lo)
				}
			}
		}
		first = last
	}
}

// buildFilter sets, for each 8-byte string of old, one bit chosen by its
// hash, in a table of 4 to 8 bits per byte of old: a string whose bit is
// clear does not occur; a random one has its bit set 12 to 22% of the time.
func (d *differ) buildFilter() {
	old := d.old
	bits := uint(6)
	for 2<<bits <= 8*len(old) {
		bits++
	}
	d.filterShift = 64 - bits
	words := 1 << (bits - 6)
	if cap(d.filter) < words {
		d.filter = make([]uint64, words)
	}
	d.filter = d.filter[:words]
	clear(d.filter)
	for i := 0; i+8 <= len(old); i++ {
		h := (binary.LittleEndian.Uint64(old[i:]) * 0x9E3779B97F4A7C15) >> d.filterShift
		d.filter[h>>6] |= 1 << (h & 63)
	}
}

// mayMatch8 reports whether old may hold t's first 8 bytes; false means it
// does not.
func (d *differ) mayMatch8(t []byte) bool {
	if len(t) < 8 {
		return true
	}
	h := (binary.LittleEndian.Uint64(t) * 0x9E3779B97F4A7C15) >> d.filterShift
	return d.filter[h>>6]&(1<<(h&63)) != 0
}

func (d *differ) tables() int { return len(d.sub) / subSize }

// newTable adds a table for a class starting at SA index start, its
// counts zero, and returns its index.
func (d *differ) newTable(start int32) int32 {
	j := d.tables()
	d.sub = append(d.sub, make([]int32, subSize)...)
	d.sub[j*subSize] = start
	for range subSize {
		d.child = append(d.child, -1)
	}
	return int32(j)
}

// prefixKey orders suffixes by their first two bytes, the one-byte suffix
// first, consistently with the suffix array. b is not empty.
func prefixKey(b []byte) int {
	if len(b) == 1 {
		return int(b[0]) * 257
	}
	return int(b[0])*257 + 1 + int(b[1])
}

// longest returns the position in old and the length of the longest prefix
// of t (truncated to maxMatch) that occurs in old.
func (d *differ) longest(t []byte) (pos, n int) {
	if len(t) == 0 || len(d.old) == 0 {
		return 0, 0
	}
	t = t[:min(len(t), maxMatch)]
	sa := d.sa
	if len(t) == 1 {
		k := int(t[0]) * 257
		if lo, hi := d.start[k], d.start[k+257]; lo < hi {
			return int(sa[lo]), 1
		}
		return 0, 0
	}
	// Narrow down to the suffixes sharing t's first two bytes, then three;
	// if there are none, any suffix sharing one byte fewer is a longest
	// match.
	k := prefixKey(t)
	lo, hi := int(d.start[k]), int(d.start[k+1])
	if lo == hi {
		k := int(t[0]) * 257
		if lo, hi := d.start[k], d.start[k+257]; lo < hi {
			return int(sa[lo]), 1
		}
		return 0, 0
	}
	skip := 2
	for j := d.subOf[k]; j >= 0 && skip < len(t); {
		x := int(j)*subSize + 1 + int(t[skip])
		lo1, hi1 := int(d.sub[x]), int(d.sub[x+1])
		if lo1 == hi1 {
			return int(sa[lo]), skip
		}
		lo, hi, skip, j = lo1, hi1, skip+1, d.child[x]
	}
	// Binary search for t among them; the longest match is next to where
	// t would be inserted.
	old, rest := d.old, t[skip:]
	l, h, steps := lo, hi, 0
	for ; l < h; steps++ {
		m := int(uint(l+h) >> 1)
		if bytes.Compare(old[int(sa[m])+skip:], rest) < 0 {
			l = m + 1
		} else {
			h = m
		}
	}
	n = -1
	for _, i := range [2]int{l - 1, l} {
		if i >= lo && i < hi {
			p := int(sa[i])
			if m := skip + CommonPrefix(old[p+skip:], rest); m > n {
				pos, n = p, m
			}
		}
	}
	d.work += int64(steps+2) * int64(n+8)
	return pos, n
}

// CommonPrefix returns how many bytes a and b share at their start, comparing 8 at a time:
// how a match is measured here, and in tardelta.
func CommonPrefix(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for ; i+8 <= n; i += 8 {
		if x := binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:]); x != 0 {
			return i + bits.TrailingZeros64(x)/8
		}
	}
	for ; i < n && a[i] == b[i]; i++ {
	}
	return i
}

// scan walks new, looking for exact matches in old that are clearly better
// than continuing the current alignment; each time it finds one, the
// region since the previous match is split into an approximate part
// (extended from the previous match while at least half its bytes agree),
// an extra part (bytes sent as they are), and the start of the new match,
// also extended backwards.
func (d *differ) scan(new []byte) {
	old := d.old
	no, nn := len(old), len(new)
	d.triples, d.cursor, d.work = d.triples[:0], 0, 0
	budget := searchBudgetBase + searchBudget*int64(nn)

	// matches reports whether new[i] equals old at alignment off.
	matches := func(i, off int) bool {
		o := i + off
		return o >= 0 && o < no && old[o] == new[i]
	}
	var (
		scan, pos, n      int // current match: new[scan:scan+n] == old[pos:pos+n]
		lastScan, lastPos int // where the previous match (after backward extension) starts
		lastOff           int // its alignment: old position minus new position
		score, cover      int // bytes of new[scan:cover] equal at lastOff
		emitFinal         bool
	)
	for scan < nn {
		scan += n
		cover = scan
		score = 0
		for ; scan < nn; scan++ {
			// A match shorter than 8 bytes cannot end the loop when the
			// alignment agrees on 8 bytes or more, nor when it agrees on
			// none, starting here: the filter then saves the search, the
			// bulk of the time on unrelated inputs.
			if (score >= 8 || score == 0 && !matches(scan, lastOff)) && !d.mayMatch8(new[scan:]) {
				pos, n = 0, 0
			} else {
				pos, n = d.longest(new[scan:])
			}
			for ; cover < scan+n; cover++ {
				if matches(cover, lastOff) {
					score++
				}
			}
			// A match fully explained by the current alignment is skipped;
			// one clearly better starts a new region.
			if (n == score && n != 0) || n > score+8 {
				break
			}
			// Searching every other position finds nearly all the useful
			// matches, one byte late at worst, which the backward
			// extension recovers, for half the searches. Past the work
			// budget, long matches that do not beat the alignment are
			// skipped over faster.
			step := scanStep
			if d.work > budget && n > 2*scanStep {
				step = n / 2
			}
			step = min(step, nn-scan)
			for ; cover < scan+step; cover++ {
				if matches(cover, lastOff) {
					score++
				}
			}
			for k := range step {
				if matches(scan+k, lastOff) {
					score--
				}
			}
			scan += step - 1
		}
		emitFinal = scan >= nn
		if n == score && !emitFinal {
			continue
		}

		// Extend the previous match forwards while more than half of the
		// bytes agree, keeping the best point.
		lenF := 0
		for i, s, best := 0, 0, 0; lastScan+i < scan && lastPos+i < no; {
			if old[lastPos+i] == new[lastScan+i] {
				s++
			}
			i++
			if 2*s-i > 2*best-lenF {
				best, lenF = s, i
			}
		}
		// Extend the new match backwards the same way.
		lenB := 0
		if !emitFinal {
			for i, s, best := 1, 0, 0; scan >= lastScan+i && pos >= i; i++ {
				if old[pos-i] == new[scan-i] {
					s++
				}
				if 2*s-i > 2*best-lenB {
					best, lenB = s, i
				}
			}
		}
		// Where the two extensions overlap, cut at the point that keeps
		// the most agreeing bytes.
		if overlap := lastScan + lenF - (scan - lenB); overlap > 0 {
			s, best, cut := 0, 0, 0
			for i := 0; i < overlap; i++ {
				if new[lastScan+lenF-overlap+i] == old[lastPos+lenF-overlap+i] {
					s++
				}
				if new[scan-lenB+i] == old[pos-lenB+i] {
					s--
				}
				if s > best {
					best, cut = s, i+1
				}
			}
			lenF += cut - overlap
			lenB -= cut
		}

		d.emit(lastPos, lenF, scan-lenB-(lastScan+lenF))

		lastScan, lastPos, lastOff = scan-lenB, pos-lenB, pos-scan
	}
}

// emit records a triple: seek to old position at, then diffN approximate
// bytes, then extraN extra bytes. Empty triples are dropped (their seek is
// folded into the next one) and triples that continue the previous one are
// merged into it, so that every triple produces output.
func (d *differ) emit(at, diffN, extraN int) {
	if diffN == 0 && extraN == 0 {
		return
	}
	seek := int64(at - d.cursor)
	if k := len(d.triples); k > 0 && seek == 0 {
		p := &d.triples[k-1]
		switch {
		case p.extraN == 0:
			p.diffN += diffN
			p.extraN = extraN
			d.cursor = at + diffN
			return
		case diffN == 0:
			p.extraN += extraN
			return
		}
	}
	d.triples = append(d.triples, triple{seek: seek, diffN: diffN, extraN: extraN})
	d.cursor = at + diffN
}

// build turns the triples into the four streams. Approximate bytes are
// coded as differences with a carry between neighbours (see the package
// documentation), so that a pointer moved by a constant shows the same
// difference bytes wherever it points; the differences, mostly zero, are
// then split into run lengths and the nonzero bytes.
func (d *differ) build(new []byte) {
	old := d.old
	for i := range d.streams {
		d.streams[i] = d.streams[i][:0]
	}
	ctrl, runs, values, extra := d.streams[sCtrl], d.streams[sRuns], d.streams[sValues], d.streams[sExtra]
	zeros, run := 0, 0 // pending zero run, then nonzero run after it
	flushRun := func() {
		if run == 0 {
			return
		}
		if zeros < packedZeros && run <= packedRun {
			runs = append(runs, byte(zeros<<2|(run-1)))
		} else {
			runs = append(runs, runEscape)
			runs = binary.AppendUvarint(runs, uint64(zeros))
			runs = binary.AppendUvarint(runs, uint64(run))
		}
		zeros, run = 0, 0
	}
	o, w := 0, 0
	for _, t := range d.triples {
		ctrl = binary.AppendVarint(ctrl, t.seek)
		ctrl = binary.AppendUvarint(ctrl, uint64(t.diffN))
		ctrl = binary.AppendUvarint(ctrl, uint64(t.extraN))
		o += int(t.seek)
		carry := 0
		for i, ob := range old[o : o+t.diffN] {
			v := int8(new[w+i] - ob - byte(carry))
			s := int(ob) + int(v) + carry
			carry = s >> 8
			if v == 0 {
				if run > 0 {
					flushRun()
				}
				zeros++
				continue
			}
			run++
			values = append(values, byte(v))
		}
		o += t.diffN
		w += t.diffN
		extra = append(extra, new[w:w+t.extraN]...)
		w += t.extraN
	}
	flushRun()
	d.streams[sCtrl], d.streams[sRuns], d.streams[sValues], d.streams[sExtra] = ctrl, runs, values, extra
}

// encode compresses the streams and assembles the patch.
func (d *differ) encode(newSize int) ([]byte, error) {
	enc, err := getEncoder()
	if err != nil {
		return nil, err
	}
	defer encoders.Put(enc)
	var packed [numStreams][]byte
	for i, s := range d.streams {
		if len(s) > 0 {
			packed[i] = enc.EncodeAll(s, nil)
		}
	}
	out := binary.AppendUvarint(nil, uint64(newSize))
	for _, s := range packed {
		out = binary.AppendUvarint(out, uint64(len(s)))
	}
	size := len(out)
	for _, s := range packed {
		size += len(s)
	}
	out = append(make([]byte, 0, size), out...)
	for _, s := range packed {
		out = append(out, s...)
	}
	return out, nil
}

// Encoders at the best level carry large match tables, costly to set up,
// hence the pool.
var encoders sync.Pool

func getEncoder() (*zstd.Encoder, error) {
	if e, ok := encoders.Get().(*zstd.Encoder); ok {
		return e, nil
	}
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(maxStreamWindow),
		zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, errors.Join(errors.New("bsdiff: creating zstd encoder"), err)
	}
	return e, nil
}
