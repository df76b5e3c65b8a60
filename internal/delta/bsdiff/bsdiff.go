// Package bsdiff computes and applies approximate-match binary patches, bsdiff's method, for content such as executables whose changes shift addresses everywhere.
package bsdiff

// Method
//
// A small change to a program's source moves code and data, so thousands of
// addresses and offsets embedded in the binary change while the bytes
// around them do not. Compressors that look for exact matches (zstd with the
// old file as dictionary) pay for every such difference with a new match.
// bsdiff instead pairs regions of the new file with regions of the old one
// that are mostly equal, found from long exact matches (via a suffix array
// of the old file) extended while at least half the bytes agree, and sends
// their byte differences: mostly zeros, with the same few values repeated,
// which compress very well. Bytes with no counterpart go as they are.
//
// Plain byte differences compress badly with zstd, which has no context
// modelling (two Go builds 20 commits apart: 1.30 MB of zstd where bzip2,
// as in the original bsdiff, makes 0.95 MB). Two changes to their coding
// make zstd win instead (0.81 MB):
//   - differences carry between neighbouring bytes, so a 32-bit field that
//     grew by 0x40 shows 0x40 in its low byte and zeros above, whatever
//     carries the addition made: the values repeat exactly;
//   - the differences are split into run lengths (of zeros, then of
//     nonzero bytes) and the nonzero bytes, each compressed on its own.
//
// The scan also departs from bsdiff's to save time: it searches every
// other byte rather than every byte where no match beats the current
// alignment, skips the search where a hash filter shows no 8-byte match
// can exist and none shorter could matter, and bounds the bytes its
// searches compare (see searchBudget). Patches of executables stayed within
// 0.3% of the one-byte scan's.
//
// Cost, for two 26 MB builds of a Go program (figures in bench_test.go):
// Diff takes 6 to 8 s on one core and about 240 MB; the patch is 1.19 MB
// where bsdiff 4.3 makes 1.35 MB and zstd -19 --long --patch-from 2.67 MB;
// Apply takes 0.1 s and a few MB.
//
// Patch layout
//
// Integers are unsigned LEB128 varints (uv) or zigzag signed varints (sv),
// as encoding/binary writes them:
//
//	patch  = newSize:uv len:uv*4 ctrl runs values extra
//
// The four lengths are those of the stored streams that follow, in order;
// nothing may follow them. A stored stream is empty (no bytes: nothing to
// decode) or one or more zstd frames with windows of at most 1 MiB. Decoded:
//
//	ctrl   = (seek:sv diffN:uv extraN:uv)*
//	runs   = code*    code = z<<2 | (r-1)        one byte, z < 63, 1 <= r <= 4
//	                       | 0xff z:uv r:uv      r >= 1 (0xfc to 0xfe are invalid)
//	values = byte*
//	extra  = byte*
//
// Each run code stands for z zero bytes followed by the next r bytes of
// values; after the last code, zeros. Concatenated, they form the
// difference bytes D, one per approximate output byte. Apply keeps a
// position p in old (initially 0) and, for each control triple in turn:
//
//	p += seek                                  must stay within [0, oldSize]
//	c = 0
//	diffN times: s = old[p] + int8(D[k]) + c   (k: next difference byte)
//	             output byte(s); c = s >> 8 (floor: -1, 0 or 1); p++
//	                                           p must stay <= oldSize
//	output the next extraN bytes of extra
//
// A triple must produce at least one byte (diffN+extraN >= 1), the output
// must total newSize bytes exactly, and all four streams must be used up
// exactly when it does: no triple, run code, value or extra byte left, and
// no zeros of a run left over. Every violation is reported as ErrCorrupt.
// The patch carries no checksum: a damaged value or extra byte can go
// unnoticed, so callers check the output (tardelta's end record has a
// CRC-32C of the whole target).

// Stream order in the patch.
const (
	sCtrl = iota
	sRuns
	sValues
	sExtra
	numStreams
)

// Run codes: one byte for the common short runs, an escape for the rest.
const (
	packedZeros = 63 // zero runs below this fit in one byte
	packedRun   = 4  // nonzero runs up to this fit in one byte
	runEscape   = 0xff
)
