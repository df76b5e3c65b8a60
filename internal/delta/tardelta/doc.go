// Package tardelta encodes an uncompressed tar as a compact delta against tars the receiver already holds, and rebuilds it byte for byte.
package tardelta

// Overview
//
// The sender indexes each base tar once (BuildIndex; the Index is cached per
// blob digest) and encodes the target against the bases (Encode). The
// receiver rebuilds the target from the delta and the same bases in the same
// order (Apply). Reconstruction is exact by construction: every byte of the
// target belongs to one region (entry headers with their extension headers,
// entry content, padding, trailer), and the delta is a sequence of operations
// that emit those bytes in order. The caller still verifies the rebuilt tar's
// sha256 (diff-id); Apply additionally checks a CRC-32C of the whole target.
//
// The tar scanner (scan.go) is written for this package: archive/tar expands
// sparse files and stops at the first malformed header, whereas here the
// physical bytes matter and nothing may be lost. Whatever cannot be parsed is
// carried as the trailer, so any byte stream round-trips.
//
// Matching, in order of preference:
//   - a header equal to a base header is copied, preferring the base header
//     that continues the current copy, so unchanged runs of entries collapse
//     into one COPY;
//   - a content (or, for contents over SegmentSize, each aligned segment) equal
//     to a base content is copied, found by sha256 whatever its path, so
//     renames, moves and duplicates cost one small op; zero padding after a
//     copied content extends the copy;
//   - a changed content is coded against the content at the same path in the
//     first base having it (else the same path up to digits in directory
//     names, e.g. python3.11/ for python3.12/, else up to all digits when
//     that designates one base file, else a same-named file of similar
//     size): long common prefix
//     and suffix are copied, found at the aligned position or by searching
//     anchors (insertions shift content), and the rest becomes a zstd frame
//     using the base bytes as raw dictionary (PATCH) if that is smaller than
//     compressing it alone, else literal bytes; for content whose PATCH is
//     neither tiny nor near the content's size, a bsdiff patch against the
//     same base bytes (BSDIFF, package bsdiff) replaces the PATCH when
//     smaller: a rebuilt executable's moved addresses cost zstd a match
//     each, bsdiff a repeated difference (a 26 MB Go binary: 1.2 MB instead
//     of 3.2 MB), and so do the scattered edits of a JavaScript bundle
//     between releases;
//   - a changed header of the same length as the related base header (same
//     path, or the base entry whose content is reused), differing in few
//     bytes, is sent as its XOR with that header: mostly zeros;
//   - everything else goes to the header or literal sections.
//
//   - an executable (an ELF file of 256 KiB to exediff.MaxSize) related to
//     a base executable goes whole as an exediff patch against it
//     (EXEDIFF, package exediff): bsdiff against the base with its
//     addresses and offsets moved where the new file has them (two builds
//     of a 26 MB Go program one commit apart: 28.7 KB instead of bsdiff's
//     281 KB), else segment by segment as above.
//
// Delta format, version 5. Integers are unsigned LEB128 varints ("uv") or
// zigzag signed varints ("sv"):
//
//	delta   = "OTDL" version:u8=5 flags:u8=0 nbases:uv baseSize:uv*nbases
//	          block* end
//	block   = 'B' section(ops) section(header) section(literal) payload*
//	section = rawLen:uv storedLen:uv bytes[storedLen]
//	          (storedLen == rawLen: stored raw; storedLen < rawLen: one zstd
//	          frame decoding to rawLen bytes; raw lengths are limited to
//	          1 MiB of ops and 4 MiB of header or literal bytes per block)
//	end     = 'E' targetSize:uv crc32c(target):u32 little endian
//
// The ops section is a sequence of operations, each emitting target bytes:
//
//	1 COPY    base:uv off:sv len:uv          base bytes [off, off+len)
//	2 HEADER  len:uv                         next len bytes of the header section
//	3 LITERAL len:uv                         next len bytes of the literal section
//	4 PATCH   base:uv off:sv dictLen:uv targetLen:uv payloadLen:uv
//	                                         the next payload* (payloadLen bytes,
//	                                         in op order after the sections) is a
//	                                         zstd frame; decoded with base bytes
//	                                         [off, off+dictLen) as raw dictionary
//	                                         (id 0) it yields targetLen bytes
//	5 HEADERX base:uv off:sv len:uv          next len header-section bytes XOR
//	                                         base bytes [off, off+len)
//	6 BSDIFF  base:uv off:sv oldLen:uv targetLen:uv payloadLen:uv
//	                                         the next payload* (payloadLen bytes)
//	                                         is a bsdiff patch (layout in package
//	                                         bsdiff) that, applied to base bytes
//	                                         [off, off+oldLen), yields targetLen
//	                                         bytes
//	7 EXEDIFF base:uv off:sv oldLen:uv targetLen:uv payloadLen:uv
//	                                         as BSDIFF, with an exediff patch
//	                                         (package exediff) of the executable
//	                                         at [off, off+oldLen)
//	8 PATCHH  base:uv off:sv dictLen:uv targetLen:uv payloadLen:uv
//	                                         as PATCH, with the history (below)
//	                                         followed by the base bytes as raw
//	                                         dictionary
//
// The history is the output of the delta's PATCH, PATCHH and BSDIFF
// operations so far, in op order across blocks, of which a PATCHH's
// dictionary takes the last 1 MiB (all of it when shorter). A release that
// makes the same edit to many files (a package reformatted, a bundle
// shipped in several module formats) then pays for it about once: the npm
// tree of the benchmark, three of eight packages upgraded, 173 -> 141 KB of
// patches.
//
// Offsets (sv) are relative to the end of the previous range used in the same
// base (initially 0), which makes consecutive references tiny; a BSDIFF's
// range counts as used whole, like a PATCH dictionary. Every section byte and
// every payload must be consumed by exactly one operation. Limits that bound
// Apply's memory and work: dictLen and oldLen <= min(SegmentSize+2 MiB,
// 2*targetLen+4 MiB) (and >= 1), targetLen <= SegmentSize, payloadLen <=
// SegmentSize+1 MiB, zstd windows <= 32 MiB (1 MiB inside bsdiff patches,
// whose size claim must equal targetLen). A BSDIFF reads its base range
// through the base's ReaderAt as it goes instead of holding it. Patch frames
// and bsdiff patches carry no checksum of their own; the CRC-32C in the end
// record covers the whole output.
//
// An EXEDIFF's oldLen and targetLen are at most exediff.MaxSize, and oldLen
// at most 2*targetLen+4 MiB; it reads its base range through the ReaderAt.
//
// Version 1 is version 2 without BSDIFF, version 2 is version 4 without
// EXEDIFF, and version 4 is version 5 without PATCHH. Version 3 carried
// EXEDIFF patches of exediff's previous model, which this package no longer
// makes or applies. Apply reads versions 1 to 5, so deltas made before an
// upgrade still apply (version 3's EXEDIFF operations excepted: the child
// then fetches the layer whole); Encode writes version 5, or 4 or 2 for a
// reader that applies no newer (Options.Version).
//
// Blocks are compressed independently (zstd, best level by default) by a
// small pipeline of goroutines and written in order, so Encode streams: it
// never needs the target's size or a second pass.
