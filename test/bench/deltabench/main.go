// Command deltabench measures what delta sync saves on a real link: realistic images pushed to a
// real Outpost parent and synced by a real Outpost child, with the bytes over the link counted
// (`make bench-delta`, issue 7; the figures to beat are in shared/DELTA.md).
//
// The images. Built once into a cache directory (-cache) and reused by later runs:
//
//   - debian-A: `debootstrap --variant=minbase bookworm` from the machine's Debian mirror,
//     trimmed as Debian's container images are; debian-B: A's next monthly update, made by
//     `apt-get upgrade` from bookworm-updates and bookworm-security in a chroot of a copy of A
//     (debian.go says what that changes; the notes print it). Without debootstrap, both are
//     assembled from packages fetched with `apt-get download` (-debian debs forces it).
//   - outpost-v1, outpost-v2: Outpost itself built from two commits of this repository 20
//     commits apart (-go-commits; `git archive`, CGO_ENABLED=0, -trimpath, -s -w unless
//     -go-unstripped), as /usr/local/bin/outpost with a configuration file and its README;
//     outpost-v1-next: the commit after v1's (-go-next), a small change such as a hotfix.
//   - npm-v1, npm-v2: `npm install --ignore-scripts` of two versions of a package set under /app
//     (-npm-v1, -npm-v2; express 4.18.2 → 4.19.2 and a few other bumps).
//
// Each tree becomes one layer tar written as Docker and BuildKit write them (layers.go), and
// each tar is compressed the way real builders compress (-compressors): compress/gzip at the
// default level (Docker, BuildKit), compress/gzip BestSpeed (crane, ko), klauspost/pgzip
// (podman, buildah). The pushed blobs are exactly those bytes; go-containerregistry assembles the
// OCI manifests and configs around them.
//
// The scenarios, DELTA.md's table:
//
//	first          first image, empty device: nothing → debian-A + outpost-v1
//	base-on-device new image, base on device: debian-A (an image of its own) → debian-A + outpost-v1
//	app-go         application update: debian-A + outpost-v1 → debian-A + outpost-v2
//	app-go-commit  application update: debian-A + outpost-v1 → debian-A + outpost-v1-next
//	app-npm        application update: debian-A + npm-v1 → debian-A + npm-v2
//	base-update    base-image update: debian-A + outpost-v1 → debian-B + outpost-v1
//
// Each scenario runs once per compressor and per column, every time from scratch: a fresh parent
// (`outpost serve`, a root, at the lowest CPU priority so that it does not take the cores of
// the child's rebuilds) with the "before" images pushed; a fresh child (`outpost serve
// --config`) that syncs bench/* through a byte-counting link on 127.0.0.1 (test/faultnet, with
// no bandwidth limit unless -bandwidth-mib), either as a mirror (-child mirror, the default:
// parent.url with the admin's credentials) or as a connected registry (-child connected: defined
// on the parent with `outpost connected-registry create`, started with the connection string
// `get-settings` prints). Once the child holds the before images and the link is quiet, the
// link's counters and the child's peak RSS are reset, the new image is pushed to the parent, a
// pass is asked for on the child's admin socket (as `outpost sync now` does), and the benchmark
// measures until the child serves the new tag with the parent's digest: bytes over the link both
// ways, wall time, the child's and the parent's CPU time, the child's peak RSS (VmHWM). Then the
// link goes down and every image the child should hold is pulled from it and checked blob by
// blob (digest and size), its manifest byte for byte.
//
// The columns. "layer transfer" is the child with `sync.delta: false`: what docker pull, zot
// and distribution's proxy send, every layer the device lacks in full. "Outpost" is the child
// with `sync.delta: true`, the default. A node that does not know the key refuses to start with
// it: the benchmark then runs that child without the key (which is layer transfer) and reports
// the Outpost column as "delta not available". With -delta-key=false it never writes the key:
// one child per scenario with the default configuration, and the layer-transfer column computed
// from the sizes of the blobs the device lacks. Ratios are bytes over the link ÷ the new image's
// size (manifest, config, layers), next to the Azure case study's figures and issue 7's targets.
//
// It prints Markdown (stdout, and -out FILE) for docs/performance.md. Like the other
// benchmarks it exits non-zero only when something breaks (a process, the setup, a child that
// serves wrong bytes), never for a missed target.
//
// Usage (as root, for debootstrap; after `make build`):
//
//	go run ./test/bench/deltabench -outpost bin/outpost          # 3 compressors: about 6 min
//	go run ./test/bench/deltabench -outpost bin/outpost -quick   # compress/gzip, express alone: 2–3 min
//
// The first run also builds the images (debootstrap, two Go builds, npm installs: 2–4 minutes
// more); later runs reuse them from -cache. Every step has a time limit (-sync-limit for each
// sync, -timeout for the whole run), and an interrupt stops every process it started.
package main

import (
	"context"
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/outpost-registry/outpost/test/bench/benchkit"
)

const mib = 1 << 20

// How the child is attached to the parent (-child).
const (
	childMirror    = "mirror"
	childConnected = "connected"
)

type options struct {
	outpost       string
	cache         string
	workDir       string
	keep          bool
	out           string
	quick         bool
	compressors   string
	scenarios     string
	deltaKey      bool
	debian        string
	debianMirror  string
	repo          string
	goCommits     string
	goNext        string
	goUnstripped  bool
	npmV1, npmV2  string
	bandwidthMiB  float64
	child         string
	waitPrepared  bool
	syncLimit     time.Duration
	timeout       time.Duration
	verbose       bool
	compressorSet []compressor
	scenarioSet   []string
}

// The defaults: two commits 20 apart (a2d35bf: "atomicfile.RandomHex …", 5aae110: "Tests:
// client tokens …"), fixed so that results compare across runs.
const defaultGoCommits = "a2d35bf1b8e164574bbbef89bb39b194c38e629d,5aae1108180531fd89ef1d2ee087678dca0ad0ff"

// defaultGoNext is the commit after a2d35bf: "connected-registry show and deactivate share one
// --name command builder", a 60-line refactor of one command-line file.
const defaultGoNext = "016fb0e187f61565dd08b207fde50f3203043a6d"

var (
	npmFullV1  = "express@4.18.2,axios@1.6.0,moment@2.29.4,lodash@4.17.21,ws@8.14.2,yargs@17.7.2,uuid@9.0.1,dayjs@1.11.10"
	npmFullV2  = "express@4.19.2,axios@1.6.8,moment@2.30.1,lodash@4.17.21,ws@8.14.2,yargs@17.7.2,uuid@9.0.1,dayjs@1.11.10"
	npmQuickV1 = "express@4.18.2"
	npmQuickV2 = "express@4.19.2"
)

var allScenarios = []string{"first", "base-on-device", "app-go", "app-go-commit", "app-npm", "base-update"}

// largeScenarios are run only when named: a layer of about 0.95 GiB of tar, built once (2–3
// minutes per compressor), and 3–6 minutes of the parent's CPU per delta. They show the
// child's memory whatever the layer's size.
var largeScenarios = []string{"large-first", "large-update"}

// largeSysroots is how many Debian trees the large layer holds.
const largeSysroots = 8

func main() {
	var o options
	flag.StringVar(&o.outpost, "outpost", "bin/outpost", "the Outpost binary under test (parent and child)")
	flag.StringVar(&o.cache, "cache", filepath.Join(os.TempDir(), "outpost-deltabench-cache"), "directory for the built images, kept across runs")
	flag.StringVar(&o.workDir, "workdir", "", "directory for the nodes' data and logs (default: a new temporary directory, removed at the end)")
	flag.BoolVar(&o.keep, "keep", false, "keep each measurement's data directories (default: removed once measured; logs stay with -workdir)")
	flag.StringVar(&o.out, "out", "", "also write the Markdown report to this file")
	flag.BoolVar(&o.quick, "quick", false, "compress/gzip only and a small npm set (express alone)")
	flag.StringVar(&o.compressors, "compressors", "", "comma-separated: gzip (Docker, BuildKit), gzip-fast (crane, ko), pgzip (podman, buildah); default all, gzip with -quick")
	flag.StringVar(&o.scenarios, "scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios: "+strings.Join(allScenarios, ", ")+"; also, when named, "+strings.Join(largeScenarios, ", "))
	flag.BoolVar(&o.deltaKey, "delta-key", true, "write sync.delta: false / true into the children's configuration (the two columns)")
	flag.StringVar(&o.debian, "debian", "auto", "how to build the Debian trees: auto (debootstrap, else .deb packages), debootstrap, debs")
	flag.StringVar(&o.debianMirror, "debian-mirror", "", "Debian mirror for debootstrap (default: the one in /etc/apt/sources*)")
	flag.StringVar(&o.repo, "repo", ".", "this repository, for the Go program's two releases")
	flag.StringVar(&o.goCommits, "go-commits", defaultGoCommits, "the Go program's two releases: two commits (or revisions) of -repo, comma-separated")
	flag.BoolVar(&o.goUnstripped, "go-unstripped", false, "build the Go program without -s -w, as a plain `go build` leaves it: its DWARF kept in zlib-compressed sections")
	flag.StringVar(&o.goNext, "go-next", defaultGoNext, "the Go program's small update (app-go-commit): a commit (or revision) of -repo, usually the one after the first of -go-commits")
	flag.StringVar(&o.npmV1, "npm-v1", "", "npm package set of the application's first version, name@version comma-separated (default: 8 packages with express@4.18.2; express@4.18.2 alone with -quick)")
	flag.StringVar(&o.npmV2, "npm-v2", "", "npm package set of the second version (default: express@4.19.2, axios and moment bumped; express@4.19.2 alone with -quick)")
	flag.StringVar(&o.child, "child", childMirror, "how the child is attached: mirror (parent.url with the admin's credentials) or connected (a connected registry defined on the parent, with its connection string)")
	flag.BoolVar(&o.waitPrepared, "wait-prepared", false, "with -child connected: ask the child for its pass once the parent has prepared the new image's deltas from the child's inventory (outpost_delta_prepare_queue_images 0), as a scheduled pass after the push would find them")
	flag.Float64Var(&o.bandwidthMiB, "bandwidth-mib", 0, "cap the link at this many MiB/s each way (0: loopback speed)")
	flag.DurationVar(&o.syncLimit, "sync-limit", 5*time.Minute, "time limit of each sync (the before state, and the measured one)")
	flag.DurationVar(&o.timeout, "timeout", 45*time.Minute, "time limit of the whole run, image building included")
	flag.BoolVar(&o.verbose, "v", false, "log more")
	flag.Parse()
	if flag.NArg() != 0 || o.syncLimit <= 0 || o.bandwidthMiB < 0 {
		flag.Usage()
		os.Exit(2)
	}
	if o.compressors == "" {
		o.compressors = "gzip,gzip-fast,pgzip"
		if o.quick {
			o.compressors = "gzip"
		}
	}
	for _, k := range strings.Split(o.compressors, ",") {
		c, ok := compressorByKey(strings.TrimSpace(k))
		if !ok {
			fmt.Fprintf(os.Stderr, "deltabench: -compressors: unknown %q (gzip, gzip-fast, pgzip)\n", k)
			os.Exit(2)
		}
		o.compressorSet = append(o.compressorSet, c)
	}
	for _, s := range strings.Split(o.scenarios, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(allScenarios, s) && !slices.Contains(largeScenarios, s) {
			fmt.Fprintf(os.Stderr, "deltabench: -scenarios: unknown %q (%s)\n", s, strings.Join(append(allScenarios, largeScenarios...), ", "))
			os.Exit(2)
		}
		o.scenarioSet = append(o.scenarioSet, s)
	}
	if o.npmV1 == "" {
		o.npmV1 = map[bool]string{false: npmFullV1, true: npmQuickV1}[o.quick]
	}
	if o.npmV2 == "" {
		o.npmV2 = map[bool]string{false: npmFullV2, true: npmQuickV2}[o.quick]
	}
	if o.child != childMirror && o.child != childConnected {
		fmt.Fprintln(os.Stderr, "deltabench: -child: mirror or connected")
		os.Exit(2)
	}
	if o.waitPrepared && o.child != childConnected {
		fmt.Fprintln(os.Stderr, "deltabench: -wait-prepared needs -child connected: a parent prepares deltas from a connected registry's inventory")
		os.Exit(2)
	}
	if o.debian != "auto" && o.debian != "debootstrap" && o.debian != "debs" {
		fmt.Fprintln(os.Stderr, "deltabench: -debian: auto, debootstrap or debs")
		os.Exit(2)
	}
	benchkit.Main("deltabench", o.timeout, func(ctx context.Context) error { return run(ctx, o, os.Stdout, os.Stderr) })
}

// sources are the built trees and their layers.
type sources struct {
	debian     *debianBuild
	goV1, goV2 *goApp
	goV1Next   *goApp
	npmV1      *npmApp
	npmV2      *npmApp
	layers     map[string]*tarLayer // debian-A, debian-B, outpost-v1, outpost-v2, outpost-v1-next, npm-v1, npm-v2
	createdBy  map[string]string
	buildTime  time.Duration
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "deltabench: "+format+"\n", args...) }
	runStart := time.Now()

	bin, err := filepath.Abs(o.outpost)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("the Outpost binary: %w (make build)", err)
	}
	o.outpost = bin
	if o.cache, err = filepath.Abs(o.cache); err != nil {
		return err
	}
	if err := os.MkdirAll(o.cache, 0o755); err != nil {
		return err
	}
	work, cleanup, err := benchkit.WorkDir(o.workDir, "outpost-deltabench-")
	if err != nil {
		return err
	}
	defer cleanup()

	src, err := buildSources(ctx, o, logf)
	if err != nil {
		return err
	}

	rep := &report{o: o, src: src, binary: binaryInfo(bin)}
	deltaAvailable := true // until a child refuses sync.delta
	for _, comp := range o.compressorSet {
		imgs, err := buildImages(ctx, o, src, comp, logf)
		if err != nil {
			return err
		}
		rep.images = append(rep.images, imgs)
		for _, sc := range scenariosFor(o, imgs) {
			row := &row{sc: sc, comp: comp}
			rep.rows = append(rep.rows, row)
			modes := []string{modeLayer, modeDelta}
			if !o.deltaKey {
				modes = []string{modeDefault}
			}
			for _, mode := range modes {
				if mode == modeDelta && !deltaAvailable {
					row.deltaNA = true
					continue
				}
				logf("%s, %s, %s", sc.label, comp.key, modeLabel(mode))
				res, err := runCell(ctx, o, work, sc, comp, mode, deltaAvailable, logf)
				if err != nil {
					return fmt.Errorf("%s, %s, %s: %w", sc.label, comp.key, modeLabel(mode), err)
				}
				if res.keyDropped {
					deltaAvailable = false
					row.deltaNA = true
				}
				row.results = append(row.results, res)
			}
		}
	}
	rep.total = time.Since(runStart)

	var md strings.Builder
	rep.write(&md)
	fmt.Fprint(stdout, md.String())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md.String()), 0o644); err != nil {
			return err
		}
		logf("report written to %s", o.out)
	}
	var errs []error
	for _, r := range rep.rows {
		for _, res := range r.results {
			if res.verifyErr != nil {
				errs = append(errs, fmt.Errorf("%s, %s, %s: the child serves wrong bytes: %w", r.sc.label, r.comp.key, modeLabel(res.mode), res.verifyErr))
			}
		}
	}
	return errors.Join(errs...)
}

func buildSources(ctx context.Context, o options, logf func(string, ...any)) (*sources, error) {
	t := time.Now()
	src := &sources{layers: map[string]*tarLayer{}, createdBy: map[string]string{}}
	need := func(names ...string) bool {
		for _, n := range names {
			if slices.Contains(o.scenarioSet, n) {
				return true
			}
		}
		return false
	}
	var err error
	if src.debian, err = buildDebian(ctx, o.cache, o, logf); err != nil {
		return nil, fmt.Errorf("building the Debian trees: %w", err)
	}
	repo := o.repo
	if out, err := (command{limit: time.Minute}).output(ctx, "git", "-C", o.repo, "rev-parse", "--show-toplevel"); err == nil {
		repo = strings.TrimSpace(string(out))
	}
	commits := strings.Split(o.goCommits, ",")
	if len(commits) != 2 {
		return nil, errors.New("-go-commits: want two commits, comma-separated")
	}
	if need("first", "base-on-device", "app-go", "app-go-commit", "base-update", "large-first", "large-update") {
		if src.goV1, err = buildGoApp(ctx, o.cache, repo, strings.TrimSpace(commits[0]), o.goUnstripped, logf); err != nil {
			return nil, fmt.Errorf("building the Go program's first release: %w", err)
		}
	}
	if need("app-go", "large-update") {
		if src.goV2, err = buildGoApp(ctx, o.cache, repo, strings.TrimSpace(commits[1]), o.goUnstripped, logf); err != nil {
			return nil, fmt.Errorf("building the Go program's second release: %w", err)
		}
	}
	if need("app-go-commit") {
		if src.goV1Next, err = buildGoApp(ctx, o.cache, repo, strings.TrimSpace(o.goNext), o.goUnstripped, logf); err != nil {
			return nil, fmt.Errorf("building the Go program's small update: %w", err)
		}
	}
	if need("app-npm") {
		if src.npmV1, err = buildNpmApp(ctx, o.cache, "1.0.0", splitList(o.npmV1), logf); err != nil {
			return nil, fmt.Errorf("npm tree v1: %w", err)
		}
		if src.npmV2, err = buildNpmApp(ctx, o.cache, "1.1.0", splitList(o.npmV2), logf); err != nil {
			return nil, fmt.Errorf("npm tree v2: %w", err)
		}
	}

	type spec struct {
		name, stamp, createdBy string
		trees                  []tree
	}
	d := src.debian
	specs := []spec{{"debian-A", d.stamp(), "debootstrap --variant=minbase bookworm (" + d.Method + ")", []tree{{"", d.A, true}}}}
	if need("base-update", "large-update") {
		specs = append(specs, spec{"debian-B", d.stamp(), "debian-A + apt-get upgrade (bookworm-updates, bookworm-security)", []tree{{"", d.B, true}}})
	}
	goStamp := func(g *goApp) string { return g.Commit + "@" + g.Built.Format(time.RFC3339Nano) }
	for _, g := range []struct {
		name string
		app  *goApp
	}{{"outpost-v1", src.goV1}, {"outpost-v2", src.goV2}, {"outpost-v1-next", src.goV1Next}} {
		if g.app != nil {
			specs = append(specs, spec{g.name, goStamp(g.app), "COPY outpost /usr/local/bin/ (commit " + g.app.Commit[:7] + ")", []tree{{"", g.app.Dir, false}}})
		}
	}
	for _, n := range []struct {
		name string
		app  *npmApp
	}{{"npm-v1", src.npmV1}, {"npm-v2", src.npmV2}} {
		if n.app != nil {
			specs = append(specs, spec{n.name, strings.Join(n.app.Deps, ",") + "@" + n.app.Built.Format(time.RFC3339Nano),
				"COPY app /app (npm install " + strings.Join(n.app.Deps, " ") + ")", []tree{{"", n.app.Dir, false}}})
		}
	}
	// The large layer: eight Debian root filesystems as the sysroots of an SDK image, and the
	// Go program, one layer of about 0.95 GiB of tar; its update brings one sysroot's security
	// update and the program 20 commits later.
	large := func(first string, g *goApp) []tree {
		var trees []tree
		for i := range largeSysroots {
			root := d.A
			if i == 0 {
				root = first
			}
			trees = append(trees, tree{fmt.Sprintf("opt/sdk/sysroots/target-%d", i), root, true})
		}
		return append(trees, tree{"", g.Dir, false})
	}
	if need("large-first", "large-update") {
		specs = append(specs, spec{"large-A", d.stamp() + "+" + goStamp(src.goV1),
			fmt.Sprintf("COPY sdk /opt/sdk (%d sysroots) and outpost (commit %s)", largeSysroots, src.goV1.Commit[:7]), large(d.A, src.goV1)})
	}
	if need("large-update") {
		specs = append(specs, spec{"large-B", d.stamp() + "+" + goStamp(src.goV2),
			fmt.Sprintf("COPY sdk /opt/sdk (%d sysroots, the first updated) and outpost (commit %s)", largeSysroots, src.goV2.Commit[:7]), large(d.B, src.goV2)})
	}
	for _, s := range specs {
		l, err := buildTarLayer(o.cache, s.name, s.stamp, s.trees)
		if err != nil {
			return nil, err
		}
		src.layers[s.name] = l
		src.createdBy[s.name] = s.createdBy
		if o.verbose {
			logf("layer %s: %d entries, %s tar", s.name, l.Entries, fmtBytes(l.Size))
		}
	}
	src.buildTime = time.Since(t)
	return src, nil
}

// images are one compressor's images, by name ("debian-A", "debian-A + outpost-v1", …).
type images struct {
	comp  compressor
	blobs map[string]*blob // by layer name
	byKey map[string]*image
	time  time.Duration
}

func buildImages(ctx context.Context, o options, src *sources, comp compressor, logf func(string, ...any)) (*images, error) {
	t := time.Now()
	out := &images{comp: comp, blobs: map[string]*blob{}, byKey: map[string]*image{}}
	for _, name := range sortedKeys(src.layers) {
		b, err := compressLayer(ctx, o.cache, src.layers[name], comp)
		if err != nil {
			return nil, err
		}
		out.blobs[name] = b
	}
	combos := [][]string{{"debian-A"}, {"debian-A", "outpost-v1"}, {"debian-A", "outpost-v2"}, {"debian-A", "outpost-v1-next"}, {"debian-A", "npm-v1"}, {"debian-A", "npm-v2"}, {"debian-B", "outpost-v1"}, {"large-A"}, {"large-B"}}
	for _, c := range combos {
		var layers []*blob
		var by []string
		for _, n := range c {
			if out.blobs[n] == nil {
				layers = nil
				break
			}
			layers = append(layers, out.blobs[n])
			by = append(by, src.createdBy[n])
		}
		if layers == nil {
			continue
		}
		cmd := []string{"bash"}
		switch {
		case strings.HasPrefix(c[len(c)-1], "outpost"):
			cmd = []string{"/usr/local/bin/outpost", "serve", "--config", "/etc/outpost/config.yaml"}
		case strings.HasPrefix(c[len(c)-1], "npm"):
			cmd = []string{"node", "/app/server.js"}
		}
		img, err := makeImage(strings.Join(c, " + "), layers, by, cmd)
		if err != nil {
			return nil, err
		}
		out.byKey[img.Name] = img
	}
	out.time = time.Since(t)
	logf("%s: layers compressed and images assembled in %s", comp.key, fmtDur(out.time))
	return out, nil
}

// placed is an image at a repository and tag.
type placed struct {
	repo, tag string
	img       *image
}

func (p placed) ref() string { return p.repo + ":" + p.tag }

// scenario is one row of DELTA.md's table, with one compressor's images.
type scenario struct {
	key, label string
	before     []placed
	after      placed
	// The Azure case study's bytes ÷ image size, in percent, and issue 7's target.
	caseLayer, caseDelta float64
	target               string
	met                  func(bytes int64, ratio float64) bool
}

func scenariosFor(o options, imgs *images) []*scenario {
	im := func(name string) *image { return imgs.byKey[name] }
	within := func(pct float64) func(int64, float64) bool {
		return func(_ int64, r float64) bool { return r*100 <= pct }
	}
	appUpdate := func(_ int64, r float64) bool { return r*100 <= 0.01 }
	appUpdateBytes := func(b int64, r float64) bool { return appUpdate(b, r) || b <= 32<<10 }
	var out []*scenario
	for _, key := range o.scenarioSet {
		var s *scenario
		switch key {
		case "first":
			s = &scenario{label: "first image, empty device",
				after:     placed{"bench/app", "v1", im("debian-A + outpost-v1")},
				caseLayer: 100, caseDelta: 100, target: "≤ 75%", met: within(75)}
		case "base-on-device":
			s = &scenario{label: "new image, base on device",
				before:    []placed{{"bench/debian", "bookworm", im("debian-A")}},
				after:     placed{"bench/app", "v1", im("debian-A + outpost-v1")},
				caseLayer: 10.5, caseDelta: 3.2, target: "≤ 3%", met: within(3)}
		case "app-go":
			s = &scenario{label: "application update (Go program, 20 commits)",
				before:    []placed{{"bench/app", "v1", im("debian-A + outpost-v1")}},
				after:     placed{"bench/app", "v2", im("debian-A + outpost-v2")},
				caseLayer: 22.4, caseDelta: 0.01, target: "≤ 0.01% or ≤ 32 KiB", met: appUpdateBytes}
		case "app-go-commit":
			s = &scenario{label: "application update (Go program, one commit)",
				before:    []placed{{"bench/app", "v1", im("debian-A + outpost-v1")}},
				after:     placed{"bench/app", "v1.0.1", im("debian-A + outpost-v1-next")},
				caseLayer: 22.4, caseDelta: 0.01, target: "≤ 0.01% or ≤ 32 KiB", met: appUpdateBytes}
		case "app-npm":
			s = &scenario{label: "application update (npm tree)",
				before:    []placed{{"bench/app", "v1", im("debian-A + npm-v1")}},
				after:     placed{"bench/app", "v2", im("debian-A + npm-v2")},
				caseLayer: 22.4, caseDelta: 0.01, target: "≤ 0.01% or ≤ 32 KiB", met: appUpdateBytes}
		case "large-first":
			s = &scenario{label: "first image, one large layer (0.95 GiB tar)",
				after:     placed{"bench/sdk", "v1", im("large-A")},
				caseLayer: 100, caseDelta: 100, target: "≤ 75%", met: within(75)}
		case "large-update":
			s = &scenario{label: "large layer update (a sysroot's security update, the Go program 20 commits)",
				before:    []placed{{"bench/sdk", "v1", im("large-A")}},
				after:     placed{"bench/sdk", "v2", im("large-B")},
				caseLayer: 100, caseDelta: 16.1, target: "≤ 5%", met: within(5)}
		case "base-update":
			s = &scenario{label: "base-image update",
				before:    []placed{{"bench/app", "v1", im("debian-A + outpost-v1")}},
				after:     placed{"bench/app", "v2", im("debian-B + outpost-v1")},
				caseLayer: 100, caseDelta: 16.1, target: "≤ 5%", met: within(5)}
		}
		s.key = key
		out = append(out, s)
	}
	return out
}

// layerTransferBytes is what layer transfer must send for the scenario: the new image's
// manifest and every blob of it the device does not hold.
func (s *scenario) layerTransferBytes() int64 {
	have := map[string]bool{}
	for _, b := range s.before {
		for d := range b.img.blobs() {
			have[d] = true
		}
	}
	n := int64(len(s.after.img.Manifest))
	for d, size := range s.after.img.blobs() {
		if !have[d] {
			n += size
		}
	}
	return n
}

// binaryInfo names the binary under test: its module version or VCS revision, and Go.
func binaryInfo(path string) string {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return path
	}
	rev := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			rev = s.Value[:12]
		}
		if s.Key == "vcs.modified" && s.Value == "true" {
			rev += " (modified)"
		}
	}
	return fmt.Sprintf("%s (%s, %s)", path, rev, bi.GoVersion)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func joinNonEmpty(parts []string, sep string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}
