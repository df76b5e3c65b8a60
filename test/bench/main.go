// Command bench compares Outpost's registry throughput with a plain distribution registry of the
// same module version (`make bench`).
//
// It starts both as real processes on free loopback ports with temporary data directories,
// pushes the same image to both, and then measures, alternating between the two servers for
// several rounds so that the noise of a shared machine falls on both alike:
//
//   - pull MiB/s of the whole image (manifest and every blob) with 1 puller and with N pullers;
//   - manifest GETs per second, and blob HEADs per second, over keep-alive connections.
//
// It prints the median of each row for both servers and their ratio (Outpost/distribution). It
// exits non-zero only when something fails (a server, a request, the time limit), never on a
// low ratio: this is a measurement.
//
// Usage (after `make build` and building bin/distribution-registry, which `make bench` does):
//
//	go run ./test/bench -outpost bin/outpost -distribution bin/distribution-registry
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outpost-registry/outpost/test/bench/benchkit"
)

type options struct {
	outpost, distribution string
	layers, layerMiB      int
	rounds                int
	pullers, conns        int
	pullTime, reqTime     time.Duration
	timeout               time.Duration
	workDir               string
	distributionDebug     string
	rows                  string
	verbose               bool
}

func main() {
	var o options
	flag.StringVar(&o.outpost, "outpost", "bin/outpost", "the Outpost binary")
	flag.StringVar(&o.distribution, "distribution", "bin/distribution-registry", "the distribution registry binary (its cmd/registry)")
	flag.IntVar(&o.layers, "layers", 8, "layers in the image")
	flag.IntVar(&o.layerMiB, "layer-mib", 32, "MiB per layer")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds; each measures every row on both servers, in alternating order")
	flag.IntVar(&o.pullers, "pullers", 8, "concurrent pullers for the parallel pull row")
	flag.IntVar(&o.conns, "conns", 16, "concurrent keep-alive connections for the request-rate rows")
	flag.DurationVar(&o.pullTime, "pull-time", 2*time.Second, "minimum time of one pull measurement (whole pulls are repeated until it has passed)")
	flag.DurationVar(&o.reqTime, "duration", 5*time.Second, "time of one request-rate measurement")
	flag.DurationVar(&o.timeout, "timeout", 4*time.Minute, "time limit of the whole benchmark")
	flag.StringVar(&o.workDir, "workdir", "", "directory for data and logs (default: a new temporary directory, removed at the end)")
	flag.StringVar(&o.distributionDebug, "distribution-debug", "", "if set, the loopback address of distribution's debug server (pprof)")
	flag.StringVar(&o.rows, "rows", "pull1,pullN,manifest,head", "rows to measure, comma-separated: pull1 (1 puller), pullN (-pullers), manifest (GET), head (blob HEAD)")
	flag.BoolVar(&o.verbose, "v", false, "print every measurement")
	flag.Parse()
	if flag.NArg() != 0 || o.layers < 1 || o.layerMiB < 1 || o.rounds < 1 || o.pullers < 1 || o.conns < 1 {
		flag.Usage()
		os.Exit(2)
	}

	benchkit.Main("bench", o.timeout, func(ctx context.Context) error { return run(ctx, o, os.Stdout, os.Stderr) })
}

// row is one measured quantity.
type row struct {
	key     string // for -rows
	name    string
	measure func(context.Context, *server) (result, error)
	cpuName string       // the row in the CPU table
	cpuUnit float64      // CPU seconds per unit of work are multiplied by this
	values  [2][]float64 // per server, per round
	cpu     [2][]float64 // server CPU per unit of work, per server, per round
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", args...) }

	dv, ogo, dgo, err := benchkit.SameDistribution(o.outpost, o.distribution)
	if err != nil {
		return err
	}
	dir, cleanup, err := benchkit.WorkDir(o.workDir, "outpost-bench-")
	if err != nil {
		return err
	}
	defer cleanup()
	for _, sub := range []string{"outpost", "distribution"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}

	var img *benchkit.Image
	rows := []*row{
		{key: "pull1", name: "pull, 1 puller (MiB/s)", cpuName: "pull, 1 puller (CPU ms/GiB)", cpuUnit: 1e3,
			measure: func(ctx context.Context, s *server) (result, error) {
				return pullRate(ctx, s, 1, o.pullTime)
			}},
		{key: "pullN", name: fmt.Sprintf("pull, %d pullers (MiB/s)", o.pullers), cpuName: fmt.Sprintf("pull, %d pullers (CPU ms/GiB)", o.pullers), cpuUnit: 1e3,
			measure: func(ctx context.Context, s *server) (result, error) {
				return pullRate(ctx, s, o.pullers, o.pullTime)
			}},
		{key: "manifest", name: fmt.Sprintf("manifest GET, %d conns (req/s)", o.conns), cpuName: "manifest GET (CPU µs/req)", cpuUnit: 1e6,
			measure: func(ctx context.Context, s *server) (result, error) {
				return manifestGetRate(ctx, s, img, o.conns, o.reqTime)
			}},
		{key: "head", name: fmt.Sprintf("blob HEAD, %d conns (req/s)", o.conns), cpuName: "blob HEAD (CPU µs/req)", cpuUnit: 1e6,
			measure: func(ctx context.Context, s *server) (result, error) {
				return blobHeadRate(ctx, s, img, o.conns, o.reqTime)
			}},
	}

	var selected []*row
	for _, key := range strings.Split(o.rows, ",") {
		i := slices.IndexFunc(rows, func(rw *row) bool { return rw.key == strings.TrimSpace(key) })
		if i < 0 {
			return fmt.Errorf("-rows: unknown row %q", key)
		}
		selected = append(selected, rows[i])
	}
	rows = selected

	t := time.Now()
	img, err = benchkit.NewImage("outpost", o.layers, int64(o.layerMiB)*mib)
	if err != nil {
		return err
	}
	logf("generated a %d MiB image (%d layers of %d MiB) in %s", img.Size/mib, o.layers, o.layerMiB, time.Since(t).Round(time.Millisecond))

	outpost, err := startOutpost(ctx, o.outpost, filepath.Join(dir, "outpost"))
	if err != nil {
		return err
	}
	defer outpost.stop()
	dist, err := startDistribution(ctx, o.distribution, filepath.Join(dir, "distribution"), o.distributionDebug)
	if err != nil {
		return err
	}
	defer dist.stop()
	servers := [2]*server{outpost, dist}
	logf("Outpost on %s, distribution %s on %s, data under %s", outpost.Base, dv, dist.Base, dir)

	for _, s := range servers {
		t := time.Now()
		if err := s.push(ctx, img); err != nil {
			return fmt.Errorf("%w%s", err, s.LogTail())
		}
		logf("pushed to %s in %s", s.Name, time.Since(t).Round(time.Millisecond))
	}

	// Warm up both: caches, connections, the page cache.
	for _, s := range servers {
		if _, err := pullRate(ctx, s, 1, 0); err != nil {
			return fmt.Errorf("%s: warm-up pull: %w%s", s.Name, err, s.LogTail())
		}
		if _, err := manifestGetRate(ctx, s, img, o.conns, time.Second); err != nil {
			return fmt.Errorf("%s: warm-up: %w%s", s.Name, err, s.LogTail())
		}
	}

	loadBefore := loadAverage()
	for r := range o.rounds {
		t := time.Now()
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, rw := range rows {
			for _, i := range order {
				s := servers[i]
				cpu0, haveCPU, err := benchkit.ProcessCPU(s.Cmd.Process.Pid)
				var res result
				if err == nil {
					res, err = rw.measure(ctx, s)
				}
				cpu1 := cpu0
				if err == nil {
					cpu1, _, err = benchkit.ProcessCPU(s.Cmd.Process.Pid)
				}
				if err == nil {
					err = s.Alive()
				}
				if err != nil {
					return fmt.Errorf("round %d, %s, %s: %w%s", r+1, rw.name, s.Name, err, s.LogTail())
				}
				rw.values[i] = append(rw.values[i], res.rate)
				cpu := (cpu1 - cpu0).Seconds() * rw.cpuUnit / res.work
				if haveCPU {
					rw.cpu[i] = append(rw.cpu[i], cpu)
				}
				if o.verbose {
					logf("round %d  %-32s %-12s %10.1f   %s %.1f", r+1, rw.name, s.Name, res.rate, rw.cpuName, cpu)
				}
			}
		}
		logf("round %d/%d done in %s", r+1, o.rounds, time.Since(t).Round(100*time.Millisecond))
	}
	for _, s := range servers {
		if err := s.Alive(); err != nil {
			return err
		}
	}

	fmt.Fprintf(stdout, "\nOutpost (%s) vs distribution %s (%s), image %d MiB (%d × %d MiB layers), median of %d rounds",
		ogo, dv, dgo, img.Size/mib, o.layers, o.layerMiB, o.rounds)
	if la := loadAverage(); la != "" {
		fmt.Fprintf(stdout, ", load average %s before, %s after (%d CPUs)", loadBefore, la, runtime.NumCPU())
	}
	fmt.Fprint(stdout, "\n\n")
	printTable(stdout, "", rows, func(rw *row) [2][]float64 { return rw.values })
	if len(rows[0].cpu[0]) > 0 {
		printTable(stdout, "Server CPU time per unit of work (user+system, all threads; lower is better, so a ratio below 1 favours Outpost):",
			rows, func(rw *row) [2][]float64 { return rw.cpu })
	}
	return nil
}

// printTable prints, for each row, the median of either server, their ratio
// (Outpost/distribution) and the range of the per-round ratios.
func printTable(w io.Writer, title string, rows []*row, values func(*row) [2][]float64) {
	name := func(rw *row) string {
		if title == "" {
			return rw.name
		}
		return rw.cpuName
	}
	width := len("row")
	for _, rw := range rows {
		width = max(width, utf8.RuneCountInString(name(rw))) // fmt pads strings in runes
	}
	if title != "" {
		fmt.Fprintf(w, "\n%s\n\n", title)
	}
	fmt.Fprintf(w, "%-*s  %10s  %12s  %6s  %s\n", width, "row", "Outpost", "distribution", "ratio", "per-round ratios")
	for _, rw := range rows {
		v := values(rw)
		mo, md := median(v[0]), median(v[1])
		var ratios []float64
		for i := range v[0] {
			ratios = append(ratios, v[0][i]/v[1][i])
		}
		fmt.Fprintf(w, "%-*s  %10.1f  %12.1f  %6.2f  %.2f–%.2f\n", width, name(rw), mo, md, mo/md, slices.Min(ratios), slices.Max(ratios))
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
