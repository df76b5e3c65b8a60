package recipe

import (
	"bytes"
	"context"
	"io"
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
				for off := 0; off < len(data); off += 64 << 10 {
					w.Write(data[off:min(off+64<<10, len(data))])
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
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
