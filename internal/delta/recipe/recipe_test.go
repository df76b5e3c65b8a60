package recipe

import (
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func TestRoundTrip(t *testing.T) {
	data := layer(t)
	for _, p := range testedProducers() {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			blob := blobOf(t, p)
			ctx := context.Background()

			start := time.Now()
			rc, err := DetectAndConfirm(ctx, bytes.NewReader(blob))
			if err != nil {
				t.Fatalf("DetectAndConfirm: %v", err)
			}
			t.Logf("%d bytes → %d: %s in %v", len(data), len(blob), rc, time.Since(start))
			if rc.Format != p.want.Format || rc.Compressor != p.want.Compressor || rc.Level != p.want.Level ||
				rc.BlockSize != p.want.BlockSize || rc.WindowSize != p.want.WindowSize || rc.Checksum != p.want.Checksum ||
				rc.LeadBlock != p.want.LeadBlock {
				t.Errorf("detected %s, want %s", rc, p.want)
			}
			if err := rc.Validate(); err != nil {
				t.Fatal(err)
			}
			if rc.Format == FormatGzip && !bytes.HasPrefix(blob, rc.Header) {
				t.Errorf("header %x is not the blob's", rc.Header)
			}

			if !raceEnabled {
				detected, err := Detect(ctx, bytes.NewReader(blob))
				if err != nil || detected.String() != rc.String() {
					t.Errorf("Detect = %s, %v; DetectAndConfirm found %s", detected, err, rc)
				}
			}

			// The recipe travels as JSON.
			js, err := json.Marshal(rc)
			if err != nil {
				t.Fatal(err)
			}
			rc2, err := ParseRecipe(js)
			if err != nil {
				t.Fatalf("ParseRecipe(%s): %v", js, err)
			}

			for seed := range uint64(2) {
				if seed > 0 && raceEnabled {
					break
				}
				if got := recompress(t, rc2, data, seed); !bytes.Equal(got, blob) {
					t.Fatalf("NewWriter output %d bytes sha256 %s, blob %d bytes sha256 %s", len(got), sum(got), len(blob), sum(blob))
				}
			}
			if !raceEnabled { // DetectAndConfirm has confirmed it already
				if err := Confirm(ctx, bytes.NewReader(blob), rc2); err != nil {
					t.Errorf("Confirm: %v", err)
				}
			}
		})
	}
}

// Small blobs are read whole during detection, which then compares closed streams.
func TestRoundTripSmall(t *testing.T) {
	contents := map[string][]byte{
		"empty-tar": emptyTar(t),
		"empty":     nil,
		"small-tar": testTar(t, 100<<10, 2),
	}
	if !raceEnabled {
		contents["one-block"] = testTar(t, 70<<10, 3)
		contents["exact-pgzip-block"] = testTar(t, 1<<20, 4)[:1<<20]
	}
	for name, data := range contents {
		for _, p := range testedProducers() {
			t.Run(name+"/"+p.name, func(t *testing.T) {
				t.Parallel()
				blob := p.compress(t, data)
				rc, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob))
				if err != nil {
					t.Fatalf("DetectAndConfirm: %v", err)
				}
				if got := recompress(t, rc, data, 1); !bytes.Equal(got, blob) {
					t.Fatalf("recipe %s does not reproduce the blob", rc)
				}
			})
		}
	}
}

func TestHeaderFieldsVerbatim(t *testing.T) {
	data := testTar(t, 300<<10, 5)
	var buf bytes.Buffer
	w := stdgzip.NewWriter(&buf)
	w.Name = "layer.tar"
	w.Comment = "built by outpost tests, ünïcode in Latin-1"
	w.Extra = []byte("AB\x04\x00data")
	w.ModTime = time.Unix(1234567890, 0)
	w.OS = 3
	mustWriteClose(t, w, data)
	blob := buf.Bytes()

	rc, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := parseGzipHeader(blob); !bytes.Equal(rc.Header, blob[:n]) || n <= 10 {
		t.Fatalf("header %q, blob starts %q", rc.Header, blob[:n])
	}
	if got := recompress(t, rc, data, 3); !bytes.Equal(got, blob) {
		t.Fatal("no byte-exact round trip with header fields")
	}

	// A header with FHCRC (Go never writes one) is kept verbatim too.
	hdr := append([]byte(nil), rc.Header...)
	hdr[3] |= flagHCRC
	crc := crc16(hdr)
	hdr = append(hdr, byte(crc), byte(crc>>8))
	blob2 := append(hdr, blob[len(rc.Header):]...)
	rc2, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob2))
	if err != nil {
		t.Fatal(err)
	}
	if got := recompress(t, rc2, data, 4); !bytes.Equal(got, blob2) {
		t.Fatal("no byte-exact round trip with FHCRC")
	}
	// A wrong header CRC is corruption.
	blob2[len(hdr)-1] ^= 1
	if _, err := Detect(context.Background(), bytes.NewReader(blob2)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong FHCRC: %v, want ErrCorrupt", err)
	}
}

func TestUnsupported(t *testing.T) {
	data := layer(t)
	ctx := context.Background()
	large := blobOf(t, producers[6]) // klauspost-gzip: the fastest to confirm
	small := stdGzip(6)(t, testTar(t, 50<<10, 6))

	cases := map[string][]byte{
		"multi-member small":    append(append([]byte(nil), small...), small...),
		"multi-member large":    append(append([]byte(nil), large...), small...),
		"trailing zeros":        append(append([]byte(nil), small...), 0, 0, 0, 0),
		"trailing garbage big":  append(append([]byte(nil), large...), "garbage"...),
		"not compressed":        data[:4096],
		"empty":                 nil,
		"zlib header":           {0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01},
		"zstd skippable":        {0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0},
		"zstd two frames":       append(kpZstd()(t, data[:10000]), kpZstd()(t, data[:10000])...),
		"not deflate":           {0x1f, 0x8b, 7, 0, 0, 0, 0, 0, 0, 0xff},
		"reserved flags":        {0x1f, 0x8b, 8, 0x20, 0, 0, 0, 0, 0, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"zstd after gzip":       append(append([]byte(nil), small...), kpZstd()(t, data[:100])...),
		"big zstd frames twice": append(blobOf(t, producers[9]), kpZstd()(t, data[:100])...),
	}
	for name, blob := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rc, err := DetectAndConfirm(ctx, bytes.NewReader(blob))
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("DetectAndConfirm = %s, %v; want ErrUnsupported", rc, err)
			}
			t.Log(err)
		})
	}
}

// Output of zlib-based GNU gzip and of the C zstd has no Go equivalent: never a recipe.
func TestForeignCompressorsUnsupported(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		cmd  []string
	}{
		{"gzip -6", layer(t), []string{"gzip", "-6", "-c", "-n"}},
		{"gzip -1", layer(t), []string{"gzip", "-1", "-c", "-n"}},
		{"gzip -9 small", testTar(t, 200<<10, 7), []string{"gzip", "-9", "-c"}},
		{"gzip -6 empty tar", emptyTar(t), []string{"gzip", "-6", "-c", "-n"}},
		{"zstd -3", layer(t), []string{"zstd", "-3", "-c", "-q"}},
		{"zstd -19 small", testTar(t, 200<<10, 7), []string{"zstd", "-19", "-c", "-q"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := exec.LookPath(tc.cmd[0]); err != nil {
				t.Skipf("no %s command to make fixtures with", tc.cmd[0])
			}
			cmd := exec.Command(tc.cmd[0], tc.cmd[1:]...)
			cmd.Stdin = bytes.NewReader(tc.data)
			blob, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			rc, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob))
			if tc.name == "gzip -6 empty tar" && err == nil {
				// 1 KiB of zeros compresses to the same deflate stream with zlib and Go;
				// then the recipe is right, which is all that matters.
				if got := recompress(t, rc, tc.data, 1); !bytes.Equal(got, blob) {
					t.Fatalf("wrong recipe %s for GNU gzip output", rc)
				}
				t.Logf("GNU gzip output of an empty tar is reproduced by %s", rc)
				return
			}
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("DetectAndConfirm = %s, %v; want ErrUnsupported", rc, err)
			}
			t.Log(err)
		})
	}
}

func TestCorrupt(t *testing.T) {
	ctx := context.Background()
	var blob []byte
	if raceEnabled {
		blob = stdGzip(6)(t, testTar(t, 400<<10, 10))
	} else {
		blob = blobOf(t, producers[0])
	}
	rc, err := Detect(ctx, bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"flipped byte early": func(b []byte) []byte { b[len(b)/10] ^= 0x55; return b },
		"flipped byte late":  func(b []byte) []byte { b[len(b)-1000] ^= 0x55; return b },
		"wrong crc":          func(b []byte) []byte { b[len(b)-8] ^= 1; return b },
		"wrong size":         func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
		"truncated":          func(b []byte) []byte { return b[:len(b)-100] },
		"truncated trailer":  func(b []byte) []byte { return b[:len(b)-3] },
		"truncated header":   func(b []byte) []byte { return b[:7] },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bad := mutate(append([]byte(nil), blob...))
			if got, err := DetectAndConfirm(ctx, bytes.NewReader(bad)); err == nil {
				t.Fatalf("DetectAndConfirm accepted a corrupt blob: %s", got)
			} else {
				t.Log("DetectAndConfirm:", err)
			}
			if err := Confirm(ctx, bytes.NewReader(bad), rc); err == nil {
				t.Fatal("Confirm accepted a corrupt blob")
			} else {
				t.Log("Confirm:", err)
			}
		})
	}
	zblob := blobOf(t, producers[9])
	bad := append([]byte(nil), zblob...)
	bad[len(bad)/2] ^= 0x55
	if _, err := DetectAndConfirm(ctx, bytes.NewReader(bad)); err == nil {
		t.Fatal("corrupt zstd blob accepted")
	}
}

func TestConfirmWrongRecipe(t *testing.T) {
	ctx := context.Background()
	blob := blobOf(t, producers[0])
	rc, err := Detect(ctx, bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*Recipe){
		"level 5":     func(rc *Recipe) { rc.Level = 5 },
		"level 7":     func(rc *Recipe) { rc.Level = 7 },
		"klauspost":   func(rc *Recipe) { rc.Compressor = CompressorKlauspostGzip },
		"other mtime": func(rc *Recipe) { rc.Header = append([]byte(nil), rc.Header...); rc.Header[4] = 1 },
		"pgzip 1MiB":  func(rc *Recipe) { rc.Compressor, rc.Level, rc.BlockSize = CompressorPgzip, 5, 1<<20 },
		"as zstd blob?": func(rc *Recipe) {
			*rc = Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, WindowSize: 8 << 20}
		},
	} {
		t.Run(name, func(t *testing.T) {
			wrong := rc
			change(&wrong)
			fam, err := Toolchain(wrong.Compressor, wrong.Level)
			if err != nil {
				t.Fatal(err)
			}
			wrong.Toolchain = fam
			err = Confirm(ctx, bytes.NewReader(blob), wrong)
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("Confirm(%s) = %v, want ErrMismatch", wrong, err)
			}
			t.Log(err)
		})
	}
}

func TestToolchainRefused(t *testing.T) {
	rc, err := Detect(context.Background(), bytes.NewReader(stdGzip(6)(t, emptyTar(t))))
	if err != nil {
		t.Fatal(err)
	}
	rc.Toolchain = "go1.27"
	if _, err := NewWriter(io.Discard, rc); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("NewWriter with a foreign toolchain family: %v, want ErrUnsupported", err)
	}
	if err := Confirm(context.Background(), bytes.NewReader(nil), rc); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Confirm with a foreign toolchain family: %v, want ErrUnsupported", err)
	}
}

// Every compressor and level must map to a named family. When a Go or klauspost/compress
// update changes an encoder's output, this fails: decide whether the change is real (name a
// new family; old recipes will be refused) and paste the printed table into knownFamilies.
func TestToolchainFamiliesKnown(t *testing.T) {
	if raceEnabled {
		t.Skip("fingerprinting every level is slow under the race detector and has no concurrency")
	}
	var table strings.Builder
	failed := false
	for _, c := range []struct {
		compressor string
		levels     []int
		family     string
	}{
		{CompressorGoGzip, []int{-2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, familyGo},
		{CompressorKlauspostGzip, []int{-2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, familyKlauspost},
		{CompressorPgzip, []int{-2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, familyKlauspost},
		{CompressorKlauspostZstd, []int{1}, familyKlauspostZstdFastest},
		{CompressorKlauspostZstd, []int{2, 3, 4}, familyKlauspost},
	} {
		for _, l := range c.levels {
			got, err := Toolchain(c.compressor, l)
			if err != nil {
				t.Fatal(err)
			}
			fp := fingerprint(c.compressor, l)
			table.WriteString("\t\"" + c.compressor + "/" + itoa(l) + "/" + fp + "\": " + constName(c.family) + ",\n")
			if got != c.family {
				failed = true
			}
		}
	}
	if failed {
		t.Errorf("output families changed; if intended, knownFamilies becomes:\n%s", table.String())
	}
}

func constName(f string) string {
	switch f {
	case familyGo:
		return "familyGo"
	case familyKlauspostZstdFastest:
		return "familyKlauspostZstdFastest"
	}
	return "familyKlauspost"
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// pgzip's output must not depend on its concurrency, only on its block size, and the
// parallel and serial engines here must write what pgzip does.
func TestPgzipConcurrencyIndependent(t *testing.T) {
	data := testTar(t, min(3<<20, testTarSize*3/4), 8)
	for _, bs := range []int{1 << 20, 100000} {
		ref := pGzip(5, bs, 1)(t, data)
		for _, blocks := range []int{2, 8} {
			if got := pGzip(5, bs, blocks)(t, data); !bytes.Equal(got, ref) {
				t.Fatalf("pgzip block %d: %d blocks at once differ from 1", bs, blocks)
			}
		}
		rc := Recipe{Format: FormatGzip, Compressor: CompressorPgzip, Level: 5, BlockSize: bs, Header: ref[:10]}
		for _, workers := range []int{1, 2, 5} {
			var out bytes.Buffer
			w := newWriter(&out, rc, writerOptions{workers: workers})
			for off := 0; off < len(data); off += 77777 {
				w.Write(data[off:min(off+77777, len(data))])
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), ref) {
				t.Fatalf("block %d, %d workers: output differs from pgzip", bs, workers)
			}
		}
	}
}

// klauspost's zstd stream output must not depend on the encoder's concurrency either.
func TestZstdConcurrencyIndependent(t *testing.T) {
	data := testTar(t, min(3<<20, testTarSize*3/4), 13)
	ref := kpZstd(zstd.WithEncoderConcurrency(1))(t, data)
	for _, n := range []int{2, 4} {
		if got := kpZstd(zstd.WithEncoderConcurrency(n))(t, data); !bytes.Equal(got, ref) {
			t.Fatalf("zstd encoder concurrency %d differs from 1", n)
		}
	}
}

func TestValidate(t *testing.T) {
	hdr := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}
	good := Recipe{Format: FormatGzip, Compressor: CompressorGoGzip, Level: 6, Header: hdr, Toolchain: familyGo}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, change := range map[string]func(*Recipe){
		"no compressor":      func(r *Recipe) { r.Compressor = "" },
		"unknown compressor": func(r *Recipe) { r.Compressor = "zlib" },
		"wrong format":       func(r *Recipe) { r.Format = FormatZstd },
		"unknown format":     func(r *Recipe) { r.Format = "xz" },
		"level alias":        func(r *Recipe) { r.Level = -1 },
		"level 10":           func(r *Recipe) { r.Level = 10 },
		"level -3":           func(r *Recipe) { r.Level = -3 },
		"block size on gzip": func(r *Recipe) { r.BlockSize = 1 << 20 },
		"window on gzip":     func(r *Recipe) { r.WindowSize = 1 << 20 },
		"checksum on gzip":   func(r *Recipe) { r.Checksum = true },
		"no header":          func(r *Recipe) { r.Header = nil },
		"short header":       func(r *Recipe) { r.Header = hdr[:9] },
		"header bytes after": func(r *Recipe) { r.Header = append(append([]byte(nil), hdr...), 0) },
		"header wrong magic": func(r *Recipe) { r.Header = append([]byte{0x1f, 0x8c}, hdr[2:]...) },
		"header name no NUL": func(r *Recipe) { r.Header = append([]byte{0x1f, 0x8b, 8, flagName, 0, 0, 0, 0, 0, 0}, "abc"...) },
		"header too long": func(r *Recipe) {
			r.Header = append([]byte{0x1f, 0x8b, 8, flagName, 0, 0, 0, 0, 0, 0}, make([]byte, 70000)...)
		},
		"no toolchain":      func(r *Recipe) { r.Toolchain = "" },
		"toolchain control": func(r *Recipe) { r.Toolchain = "go\n1.8" },
		"toolchain long":    func(r *Recipe) { r.Toolchain = strings.Repeat("g", 65) },
		"pgzip no block":    func(r *Recipe) { r.Compressor = CompressorPgzip },
		"pgzip block 16K":   func(r *Recipe) { r.Compressor, r.BlockSize = CompressorPgzip, 16<<10 },
		"pgzip block huge":  func(r *Recipe) { r.Compressor, r.BlockSize = CompressorPgzip, 1<<30 },
		"zstd with header": func(r *Recipe) {
			r.Format, r.Compressor, r.Level, r.WindowSize = FormatZstd, CompressorKlauspostZstd, 2, 8<<20
		},
		"zstd level 0": func(r *Recipe) {
			*r = Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, WindowSize: 8 << 20, Toolchain: "x"}
		},
		"zstd level 5": func(r *Recipe) {
			*r = Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 5, WindowSize: 8 << 20, Toolchain: "x"}
		},
		"zstd window odd": func(r *Recipe) {
			*r = Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, WindowSize: 3 << 20, Toolchain: "x"}
		},
		"zstd window huge": func(r *Recipe) {
			*r = Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, WindowSize: 1 << 30, Toolchain: "x"}
		},
		"zstd window missing": func(r *Recipe) {
			*r = Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, Toolchain: "x"}
		},
		"gzip with lead block": func(r *Recipe) { r.LeadBlock = 8 },
		"zstd lead block negative": func(r *Recipe) {
			*r = Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, WindowSize: 1 << 20, LeadBlock: -1, Toolchain: "x"}
		},
		"zstd lead block of 128 KiB": func(r *Recipe) {
			*r = Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, WindowSize: 1 << 20, LeadBlock: 128 << 10, Toolchain: "x"}
		},
		"zstd with block size": func(r *Recipe) {
			*r = Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, WindowSize: 1 << 20, BlockSize: 1 << 20, Toolchain: "x"}
		},
	} {
		r := good
		change(&r)
		if err := r.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
		if _, err := NewWriter(io.Discard, r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: NewWriter = %v, want ErrInvalid", name, err)
		}
	}
}

func TestParseRecipeStrict(t *testing.T) {
	good := `{"format":"gzip","compressor":"go-gzip","toolchain":"go1.8","level":6,"header":"H4sIAAAAAAAA/w=="}`
	rc, err := ParseRecipe([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Level != 6 || len(rc.Header) != 10 {
		t.Fatalf("parsed %+v", rc)
	}
	for name, js := range map[string]string{
		"unknown field": `{"format":"gzip","compressor":"go-gzip","toolchain":"go1.8","level":6,"header":"H4sIAAAAAAAA/w==","dict":"x"}`,
		"trailing":      good + `{}`,
		"trailing }":    good + `}`,
		"not json":      `level 6`,
		"wrong type":    `{"level":"6"}`,
		"invalid":       `{"format":"gzip","compressor":"go-gzip","toolchain":"go1.8","level":11,"header":"H4sIAAAAAAAA/w=="}`,
	} {
		if _, err := ParseRecipe([]byte(js)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// NewReader decompresses strictly.
func TestNewReader(t *testing.T) {
	data := testTar(t, 200<<10, 9)
	for _, p := range testedProducers() {
		blob := p.compress(t, data)
		r, err := NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %d bytes, %v", p.name, len(got), err)
		}
		r.Close()
		r, err = NewReader(io.MultiReader(bytes.NewReader(blob), bytes.NewReader(blob)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("%s twice: %v, want ErrUnsupported", p.name, err)
		}
	}
}

// failingWriter accepts n bytes, then fails.
type failingWriter struct{ n int }

var errSink = errors.New("sink failed")

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, errSink
	}
	f.n -= len(p)
	return len(p), nil
}

// A failing destination surfaces on Write or Close, and Close stops every goroutine (TestMain
// checks for leaks).
func TestWriterErrors(t *testing.T) {
	data := testTar(t, 1<<20, 14)
	for _, p := range testedProducers() {
		rc, err := Detect(context.Background(), bytes.NewReader(p.compress(t, data[:200<<10])))
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWriter(&failingWriter{n: 50 << 10}, rc)
		if err != nil {
			t.Fatal(err)
		}
		var werr error
		for off := 0; off < len(data) && werr == nil; off += 32 << 10 {
			_, werr = w.Write(data[off : off+32<<10])
		}
		cerr := w.Close()
		if !errors.Is(werr, errSink) && !errors.Is(cerr, errSink) {
			t.Errorf("%s: Write %v, Close %v; want the sink's error", p.name, werr, cerr)
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Errorf("%s: Write after Close succeeded", p.name)
		}
	}
}

func TestContextCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := DetectAndConfirm(ctx, bytes.NewReader(blobOf(t, producers[0]))); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// crc16 is the gzip FHCRC of a header: the low half of its CRC-32.
func crc16(b []byte) uint16 { return uint16(crc32.ChecksumIEEE(b)) }
