package recipe

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"testing"
	"time"
)

// BenchmarkNewWriter measures recompression, the child's bottleneck; MB/s is of uncompressed
// input.
func BenchmarkNewWriter(b *testing.B) {
	data := layer(b)
	for _, p := range producers {
		b.Run(p.name, func(b *testing.B) {
			rc, err := Detect(context.Background(), bytes.NewReader(blobOf(b, p)))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for b.Loop() {
				w, err := NewWriter(io.Discard, rc)
				if err != nil {
					b.Fatal(err)
				}
				writeChunked(b, w, data)
			}
			b.ReportMetric(float64(len(data))*float64(b.N)/(1<<20)/b.Elapsed().Seconds(), "MiB/s")
		})
	}
}

// BenchmarkDetect64MiB measures Detect and DetectAndConfirm on a 64 MiB layer; MB/s is of
// uncompressed content through both.
func BenchmarkDetect64MiB(b *testing.B) {
	data := testTar(b, 64<<20, 21)
	for _, p := range producers[:5] {
		blob := p.compress(b, data)
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				start := time.Now()
				if _, err := Detect(context.Background(), bytes.NewReader(blob)); err != nil {
					b.Fatal(err)
				}
				detect := time.Since(start)
				if _, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob)); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(detect.Seconds(), "detect-s")
				b.ReportMetric(time.Since(start).Seconds()-detect.Seconds(), "detectandconfirm-s")
			}
		})
	}
}

// BenchmarkGoGzipBaseline is compress/gzip at level 6 on its own, for comparison with
// BenchmarkNewWriter's go-gzip default: the recipe's writer should be no slower.
func BenchmarkGoGzipBaseline(b *testing.B) {
	data := layer(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		stdGzip(6)(b, data)
	}
	b.ReportMetric(float64(len(data))*float64(b.N)/(1<<20)/b.Elapsed().Seconds(), "MiB/s")
}

// BenchmarkNewWriterSplits compares the go-gzip writer serial and in parallel at split points
// on a 64 MiB layer (RECIPE_BENCH_TAR names a real tar to use instead); MiB/s is of tar. The
// ratio of the two is the point: on 2 cores the parallel writer should approach twice the
// serial one.
func BenchmarkNewWriterSplits(b *testing.B) {
	data := testTar(b, 64<<20, 23)
	if path := os.Getenv("RECIPE_BENCH_TAR"); path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			b.Fatal(err)
		}
	}
	for _, level := range []int{6, 9} {
		blob := stdGzip(level)(b, data)
		rc, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		splits, err := FindSplits(context.Background(), bytes.NewReader(blob), int64(len(blob)), rc, bytes.NewReader(data), int64(len(data)))
		if err != nil || splits == nil {
			b.Fatalf("split points: %v, %v", splits, err)
		}
		find := time.Since(start)
		for _, c := range []struct {
			name   string
			splits []int64
		}{{"serial", nil}, {"parallel", splits}} {
			b.Run(fmt.Sprintf("level%d/%s", level, c.name), func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					h := sha256.New()
					w, err := NewWriterSplits(h, rc, c.splits)
					if err != nil {
						b.Fatal(err)
					}
					writeChunked(b, w, data)
				}
				b.ReportMetric(float64(len(data))*float64(b.N)/(1<<20)/b.Elapsed().Seconds(), "MiB/s")
				if c.splits != nil {
					b.ReportMetric(float64(len(c.splits)), "segments")
					b.ReportMetric(find.Seconds(), "find-s")
				}
			})
		}
	}
}

// writeChunked writes data to w in 64 KiB writes, as a rebuild does, and closes it.
func writeChunked(b *testing.B, w io.WriteCloser, data []byte) {
	b.Helper()
	for off := 0; off < len(data); off += 64 << 10 {
		w.Write(data[off:min(off+64<<10, len(data))])
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}
