package recipe

import (
	"archive/tar"
	"bytes"
	stdgzip "compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	kpgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
)

// testTar builds a deterministic tar of about size bytes that looks like a layer: text files,
// compressible binaries, incompressible files (already compressed data) and small configs.
func testTar(tb testing.TB, size int, seed uint64) []byte {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	words := []string{"the", "layer", "container", "registry", "func", "return", "if", "err", "nil",
		"package", "import", "struct", "int", "string", "{", "}", "(", ")", "\n", "\t", " ", ":=", "// "}
	ops := make([][]byte, 300)
	for i := range ops {
		ops[i] = make([]byte, 1+rng.IntN(6))
		for j := range ops[i] {
			ops[i][j] = byte(rng.Uint32())
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; buf.Len() < size; i++ {
		var body []byte
		switch i % 5 {
		case 0, 3: // source text
			for n := 2000 + rng.IntN(60000); len(body) < n; {
				body = append(body, words[rng.IntN(len(words))]...)
				body = append(body, ' ')
			}
		case 1: // a binary: instructions from a small repertoire with random operands
			n := 10000 + rng.IntN(200000)
			for len(body) < n {
				op := ops[rng.IntN(len(ops))]
				body = append(body, op...)
				for range rng.IntN(5) {
					body = append(body, byte(rng.Uint32()))
				}
			}
		case 2: // compressed or media file: incompressible
			body = make([]byte, 1000+rng.IntN(150000))
			for j := range body {
				body[j] = byte(rng.Uint32())
			}
		case 4: // small config
			body = fmt.Appendf(nil, "name=svc%d\nport=%d\nenabled=true\n", i, 8000+i)
		}
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     fmt.Sprintf("usr/share/app%d/dir%03d/file%05d.dat", i%3, i/20, i),
			Mode:     0o644,
			Size:     int64(len(body)),
			ModTime:  time.Unix(1700000000+int64(i), 0).UTC(),
			Uname:    "root",
			Gname:    "root",
		}
		if err := tw.WriteHeader(hdr); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// emptyTar is a tar with no entries (two zero blocks).
func emptyTar(tb testing.TB) []byte {
	var buf bytes.Buffer
	if err := tar.NewWriter(&buf).Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// producer compresses the way a real tool does, with the real library.
type producer struct {
	name     string
	compress func(tb testing.TB, data []byte) []byte
	want     Recipe // the fields Detect must find (Header and Toolchain not compared)
	core     bool   // a tool's default; the others are skipped under the race detector
}

// testedProducers are the producers a test runs through: the tools' defaults only under the
// race detector.
func testedProducers() []producer {
	var out []producer
	for _, p := range producers {
		if p.core || !raceEnabled {
			out = append(out, p)
		}
	}
	return out
}

func stdGzip(level int) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, data []byte) []byte {
		var buf bytes.Buffer
		w, err := stdgzip.NewWriterLevel(&buf, level)
		if err != nil {
			tb.Fatal(err)
		}
		mustWriteClose(tb, w, data)
		return buf.Bytes()
	}
}

func kpGzip(level int) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, data []byte) []byte {
		var buf bytes.Buffer
		w, err := kpgzip.NewWriterLevel(&buf, level)
		if err != nil {
			tb.Fatal(err)
		}
		mustWriteClose(tb, w, data)
		return buf.Bytes()
	}
}

// pGzip compresses with pgzip; blockSize 0 keeps pgzip's defaults (what containers/image does).
func pGzip(level, blockSize, blocks int) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, data []byte) []byte {
		var buf bytes.Buffer
		w, err := pgzip.NewWriterLevel(&buf, level)
		if err != nil {
			tb.Fatal(err)
		}
		if blockSize != 0 {
			if err := w.SetConcurrency(blockSize, blocks); err != nil {
				tb.Fatal(err)
			}
		}
		mustWriteClose(tb, w, data)
		return buf.Bytes()
	}
}

func kpZstd(opts ...zstd.EOption) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, data []byte) []byte {
		var buf bytes.Buffer
		w, err := zstd.NewWriter(&buf, opts...)
		if err != nil {
			tb.Fatal(err)
		}
		mustWriteClose(tb, w, data)
		return buf.Bytes()
	}
}

// ciZstd compresses as containers/image (podman, buildah, skopeo) does: it reads 8 bytes to
// detect the layer's compression, then io.Copy's the compressor a multi-reader of those bytes
// and the rest, so the encoder is given the 8 bytes with Write and the rest with ReadFrom,
// which flushes them as a block of their own.
func ciZstd(level zstd.EncoderLevel) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, data []byte) []byte {
		var buf bytes.Buffer
		w, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(level))
		if err != nil {
			tb.Fatal(err)
		}
		src := bytes.NewReader(data)
		var probe [8]byte
		n, _ := io.ReadAtLeast(src, probe[:], len(probe))
		if _, err := io.Copy(w, io.MultiReader(bytes.NewReader(probe[:n]), onlyReader{src})); err != nil {
			tb.Fatal(err)
		}
		if err := w.Close(); err != nil {
			tb.Fatal(err)
		}
		return buf.Bytes()
	}
}

// onlyReader hides every method but Read, as the readers behind containers/image's probe do.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func mustWriteClose(tb testing.TB, w io.WriteCloser, data []byte) {
	tb.Helper()
	if _, err := w.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
}

// producers are the tools whose blobs must round-trip.
var producers = []producer{
	{"docker-buildkit-containerd/go-gzip-default", stdGzip(stdgzip.DefaultCompression),
		Recipe{Format: FormatGzip, Compressor: CompressorGoGzip, Level: 6}, true},
	{"crane/go-gzip-bestspeed", stdGzip(stdgzip.BestSpeed),
		Recipe{Format: FormatGzip, Compressor: CompressorGoGzip, Level: 1}, true},
	{"go-gzip-best", stdGzip(stdgzip.BestCompression),
		Recipe{Format: FormatGzip, Compressor: CompressorGoGzip, Level: 9}, false},
	{"go-gzip-huffman", stdGzip(stdgzip.HuffmanOnly),
		Recipe{Format: FormatGzip, Compressor: CompressorGoGzip, Level: -2}, false},
	{"podman/pgzip-default", pGzip(pgzip.DefaultCompression, 0, 0),
		Recipe{Format: FormatGzip, Compressor: CompressorPgzip, Level: 5, BlockSize: 1 << 20}, true},
	{"pgzip-9-256k-serial", pGzip(9, 256<<10, 1),
		Recipe{Format: FormatGzip, Compressor: CompressorPgzip, Level: 9, BlockSize: 256 << 10}, false},
	{"klauspost-gzip-default", kpGzip(kpgzip.DefaultCompression),
		Recipe{Format: FormatGzip, Compressor: CompressorKlauspostGzip, Level: 5}, true},
	{"klauspost-gzip-bestspeed", kpGzip(kpgzip.BestSpeed),
		Recipe{Format: FormatGzip, Compressor: CompressorKlauspostGzip, Level: 1}, false},
	{"klauspost-gzip-7", kpGzip(7),
		Recipe{Format: FormatGzip, Compressor: CompressorKlauspostGzip, Level: 7}, false},
	{"containerd/zstd-default", kpZstd(),
		Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, WindowSize: 8 << 20, Checksum: true}, true},
	{"zstd-level-3", kpZstd(zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(3))),
		Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, WindowSize: 8 << 20, Checksum: true}, false},
	{"zstd-fastest-nocrc", kpZstd(zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false)),
		Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 1, WindowSize: 4 << 20}, false},
	{"zstd-best", kpZstd(zstd.WithEncoderLevel(zstd.SpeedBestCompression)),
		Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 4, WindowSize: 8 << 20, Checksum: true}, false},
	{"podman/zstd-default", ciZstd(zstd.SpeedDefault),
		Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, WindowSize: 8 << 20, Checksum: true, LeadBlock: 8}, true},
	{"podman/zstd-fastest", ciZstd(zstd.SpeedFastest),
		Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 1, WindowSize: 4 << 20, Checksum: true, LeadBlock: 8}, false},
}

// fixture caches the test tar and its compressed forms; producing them under -race is slow.
var fixture = struct {
	sync.Mutex
	tar   []byte
	blobs map[string][]byte
}{blobs: map[string][]byte{}}

// testTarSize is the size of the tar the round trips use: more than the 4 MiB detection
// prefix, so that confirmation does work of its own.
var testTarSize = 5 << 20

// raceEnabled is set when the tests run under the race detector (see race_test.go).
var raceEnabled bool

func layer(tb testing.TB) []byte {
	fixture.Lock()
	defer fixture.Unlock()
	if fixture.tar == nil {
		fixture.tar = testTar(tb, testTarSize, 1)
	}
	return fixture.tar
}

func blobOf(tb testing.TB, p producer) []byte {
	data := layer(tb)
	fixture.Lock()
	defer fixture.Unlock()
	if b, ok := fixture.blobs[p.name]; ok {
		return b
	}
	b := p.compress(tb, data)
	fixture.blobs[p.name] = b
	return b
}

// recompress writes data through NewWriter(rc) in writes of random sizes (some empty) and
// returns the output.
func recompress(tb testing.TB, rc Recipe, data []byte, seed uint64) []byte {
	tb.Helper()
	var out bytes.Buffer
	w, err := NewWriter(&out, rc)
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	for len(data) > 0 {
		n := min(len(data), rng.IntN(3)*rng.IntN(70000))
		if _, err := w.Write(data[:n]); err != nil {
			tb.Fatal(err)
		}
		data = data[n:]
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

func sum(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }
