package tardelta

import (
	"errors"
	"fmt"
	"hash/crc32"
)

// Delta stream constants; the layout is described in doc.go.
const (
	deltaMagic   = "OTDL"
	deltaVersion = 5
	// minDeltaVersion is the oldest version Apply reads: version 1 is
	// version 2 without the BSDIFF operation, version 2 is version 4
	// without EXEDIFF, and version 4 is version 5 without PATCHH, so deltas
	// cached before an upgrade still apply. Version 3 is version 4 with
	// EXEDIFF patches of exediff's older model ("OXD2"): Apply reads it,
	// but refuses its EXEDIFF operations.
	minDeltaVersion = 1

	recBlock = 'B'
	recEnd   = 'E'

	opCopy    = 1
	opHeader  = 2
	opLiteral = 3
	opPatch   = 4
	// opHeaderXor: header section bytes XOR a base range of equal length.
	opHeaderXor = 5
	// opBsdiff: a bsdiff patch (package bsdiff) against a base range;
	// version 2 on.
	opBsdiff = 6
	// opExediff: an exediff patch (package exediff) against a whole base
	// executable; version 3 on. Versions 4 and 5 mean exediff's model of
	// exediff.Magic "OXD3" (version 3 meant "OXD2", which also left Go's
	// DWARF type offsets unpredicted): a model that predicts anything differently
	// (exediff's TestModelGolden fails) needs a new magic and a new delta
	// version and format name (acrapi.DeltaFormat), so that a parent that
	// has it sends children still on the old one version 2 deltas, not
	// patches they would refuse and replace by whole layers.
	opExediff = 7
	// opPatchHist (PATCHH): a PATCH whose zstd dictionary is the history
	// (the last histMax bytes output by the delta's earlier PATCH, PATCHH
	// and BSDIFF operations) followed by the base range; version 5 on. The
	// same edit made to many files (a reformatted package, a bundle shipped
	// in several module formats) then costs once, not once per file.
	opPatchHist = 8
	// histMax bounds the history PATCHH refers to.
	histMax = 1 << 20
	// Format versions that introduced operations (see minDeltaVersion).
	exediffSince   = 4
	patchHistSince = 5

	// maxBases bounds the per-base state Apply allocates from the header.
	maxBases = 1024

	// Limits on the raw size of a block's sections. They bound Apply's
	// buffers whatever the delta claims.
	maxOpsSection     = 1 << 20
	maxHeaderSection  = 4 << 20
	maxLiteralSection = 4 << 20

	// segmentMargin extends a patch dictionary on both sides of the base
	// segment aligned with the target segment, so content that moved by up
	// to this much across a segment boundary is still found.
	segmentMargin = 1 << 20

	maxPatchBase = SegmentSize + 2*segmentMargin
	// patchDictSlack with maxDictFor bounds the base bytes a patch may read
	// per output byte, so a hostile delta cannot make Apply read megabytes
	// of base for each byte it writes.
	patchDictSlack  = 4 << 20
	maxPatchTarget  = SegmentSize
	maxPatchPayload = SegmentSize + 1<<20

	// maxWindow caps the zstd window a frame may declare; the encoder's
	// patch frames use at most SegmentSize.
	maxWindow = 2 * SegmentSize
)

// maxDictFor is the largest dictionary allowed for a patch producing n bytes.
func maxDictFor(n int) int64 { return min(maxPatchBase, 2*int64(n)+patchDictSlack) }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is matched (errors.Is) by every error Apply returns for a delta
// that is malformed, truncated, inconsistent with the bases, or that does not
// reproduce the checksum recorded by the encoder.
var ErrCorrupt = errors.New("tardelta: corrupt delta")

type corruptError struct{ msg string }

func (e *corruptError) Error() string        { return "tardelta: " + e.msg }
func (e *corruptError) Is(target error) bool { return target == ErrCorrupt }

func corruptf(format string, a ...any) error {
	return &corruptError{msg: fmt.Sprintf(format, a...)}
}
