package delta_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"
	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/internal/delta/tardelta"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Test data: a deterministic layer tree (source text, configs, binaries, incompressible
// assets, directories, symlinks and a hard link) whose contents are generated from per-file
// seeds while the tar is written, so that even large layers never sit in memory.

type kind uint8

const (
	kindDir kind = iota
	kindText
	kindConfig
	kindBinary
	kindAsset // already compressed: incompressible
	kindSymlink
	kindHardlink
)

type fileSpec struct {
	name  string
	kind  kind
	link  string // symlink target, or the path a hard link points to
	size  int
	seed  uint64
	edit  uint64 // non-zero: the content generated from seed, then edited with this seed
	mtime int64
}

func (f fileSpec) regular() bool { return f.kind >= kindText && f.kind <= kindAsset }

// content is the file's bytes, the same on every call.
func (f fileSpec) content() []byte {
	if !f.regular() {
		return nil
	}
	b := gen(rand.New(rand.NewPCG(f.seed, 0xda7a)), f.kind, f.size)
	if f.edit != 0 {
		b = editData(rand.New(rand.NewPCG(f.edit, 0xed17)), f.kind, b)
	}
	return b
}

type tree []fileSpec

var vocabulary = strings.Fields(`the of and to in is that for it as with was on be by this are or
from at an not which have has but all were when can more one been if there will no their would so
func return err nil package import struct type var const interface map string int byte error range
if else for go defer select case default switch ctx context log layer blob digest registry sync`)

// Real layers repeat themselves far beyond gzip's 32 KiB window: source files share
// license headers, imports and idioms; binaries link the same libraries and runtime. The
// generated contents draw from shared pools of lines and functions to look alike the same way
// (i.i.d. words and opcodes would compress no better with any window).
var (
	// opcodes is the instruction repertoire of the generated machine code.
	opcodes [][]byte
	// lines are the source lines files are mostly made of.
	lines [][]byte
	// functions are the machine code binaries are mostly linked from.
	functions [][]byte
	license   []byte
)

func init() {
	rng := rand.New(rand.NewPCG(42, 42))
	opcodes = make([][]byte, 400)
	for i := range opcodes {
		opcodes[i] = make([]byte, 1+rng.IntN(7))
		for j := range opcodes[i] {
			opcodes[i][j] = byte(rng.Uint32())
		}
	}
	lines = make([][]byte, 4000)
	for i := range lines {
		lines[i] = freshLine(rng, rng.IntN(4))
	}
	functions = make([][]byte, 800)
	for i := range functions {
		functions[i] = machineCode(rng, 100+rng.IntN(rng.IntN(4000)+1))
	}
	for len(license) < 700 {
		license = append(license, lines[len(license)%97]...)
	}
}

// skewed picks an index below n, small ones far more often.
func skewed(rng *rand.Rand, n int) int { return rng.IntN(rng.IntN(n) + 1) }

func freshLine(rng *rand.Rand, indent int) []byte {
	b := append([]byte{}, "\t\t\t\t"[:indent]...)
	for w := 2 + rng.IntN(9); w > 0; w-- {
		if rng.IntN(8) == 0 {
			b = strconv.AppendInt(b, int64(rng.IntN(100000)), 10)
		} else {
			b = append(b, vocabulary[rng.IntN(len(vocabulary))]...)
		}
		b = append(b, ' ')
	}
	return append(b, '\n')
}

func machineCode(rng *rand.Rand, n int) []byte {
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, opcodes[rng.IntN(len(opcodes))]...)
		for range rng.IntN(4) {
			b = append(b, byte(rng.Uint32()))
		}
	}
	return b[:n]
}

func gen(rng *rand.Rand, k kind, n int) []byte {
	var b []byte
	switch k {
	case kindText:
		b = make([]byte, 0, n+256)
		if n > 2000 && rng.IntN(2) == 0 {
			b = append(b, license...)
		}
		for len(b) < n {
			if rng.IntN(4) == 0 {
				b = append(b, freshLine(rng, rng.IntN(4))...)
			} else {
				b = append(b, lines[skewed(rng, len(lines))]...)
			}
		}
	case kindConfig:
		b = make([]byte, 0, n+64)
		for i := 0; len(b) < n; i++ {
			b = fmt.Appendf(b, "%s_%d = %q\n", vocabulary[rng.IntN(len(vocabulary))], i, vocabulary[rng.IntN(len(vocabulary))])
		}
	case kindBinary:
		// Linked functions, a few bytes of each relocated, and code of its own.
		b = make([]byte, 0, n+4096)
		for len(b) < n {
			if rng.IntN(2) == 0 {
				b = append(b, machineCode(rng, 64+rng.IntN(1024))...)
				continue
			}
			at := len(b)
			b = append(b, functions[skewed(rng, len(functions))]...)
			for range (len(b) - at) / 32 {
				b[at+rng.IntN(len(b)-at)] = byte(rng.Uint32())
			}
		}
	case kindAsset:
		b = make([]byte, n)
		var seed [32]byte
		for i := range seed {
			seed[i] = byte(rng.Uint32())
		}
		_, _ = rand.NewChaCha8(seed).Read(b)
	}
	return b[:n]
}

// editData makes one to three small edits: a replaced range, an insertion or a deletion.
func editData(rng *rand.Rand, k kind, b []byte) []byte {
	for range 1 + rng.IntN(3) {
		pos := rng.IntN(len(b) + 1)
		switch rng.IntN(3) {
		case 0:
			n := min(1+rng.IntN(200), len(b)-pos)
			copy(b[pos:pos+n], gen(rng, k, n))
		case 1:
			b = slices.Insert(b, pos, gen(rng, k, 1+rng.IntN(500))...)
		default:
			b = slices.Delete(b, pos, pos+min(1+rng.IntN(200), len(b)-pos))
		}
	}
	return b
}

// baseTree is an application layer of about total content bytes: a few hundred files for a
// few MiB.
func baseTree(seed uint64, total int) tree {
	rng := rand.New(rand.NewPCG(seed, 0x7733))
	const mtime = 1_700_000_000
	dirs := []string{"etc/", "etc/app/", "opt/", "opt/app/", "opt/app/bin/", "opt/app/lib/",
		"opt/app/static/", "opt/app/static/img/", "opt/app/src/", "opt/app/src/internal/",
		"usr/", "usr/share/", "usr/share/doc/", "usr/share/doc/app/", "var/", "var/lib/", "var/lib/app/"}
	var t tree
	for _, d := range dirs {
		t = append(t, fileSpec{name: d, kind: kindDir, mtime: mtime})
	}
	firstBin, firstConf := "", ""
	for i, sum := 0, 0; sum < total; i++ {
		f := fileSpec{seed: rng.Uint64(), mtime: mtime + int64(i)}
		switch r := rng.IntN(100); {
		case r < 55:
			f.kind, f.size = kindText, 200+rng.IntN(1+rng.IntN(40000))
			f.name = fmt.Sprintf("%sfile%05d.go", []string{"opt/app/src/", "opt/app/src/internal/", "usr/share/doc/app/"}[rng.IntN(3)], i)
		case r < 75:
			f.kind, f.size = kindConfig, 40+rng.IntN(600)
			f.name = fmt.Sprintf("%sconf%05d.toml", []string{"etc/app/", "var/lib/app/"}[rng.IntN(2)], i)
			if firstConf == "" {
				firstConf = f.name
			}
		case r < 90:
			f.kind, f.size = kindBinary, 8<<10+rng.IntN(120<<10)
			f.name = fmt.Sprintf("%sprog%05d", []string{"opt/app/bin/", "opt/app/lib/"}[rng.IntN(2)], i)
			if firstBin == "" {
				firstBin = f.name
			}
		default:
			f.kind, f.size = kindAsset, 1<<10+rng.IntN(60<<10)
			f.name = fmt.Sprintf("opt/app/static/img/img%05d.png", i)
		}
		sum += f.size
		t = append(t, f)
	}
	return append(t,
		fileSpec{name: "opt/app/bin/current", kind: kindSymlink, link: filepath.Base(firstBin), mtime: mtime},
		fileSpec{name: "etc/app/default.toml", kind: kindSymlink, link: "/" + firstConf, mtime: mtime},
		fileSpec{name: "opt/app/bin/app-hardlink", kind: kindHardlink, link: firstBin, mtime: mtime},
	)
}

// v2 is the next version of an application layer: a few files edited, one added, one
// removed, one renamed (links and their targets left alone).
func (t tree) v2(seed uint64) tree {
	rng := rand.New(rand.NewPCG(seed, 0x0e2e))
	out := slices.Clone(t)
	linked := map[string]bool{}
	for _, f := range t {
		if f.kind == kindHardlink || f.kind == kindSymlink {
			linked[strings.TrimPrefix(f.link, "/")] = true
		}
	}
	var files []int
	for i, f := range out {
		if f.regular() && !linked[f.name] {
			files = append(files, i)
		}
	}
	rng.Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
	for _, i := range files[:6] {
		out[i].edit = rng.Uint64() | 1
		out[i].mtime += 86400
	}
	renamed := files[6]
	out[renamed].name = filepath.Dir(out[renamed].name) + "/renamed-" + filepath.Base(out[renamed].name)
	removed := files[7]
	out = slices.Delete(out, removed, removed+1)
	added := fileSpec{name: "opt/app/src/internal/added.go", kind: kindText, size: 3000 + rng.IntN(8000),
		seed: rng.Uint64(), mtime: 1_700_086_400}
	return slices.Insert(out, len(out)-3, added)
}

// writeTar writes the tree as a tar, generating contents as it goes.
func (t tree) writeTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, f := range t {
		hdr := &tar.Header{Name: f.name, Mode: 0o644, ModTime: time.Unix(f.mtime, 0), Uname: "root", Gname: "root"}
		var data []byte
		switch f.kind {
		case kindDir:
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		case kindSymlink:
			hdr.Typeflag, hdr.Mode, hdr.Linkname = tar.TypeSymlink, 0o777, f.link
		case kindHardlink:
			hdr.Typeflag, hdr.Mode, hdr.Linkname = tar.TypeLink, 0o755, f.link
		default:
			data = f.content()
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(data))
			if f.kind == kindBinary {
				hdr.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// tarBytes is the tree's tar in memory (small trees only).
func (t tree) tarBytes(tb testing.TB) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := t.writeTar(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// compressor is how a tool compresses its layers, with the library the tool uses.
type compressor struct {
	name string
	new  func(io.Writer) (io.WriteCloser, error)
}

var compressors = []compressor{
	{"docker-go-gzip-default", func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriterLevel(w, gzip.DefaultCompression) }},
	{"crane-go-gzip-bestspeed", func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriterLevel(w, gzip.BestSpeed) }},
	{"podman-pgzip-default", func(w io.Writer) (io.WriteCloser, error) { return pgzip.NewWriter(w), nil }},
	{"containerd-zstd-default", func(w io.Writer) (io.WriteCloser, error) { return zstd.NewWriter(w) }},
}

// dockerGzip is the most common compressor.
var dockerGzip = compressors[0]

// layerBytes is the content size of the test layers: smaller under the race detector, which
// slows the compressors about tenfold.
func layerBytes() int {
	if raceEnabled {
		return 1 << 20
	}
	return 5 << 20
}

// diskBlobs is the parent's blob store: files named by their digest in a directory.
type diskBlobs struct {
	dir   string
	opens atomic.Int64
	// gate, when not nil, holds OpenBlob until it is closed.
	gate chan struct{}
}

func newDiskBlobs(tb testing.TB) *diskBlobs { return &diskBlobs{dir: tb.TempDir()} }

func (b *diskBlobs) OpenBlob(ctx context.Context, repo string, dgst digest.Digest) (io.ReadSeekCloser, int64, error) {
	b.opens.Add(1)
	if b.gate != nil {
		select {
		case <-b.gate:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	if repo == "" {
		return nil, 0, errors.New("no repository")
	}
	if err := dgst.Validate(); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(filepath.Join(b.dir, dgst.Encoded()))
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// GetManifest reads a manifest stored with putBytes, as the registry's manifest store would
// (diskBlobs keeps manifests and layers alike, by digest).
func (b *diskBlobs) GetManifest(ctx context.Context, repo string, d digest.Digest) (string, []byte, error) {
	rc, _, err := b.OpenBlob(ctx, repo, d)
	if err != nil {
		return "", nil, err
	}
	defer rc.Close()
	raw, err := io.ReadAll(rc)
	var m struct {
		MediaType string `json:"mediaType"`
	}
	_ = json.Unmarshal(raw, &m)
	return m.MediaType, raw, err
}

// blob is a layer blob in a diskBlobs.
type blob struct {
	digest digest.Digest
	size   int64
	path   string
	diffID string // sha256 of the uncompressed tar, when the test built it
}

// putLayer compresses the tree's tar with c into the store.
func (b *diskBlobs) putLayer(tb testing.TB, t tree, c compressor) blob {
	tb.Helper()
	f, err := os.CreateTemp(b.dir, "tmp-*")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	bh, th := sha256.New(), sha256.New()
	zw, err := c.new(io.MultiWriter(f, bh))
	if err != nil {
		tb.Fatal(err)
	}
	if err := t.writeTar(io.MultiWriter(zw, th)); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.commit(tb, f, bh.Sum(nil), "sha256:"+hex.EncodeToString(th.Sum(nil)))
}

// putBytes stores data as a blob.
func (b *diskBlobs) putBytes(tb testing.TB, data []byte) blob {
	tb.Helper()
	f, err := os.CreateTemp(b.dir, "tmp-*")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return b.commit(tb, f, sum[:], "")
}

func (b *diskBlobs) commit(tb testing.TB, f *os.File, sum []byte, diffID string) blob {
	tb.Helper()
	fi, err := f.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	d := digest.NewDigestFromBytes(digest.SHA256, sum)
	path := filepath.Join(b.dir, d.Encoded())
	if err := os.Rename(f.Name(), path); err != nil {
		tb.Fatal(err)
	}
	return blob{digest: d, size: fi.Size(), path: path, diffID: diffID}
}

// gzipBytes compresses data as Docker does.
func gzipBytes(tb testing.TB, data []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

const testRepo = "apps/web"

// request asks for target, offering have (at positions 0, 1, ...) as bases.
func request(target blob, have ...blob) acrapi.DeltaRequest {
	req := acrapi.DeltaRequest{Repository: testRepo, Digest: target.digest.String(), Size: target.size,
		Position: 0, Have: []acrapi.HeldLayer{}, Formats: delta.Formats}
	for i, h := range have {
		req.Have = append(req.Have, acrapi.HeldLayer{Digest: h.digest.String(), Repository: testRepo, Position: i})
	}
	return req
}

// testLogger logs to the test and records what was logged.
func testLogger(tb testing.TB) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.InfoLevel)
	return zap.New(zapcore.NewTee(zaptest.NewLogger(tb, zaptest.Level(zapcore.InfoLevel)).Core(), core)), logs
}

// newService is a parent's service over src, with its cache in a fresh directory.
func newService(tb testing.TB, src delta.BlobSource) (*delta.Service, *observer.ObservedLogs) {
	tb.Helper()
	log, logs := testLogger(tb)
	svc, err := delta.NewService(tb.TempDir(), src, log, delta.Limits{})
	if err != nil {
		tb.Fatal(err)
	}
	return svc, logs
}

// computed counts the deltas a service computed.
func computed(logs *observer.ObservedLogs) int {
	return logs.FilterMessage("delta computed").Len()
}

// plan asks svc until the answer is not ErrPending (each call waits a while), for at most
// about ten minutes.
func plan(tb testing.TB, svc *delta.Service, req acrapi.DeltaRequest) (acrapi.DeltaPlan, error) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Minute); ; {
		p, err := svc.Plan(context.Background(), req)
		if !errors.Is(err, delta.ErrPending) || time.Now().After(deadline) {
			return p, err
		}
	}
}

func mustPlan(tb testing.TB, svc *delta.Service, req acrapi.DeltaRequest) acrapi.DeltaPlan {
	tb.Helper()
	p, err := plan(tb, svc, req)
	if err != nil {
		tb.Fatalf("Plan: %v", err)
	}
	return p
}

// child is an edge node: it holds some blobs, fetches deltas and rebuilds layers.
type child struct {
	tb   testing.TB
	dir  string
	held map[digest.Digest]blob

	mu    sync.Mutex
	bases map[digest.Digest]*io.SectionReader

	tarSize int64 // the size of the tar the last rebuild says it rebuilt
}

func newChild(tb testing.TB, held ...blob) *child {
	c := &child{tb: tb, dir: tb.TempDir(), held: map[digest.Digest]blob{}, bases: map[digest.Digest]*io.SectionReader{}}
	for _, b := range held {
		c.held[b.digest] = b
	}
	return c
}

// fetch downloads the plan's delta into the child's directory and checks it against the
// plan's ID and size.
func (c *child) fetch(svc *delta.Service, p acrapi.DeltaPlan) string {
	c.tb.Helper()
	src, err := svc.Open(p.ID)
	if err != nil {
		c.tb.Fatalf("Open(%s): %v", p.ID, err)
	}
	defer src.Close()
	path := filepath.Join(c.dir, "delta-"+strings.TrimPrefix(p.ID, "sha256:"))
	dst, err := os.Create(path)
	if err != nil {
		c.tb.Fatal(err)
	}
	defer dst.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(dst, h), src)
	if err != nil {
		c.tb.Fatal(err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != p.ID {
		c.tb.Fatalf("the delta's sha256 is %s, its plan's ID %s", got, p.ID)
	}
	if n != p.Size {
		c.tb.Fatalf("the delta has %d bytes, its plan says %d", n, p.Size)
	}
	return path
}

// base is the uncompressed tar of a held blob, decompressed on first use as a child does.
func (c *child) base(d digest.Digest) *io.SectionReader {
	c.tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.bases[d]; ok {
		return r
	}
	b, ok := c.held[d]
	if !ok {
		c.tb.Fatalf("the plan names base %s, which the child does not hold", d)
	}
	in, err := os.Open(b.path)
	if err != nil {
		c.tb.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(c.dir, "base-"+d.Encoded()))
	if err != nil {
		c.tb.Fatal(err)
	}
	c.tb.Cleanup(func() { out.Close() })
	n, err := delta.Decompress(context.Background(), in, out)
	if err != nil {
		c.tb.Fatalf("Decompress(%s): %v", d, err)
	}
	r := io.NewSectionReader(out, 0, n)
	c.bases[d] = r
	return r
}

// basesOf are the plan's bases, in its order.
func (c *child) basesOf(p acrapi.DeltaPlan) []tardelta.SizedReaderAt {
	c.tb.Helper()
	out := []tardelta.SizedReaderAt{}
	for _, name := range p.Bases {
		d, err := digest.Parse(name)
		if err != nil {
			c.tb.Fatalf("plan base %q: %v", name, err)
		}
		out = append(out, c.base(d))
	}
	return out
}

// rebuild rebuilds the layer of p from the delta file at path.
func (c *child) rebuild(p acrapi.DeltaPlan, path string) ([]byte, error) {
	c.tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		c.tb.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	c.tarSize, err = delta.Rebuild(context.Background(), p, f, c.basesOf(p), &out)
	return out.Bytes(), err
}

// mustRebuild rebuilds and checks the result is the blob, byte for byte.
func (c *child) mustRebuild(p acrapi.DeltaPlan, path string, want blob) {
	c.tb.Helper()
	got, err := c.rebuild(p, path)
	if err != nil {
		c.tb.Fatalf("Rebuild: %v", err)
	}
	wantBytes, err := os.ReadFile(want.path)
	if err != nil {
		c.tb.Fatal(err)
	}
	if !bytes.Equal(got, wantBytes) {
		c.tb.Fatalf("Rebuild returned nil but %d bytes (sha256 %x) instead of the %d-byte blob %s",
			len(got), sha256.Sum256(got), len(wantBytes), want.digest)
	}
}

func mustReadFile(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// ratio formats a/b as a percentage.
func ratio(a, b int64) string { return fmt.Sprintf("%.2f%%", 100*float64(a)/float64(b)) }

// plansMetric is outpost_delta_plans_total as a parent's /metrics show it, with these counts
// (for testutil.GatherAndCompare).
func plansMetric(computed, cached, reused, unavailable int) string {
	return fmt.Sprintf(`# HELP outpost_delta_plans_total Children's delta requests, by result: computed, cached (the same request earlier), reused (another request with the same bases), unavailable (the layer goes whole), pending (asked to retry), failed (the parent could not compute it: a full disk; the layer goes whole).
# TYPE outpost_delta_plans_total counter
outpost_delta_plans_total{result="cached"} %d
outpost_delta_plans_total{result="computed"} %d
outpost_delta_plans_total{result="failed"} 0
outpost_delta_plans_total{result="pending"} 0
outpost_delta_plans_total{result="reused"} %d
outpost_delta_plans_total{result="unavailable"} %d
`, cached, computed, reused, unavailable)
}
