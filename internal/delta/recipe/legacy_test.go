package recipe

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func needLegacyHelper(t *testing.T) {
	t.Helper()
	if legacyHelperSkip != "" {
		t.Skipf("no legacy deflate helper: %s", legacyHelperSkip)
	}
}

// withoutLegacyHelper runs f as a node without the helpers runs.
func withoutLegacyHelper(t *testing.T, f func()) {
	t.Helper()
	withLegacyHelpers(t, f)
}

// withLegacyHelpers runs f as a node with only the helpers at paths runs.
func withLegacyHelpers(t *testing.T, f func(), paths ...string) {
	t.Helper()
	saved := LegacyHelpers()
	if err := UseLegacyHelpers(paths...); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := UseLegacyHelpers(saved...); err != nil {
			t.Fatal(err)
		}
	}()
	f()
}

// containersImageHeader is the gzip header containers/image (podman, buildah, skopeo) writes
// through pgzip: a modification time and OS 255. Seen on a skopeo 1.9.3 blob.
var containersImageHeader = []byte{0x1f, 0x8b, 8, 0, 0, 9, 0x6e, 0x88, 0, 0xff}

// legacyBlob is data compressed as a podman built with an older klauspost/compress (the
// release of the helper of family fam) writes it: the helper's deflate stream between that
// header and the trailer; for zstd, the helper's frame with containers/image's 8-byte lead
// block.
func legacyBlob(t *testing.T, fam, compressor string, level, blockSize int, data []byte) []byte {
	t.Helper()
	helper := testHelpers[fam]
	var buf bytes.Buffer
	if compressor == CompressorKlauspostZstd {
		// Window 0: the release's default for the level, as containers/image leaves it.
		rc := Recipe{Format: FormatZstd, Compressor: compressor, Level: level, Checksum: true, LeadBlock: 8}
		mustWriteClose(t, newHelperBody(helper, &buf, rc, 1), data)
		return buf.Bytes()
	}
	buf.Write(containersImageHeader[:8])
	switch level { // XFL, as klauspost's writers set it
	case 9:
		buf.WriteByte(2)
	case 1:
		buf.WriteByte(4)
	default:
		buf.WriteByte(0)
	}
	buf.WriteByte(containersImageHeader[9])
	mustWriteClose(t, newHelperBody(helper, &buf, Recipe{Compressor: compressor, Level: level, BlockSize: blockSize}, 2), data)
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], crc32.ChecksumIEEE(data))
	binary.LittleEndian.PutUint32(trailer[4:], uint32(len(data)))
	buf.Write(trailer[:])
	return buf.Bytes()
}

// detectOnlyWithHelper checks that blob has no recipe without the helper and returns the one
// DetectAndConfirm finds with it.
func detectOnlyWithHelper(t *testing.T, blob []byte) Recipe {
	t.Helper()
	withoutLegacyHelper(t, func() {
		if rc, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob)); !errors.Is(err, ErrUnsupported) {
			t.Errorf("without the helper: DetectAndConfirm = %s, %v; want ErrUnsupported", rc, err)
		}
	})
	rc, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob))
	if err != nil {
		t.Fatalf("DetectAndConfirm: %v", err)
	}
	return rc
}

// TestLegacyFamiliesKnown pins the helpers' output: each its own family at gzip levels 1 to 9
// and zstd levels 1 to 4, with the fingerprints knownLegacyFingerprints holds, and none at
// gzip levels -2 and 0, where they write this binary's bytes.
func TestLegacyFamiliesKnown(t *testing.T) {
	needLegacyHelper(t)
	if raceEnabled {
		t.Skip("fingerprinting every level is slow under the race detector and has no concurrency")
	}
	var table strings.Builder
	failed := false
	for _, own := range []string{familyKlauspost1_18, familyKlauspost1_15} {
		path := testHelpers[own]
		for _, c := range []string{CompressorKlauspostGzip, CompressorPgzip, CompressorKlauspostZstd} {
			levels := []int{-2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
			if c == CompressorKlauspostZstd {
				levels = []int{1, 2, 3, 4}
			}
			for _, l := range levels {
				fp, err := legacyFingerprint(path, c, l)
				if err != nil {
					t.Fatal(err)
				}
				want := own
				if l == -2 || l == 0 {
					want = ""
					if local := fingerprint(c, l); fp != local {
						t.Errorf("%s level %d: the helper's sample output %s is not this binary's %s", c, l, fp, local)
					}
				} else {
					table.WriteString("\t\"" + own + "/" + c + "/" + itoa(l) + "\": \"" + fp + "\",\n")
				}
				var got string
				for _, hf := range legacyFamilies(c, l) {
					if hf.path == path {
						got = hf.family
					}
				}
				if got != want {
					t.Logf("%s: %s level %d: family %q, want %q", filepath.Base(path), c, l, got, want)
					failed = true
				}
			}
		}
	}
	if failed {
		t.Errorf("the legacy helpers' output changed; if intended, knownLegacyFingerprints becomes:\n%s", table.String())
	}
}

// TestLegacyRoundTrip: a layer compressed as the podman, buildah and skopeo of the
// distributions do (pgzip over klauspost/compress before v1.18.1) is unsupported without the
// helper; with it, its recipe is found and confirmed, names the helper's family, and rebuilds
// the blob byte for byte.
func TestLegacyRoundTrip(t *testing.T) {
	needLegacyHelper(t)
	for _, tc := range []struct {
		name       string
		family     string // the helper that writes the blob
		compressor string
		level      int
		blockSize  int
		minSize    int // content at least this long (v1.15.12's zstd differs from v1.18.0's after 2 MiB)
	}{
		{"pgzip default (containers/image)", familyKlauspost1_18, CompressorPgzip, 5, 1 << 20, 0},
		{"pgzip level 9", familyKlauspost1_18, CompressorPgzip, 9, 1 << 20, 0},
		{"pgzip level 7", familyKlauspost1_18, CompressorPgzip, 7, 1 << 20, 0},
		{"klauspost gzip default", familyKlauspost1_18, CompressorKlauspostGzip, 5, 0, 0},
		{"zstd default (containers/image)", familyKlauspost1_18, CompressorKlauspostZstd, 2, 0, 0},
		{"zstd fastest", familyKlauspost1_18, CompressorKlauspostZstd, 1, 0, 0},
		{"v1.15 pgzip level 9", familyKlauspost1_15, CompressorPgzip, 9, 1 << 20, 0},
		{"v1.15 zstd default (Debian 12)", familyKlauspost1_15, CompressorKlauspostZstd, 2, 0, 3 << 20},
		{"v1.15 zstd better (16 MiB window)", familyKlauspost1_15, CompressorKlauspostZstd, 3, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := layer(t)
			if len(data) < tc.minSize {
				data = testTar(t, tc.minSize, 1)
			}
			blob := legacyBlob(t, tc.family, tc.compressor, tc.level, tc.blockSize, data)
			want := tc.family
			if tc.family != familyKlauspost1_18 && bytes.Equal(blob, legacyBlob(t, familyKlauspost1_18, tc.compressor, tc.level, tc.blockSize, data)) {
				want = familyKlauspost1_18 // both write this blob: detection names the first helper's family
				if tc.minSize > 0 {
					t.Fatalf("%d bytes of content: the helpers write the same blob, the test shows nothing", len(data))
				}
			}
			rc := detectOnlyWithHelper(t, blob)
			if rc.Compressor != tc.compressor || rc.Level != tc.level || rc.BlockSize != tc.blockSize || rc.Toolchain != want {
				t.Fatalf("recipe %s; want %s level %d block %d of family %s", rc, tc.compressor, tc.level, tc.blockSize, want)
			}
			if tc.compressor == CompressorKlauspostZstd {
				if rc.LeadBlock != 8 {
					t.Fatalf("recipe %s; want a lead block of 8 bytes", rc)
				}
			} else if !bytes.Equal(rc.Header, blob[:10]) {
				t.Fatalf("recipe header %x; want the blob's %x", rc.Header, blob[:10])
			}
			if got := recompress(t, rc, data, 3); !bytes.Equal(got, blob) {
				t.Fatalf("recompressing with %s does not give the blob (%d bytes, want %d)", rc, len(got), len(blob))
			}
			if err := Confirm(context.Background(), bytes.NewReader(blob), rc); err != nil {
				t.Fatalf("Confirm: %v", err)
			}
			// A node without this family's helper (with or without the other) refuses the
			// recipe, naming the helper it lacks.
			var other []string
			for fam, path := range testHelpers {
				if fam != rc.Toolchain {
					other = append(other, path)
				}
			}
			lacking := legacyHelperNames[rc.Toolchain]
			for _, helpers := range [][]string{nil, other} {
				withLegacyHelpers(t, func() {
					_, err := NewWriter(&bytes.Buffer{}, rc)
					if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), lacking) {
						t.Errorf("with helpers %q: NewWriter(%s) = %v; want ErrUnsupported naming %s", helpers, rc, err, lacking)
					}
				}, helpers...)
			}
		})
	}
}

// TestLegacySkopeoZstd: a zstd layer written by a real containers/image, Debian 12's skopeo
// 1.9.3 (skopeo copy --dest-compress-format zstd), whose 8-byte compression probe is flushed
// as a block of its own, is reproduced with the helpers and only with them. skopeo's
// klauspost/compress v1.15.12 and v1.18.0 compress this short content alike at the default
// level, so the first helper's family, v1.18.0's, is named; on longer layers they differ and
// only v1.15.12's helper reproduces skopeo's (TestLegacyRoundTrip, and
// TestDeltaOfSkopeoZstdLayers in test/e2e).
func TestLegacySkopeoZstd(t *testing.T) {
	needLegacyHelper(t)
	blob, err := os.ReadFile(filepath.Join("testdata", "skopeo-1.9.3-zstd.blob"))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	data, err := dec.DecodeAll(blob, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc := detectOnlyWithHelper(t, blob)
	want := Recipe{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, WindowSize: 8 << 20, Checksum: true, LeadBlock: 8, Toolchain: familyKlauspost1_18}
	if rc.String() != want.String() {
		t.Fatalf("recipe %s; want %s", rc, want)
	}
	if got := recompress(t, rc, data, 5); !bytes.Equal(got, blob) {
		t.Fatalf("recompressing with %s does not give skopeo's blob (%d bytes, want %d)", rc, len(got), len(blob))
	}
}

// TestLegacyWrongBlob: the helper's output is compared as it comes and a wrong blob is
// refused: one byte changed in a podman-like blob, or the content of another blob.
func TestLegacyWrongBlob(t *testing.T) {
	needLegacyHelper(t)
	data := layer(t)
	blob := legacyBlob(t, familyKlauspost1_18, CompressorPgzip, 5, 1<<20, data)
	rc := Recipe{Format: FormatGzip, Compressor: CompressorPgzip, Level: 5, BlockSize: 1 << 20, Header: containersImageHeader, Toolchain: familyKlauspost1_18}
	bad := bytes.Clone(blob)
	bad[len(bad)*2/3] ^= 0x10
	if err := Confirm(context.Background(), bytes.NewReader(bad), rc); err == nil {
		t.Fatal("Confirm accepted a damaged blob")
	}
	other := legacyBlob(t, familyKlauspost1_18, CompressorPgzip, 6, 1<<20, data)
	if err := Confirm(context.Background(), bytes.NewReader(other), rc); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Confirm of a level-6 blob with a level-5 recipe: %v; want ErrMismatch", err)
	}
}

// TestLegacyHelperKilled: a helper that dies mid-stream (killed, out of memory) makes the
// writer fail with ErrUnsupported, without hanging or leaking goroutines, so that the layer is
// fetched whole; and Confirm against such a helper reports the failure rather than a match.
func TestLegacyHelperKilled(t *testing.T) {
	needLegacyHelper(t)
	data := layer(t)
	for _, rc := range []Recipe{
		{Format: FormatGzip, Compressor: CompressorPgzip, Level: 5, BlockSize: 1 << 20, Header: containersImageHeader, Toolchain: familyKlauspost1_18},
		{Format: FormatZstd, Compressor: CompressorKlauspostZstd, Level: 2, WindowSize: 8 << 20, Checksum: true, LeadBlock: 8, Toolchain: familyKlauspost1_18},
	} {
		t.Run(rc.Compressor, func(t *testing.T) {
			var out bytes.Buffer
			w, err := NewWriter(&out, rc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data[:1<<20]); err != nil {
				t.Fatal(err)
			}
			body := helperOf(t, w)
			if err := body.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_, werr := w.Write(data[1<<20:])
			cerr := w.Close()
			if werr == nil && cerr == nil {
				t.Fatal("writing through a killed helper succeeded")
			}
			if err := cmp.Or(werr, cerr); !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v; want ErrUnsupported", err)
			}
			t.Logf("write: %v; close: %v", werr, cerr)
		})
	}
}

// helperOf digs the helper out of a writer NewWriter returned for a legacy recipe.
func helperOf(t *testing.T, w io.WriteCloser) *helperBody {
	t.Helper()
	switch w := w.(type) {
	case *gzipWriter:
		if b, ok := w.body.(*helperBody); ok {
			return b
		}
	case *helperStream:
		return w.body
	}
	t.Fatalf("%T does not run the legacy helper", w)
	return nil
}

// TestUseLegacyHelpers: helpers are found beside the executable under their release names or
// dist's platform-suffixed ones; one that does not run is left out and named, a copy of
// one in use adds nothing, and the newest release comes first whatever the order found.
func TestUseLegacyHelpers(t *testing.T) {
	needLegacyHelper(t)
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("no executable path: %v", err)
	}
	dir := filepath.Dir(exe)
	place := func(name, src string) {
		t.Helper()
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Skipf("cannot write beside the test binary: %v", err)
		}
		t.Cleanup(func() { os.Remove(p) })
	}
	place(LegacyHelperName+"-klauspost1.15-linux-amd64", testHelpers[familyKlauspost1_15])
	place(LegacyHelperName+"-linux-amd64", testHelpers[familyKlauspost1_18])
	place(LegacyHelperName+"-copy", testHelpers[familyKlauspost1_18])
	place(LegacyHelperName+"-broken", "testdata/skopeo-1.9.3-zstd.blob") // not a program
	found := FindLegacyHelpers()
	if len(found) != 4 {
		t.Fatalf("FindLegacyHelpers = %q; want the 4 placed beside %s", found, exe)
	}
	saved := LegacyHelpers()
	defer func() {
		if err := UseLegacyHelpers(saved...); err != nil {
			t.Fatal(err)
		}
	}()
	err = UseLegacyHelpers(found...)
	if err == nil || !strings.Contains(err.Error(), LegacyHelperName+"-broken") {
		t.Fatalf("UseLegacyHelpers: %v; want an error naming the broken helper", err)
	}
	got := LegacyHelpers()
	if len(got) != 2 || strings.Contains(got[0], "klauspost1.15") || !strings.Contains(got[1], "klauspost1.15") {
		t.Fatalf("helpers in use %q; want v1.18.0's (one of its two copies), then v1.15.12's", got)
	}
	if d := Detector(); !strings.Contains(d, "v1.18.0") || !strings.Contains(d, "v1.15.12") {
		t.Errorf("Detector() = %q; want both releases named", d)
	}
}

// TestLegacyHelperStalls: a helper that hangs — one that stops reading its input, or one that
// read it all but never finishes its output (stand-ins: shell scripts that sleep) — is killed
// once it has made no progress for helperStall; the writer fails with ErrUnsupported instead
// of hanging the rebuild, and no goroutine is left behind (TestMain checks).
func TestLegacyHelperStalls(t *testing.T) {
	saved := helperStall
	helperStall = 300 * time.Millisecond
	defer func() { helperStall = saved }()
	dir := t.TempDir()
	for _, tc := range []struct{ name, script string }{
		{"stops reading", "exec sleep 60"},
		{"never finishes", "cat >/dev/null; exec sleep 60"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.WriteFile(path, []byte("#!/bin/sh\n"+tc.script+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			rc := Recipe{Format: FormatGzip, Compressor: CompressorPgzip, Level: 5, BlockSize: 1 << 20}
			body := newHelperBody(path, io.Discard, rc, 1)
			start := time.Now()
			_, werr := body.Write(make([]byte, 4<<20))
			cerr := body.Close()
			if err := cmp.Or(werr, cerr); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "no progress") {
				t.Fatalf("write: %v; close: %v; want ErrUnsupported saying the helper made no progress", werr, cerr)
			}
			if took := time.Since(start); took > 30*time.Second {
				t.Fatalf("the stalled helper held the writer for %v", took)
			}
		})
	}
}
