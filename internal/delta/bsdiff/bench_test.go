package bsdiff

import (
	"bytes"
	"io"
	"os"
	"testing"
)

// Two builds of outpost 20 commits apart, left by test/bench/deltabench:
// old 26,153,122 bytes, new 26,603,682. Measured on a shared 2-core AMD
// EPYC VM (timings vary by 20% from run to run), Go 1.26:
//
//	patch   1,190,136 bytes: control 73,983, runs 327,169, values 484,251,
//	        extra 304,717 (zstd); bsdiff 4.3 makes 1,350,601 (bzip2),
//	        zstd -19 --long=27 --patch-from 2,666,949
//	Diff    6.0 to 8.0 s on one core: suffix array about 3.5 s, filter and
//	        prefix tables 0.5 s, scan 2 s, streams 0.3 s (bsdiff 4.3: 24 s);
//	        peak RSS 295 MB with both inputs in memory (52 MB)
//	Apply   0.05 s from memory, 0.08 s reading old from a file; peak RSS
//	        11 MB for the whole process
const (
	benchOld = "/tmp/outpost-deltabench-cache/go/a2d35bf1b8e164574bbbef89bb39b194c38e629d/tree/usr/local/bin/outpost"
	benchNew = "/tmp/outpost-deltabench-cache/go/5aae1108180531fd89ef1d2ee087678dca0ad0ff/tree/usr/local/bin/outpost"
)

func benchInputs(b *testing.B) (old, new []byte) {
	old, err1 := os.ReadFile(benchOld)
	new, err2 := os.ReadFile(benchNew)
	if err1 != nil || err2 != nil {
		b.Skip("the deltabench outpost binaries are absent (run test/bench/deltabench once)")
	}
	return old, new
}

func BenchmarkDiff(b *testing.B) {
	old, new := benchInputs(b)
	b.SetBytes(int64(len(new)))
	var p []byte
	for b.Loop() {
		var err error
		if p, err = Diff(old, new); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(p)), "patch-bytes")
}

func BenchmarkApply(b *testing.B) {
	old, new := benchInputs(b)
	p, err := Diff(old, new)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(new)))
	for b.Loop() {
		if _, err := Apply(bytes.NewReader(old), int64(len(old)), p, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
