package recipe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

func needLegacyHelper(t *testing.T) {
	t.Helper()
	if legacyHelperSkip != "" {
		t.Skipf("no legacy deflate helper: %s", legacyHelperSkip)
	}
}

// withoutLegacyHelper runs f as a node without the helper runs.
func withoutLegacyHelper(t *testing.T, f func()) {
	t.Helper()
	path := legacyPath()
	if err := UseLegacyHelper(""); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := UseLegacyHelper(path); err != nil {
			t.Fatal(err)
		}
	}()
	f()
}

// containersImageHeader is the gzip header containers/image (podman, buildah, skopeo) writes
// through pgzip: a modification time and OS 255. Seen on a skopeo 1.9.3 blob.
var containersImageHeader = []byte{0x1f, 0x8b, 8, 0, 0, 9, 0x6e, 0x88, 0, 0xff}

// legacyBlob is data compressed as a podman built with klauspost/compress v1.18.0 or earlier
// writes it: the helper's deflate stream between that header and the trailer.
func legacyBlob(t *testing.T, compressor string, level, blockSize int, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
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
	w := newHelperBody(legacyPath(), &buf, Recipe{Compressor: compressor, Level: level, BlockSize: blockSize}, 2)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], crc32.ChecksumIEEE(data))
	binary.LittleEndian.PutUint32(trailer[4:], uint32(len(data)))
	buf.Write(trailer[:])
	return buf.Bytes()
}

// TestLegacyFamiliesKnown pins the helper's output families: its own at levels 1 to 9, and
// at levels -2 and 0, where it writes this binary's bytes, none.
func TestLegacyFamiliesKnown(t *testing.T) {
	needLegacyHelper(t)
	if raceEnabled {
		t.Skip("fingerprinting every level is slow under the race detector and has no concurrency")
	}
	var table strings.Builder
	failed := false
	for _, c := range []string{CompressorKlauspostGzip, CompressorPgzip} {
		for _, l := range []int{-2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9} {
			got := legacyFamily(c, l)
			fp, err := legacyFingerprint(legacyPath(), c, l)
			if err != nil {
				t.Fatal(err)
			}
			want := familyKlauspostLegacy
			if l == -2 || l == 0 {
				want = ""
				if local := fingerprint(c, l); fp != local {
					t.Errorf("%s level %d: the helper's sample output %s is not this binary's %s", c, l, fp, local)
				}
			} else {
				table.WriteString("\t\"" + c + "/" + itoa(l) + "/" + fp + "\": familyKlauspostLegacy,\n")
			}
			if got != want {
				t.Logf("%s level %d: family %q, want %q", c, l, got, want)
				failed = true
			}
		}
	}
	if failed {
		t.Errorf("the legacy helper's output families changed; if intended, knownLegacyFamilies becomes:\n%s", table.String())
	}
}

// TestLegacyRoundTrip: a layer compressed as the podman, buildah and skopeo of the
// distributions do (pgzip over klauspost/compress before v1.18.1) is unsupported without the
// helper; with it, its recipe is found and confirmed, names the helper's family, and rebuilds
// the blob byte for byte.
func TestLegacyRoundTrip(t *testing.T) {
	needLegacyHelper(t)
	data := layer(t)
	for _, tc := range []struct {
		name       string
		compressor string
		level      int
		blockSize  int
	}{
		{"pgzip default (containers/image)", CompressorPgzip, 5, 1 << 20},
		{"pgzip level 9", CompressorPgzip, 9, 1 << 20},
		{"pgzip level 7", CompressorPgzip, 7, 1 << 20},
		{"klauspost gzip default", CompressorKlauspostGzip, 5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob := legacyBlob(t, tc.compressor, tc.level, tc.blockSize, data)
			withoutLegacyHelper(t, func() {
				if rc, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob)); !errors.Is(err, ErrUnsupported) {
					t.Errorf("without the helper: DetectAndConfirm = %s, %v; want ErrUnsupported", rc, err)
				}
			})
			rc, err := DetectAndConfirm(context.Background(), bytes.NewReader(blob))
			if err != nil {
				t.Fatalf("DetectAndConfirm: %v", err)
			}
			if rc.Compressor != tc.compressor || rc.Level != tc.level || rc.BlockSize != tc.blockSize || rc.Toolchain != familyKlauspostLegacy {
				t.Fatalf("recipe %s; want %s level %d block %d of family %s", rc, tc.compressor, tc.level, tc.blockSize, familyKlauspostLegacy)
			}
			if !bytes.Equal(rc.Header, blob[:10]) {
				t.Fatalf("recipe header %x; want the blob's %x", rc.Header, blob[:10])
			}
			if got := recompress(t, rc, data, 3); !bytes.Equal(got, blob) {
				t.Fatalf("recompressing with %s does not give the blob (%d bytes, want %d)", rc, len(got), len(blob))
			}
			if err := Confirm(context.Background(), bytes.NewReader(blob), rc); err != nil {
				t.Fatalf("Confirm: %v", err)
			}
			// A node without the helper refuses the recipe, saying what it lacks.
			withoutLegacyHelper(t, func() {
				_, err := NewWriter(&bytes.Buffer{}, rc)
				if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), LegacyHelperName) {
					t.Errorf("without the helper: NewWriter(%s) = %v; want ErrUnsupported naming %s", rc, err, LegacyHelperName)
				}
			})
		})
	}
}

// TestLegacyWrongBlob: the helper's output is compared as it comes and a wrong blob is
// refused: one byte changed in a podman-like blob, or the content of another blob.
func TestLegacyWrongBlob(t *testing.T) {
	needLegacyHelper(t)
	data := layer(t)
	blob := legacyBlob(t, CompressorPgzip, 5, 1<<20, data)
	rc := Recipe{Format: FormatGzip, Compressor: CompressorPgzip, Level: 5, BlockSize: 1 << 20, Header: containersImageHeader, Toolchain: familyKlauspostLegacy}
	bad := bytes.Clone(blob)
	bad[len(bad)*2/3] ^= 0x10
	if err := Confirm(context.Background(), bytes.NewReader(bad), rc); err == nil {
		t.Fatal("Confirm accepted a damaged blob")
	}
	other := legacyBlob(t, CompressorPgzip, 6, 1<<20, data)
	if err := Confirm(context.Background(), bytes.NewReader(other), rc); !errors.Is(err, ErrMismatch) {
		t.Fatalf("Confirm of a level-6 blob with a level-5 recipe: %v; want ErrMismatch", err)
	}
}
