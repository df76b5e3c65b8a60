package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/outpost-registry/outpost/pkg/acrapi"
	"github.com/outpost-registry/outpost/test/bench/benchkit"
	"github.com/outpost-registry/outpost/test/faultnet"
)

// The columns: a child with sync.delta false, with sync.delta true, or (with -delta-key=false)
// with no sync.delta key at all.
const (
	modeLayer   = "layer"
	modeDelta   = "delta"
	modeDefault = "default"
)

func modeLabel(mode string) string {
	switch mode {
	case modeLayer:
		return "layer transfer (sync.delta: false)"
	case modeDelta:
		return "Outpost (sync.delta: true)"
	}
	return "Outpost (default configuration)"
}

// result is one measurement: one scenario, one compressor, one column.
type result struct {
	mode       string
	keyDropped bool // the child refused sync.delta; it ran without the key
	bytesUp    int64
	bytesDown  int64
	wall       time.Duration
	pushTime   time.Duration
	cpu        time.Duration // the child's
	parentCPU  time.Duration
	peakRSS    int64
	rssNote    string
	// parentPeakRSS is the parent's peak while it received the push and computed the deltas.
	parentPeakRSS int64
	verified      int
	verifyErr     error
	pass          string // the child's counters of the measured pass
	notes         []string
	rebuilt       rebuildTotals // the child's own rebuilds, from its log
}

// rebuildTotals adds up the child's rebuilds of layers from deltas: base decompression, apply,
// recompression and verification, without the transfer or the parent's work.
type rebuildTotals struct {
	layers          int
	time            time.Duration
	layerBytes, tar int64
}

func (r *result) bytes() int64 { return r.bytesUp + r.bytesDown }

// runCell measures one scenario for one compressor and one column, from scratch.
// keyKnown false means an earlier child refused sync.delta: this one starts without it.
func runCell(ctx context.Context, o options, work string, sc *scenario, comp compressor, mode string, keyKnown bool, logf func(string, ...any)) (*result, error) {
	res := &result{mode: mode}
	dir := filepath.Join(work, fmt.Sprintf("%s-%s-%s", sc.key, comp.key, mode))
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if !o.keep {
		// The logs stay (with -workdir); the data goes, a few hundred MiB per measurement.
		defer os.RemoveAll(filepath.Join(dir, "parent-data"))
		defer os.RemoveAll(filepath.Join(dir, "child-data"))
	}
	lc := localClient(2 * time.Minute)
	defer lc.CloseIdleConnections()

	// The parent, with the images the device held before.
	paddr, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	// The parent runs at the lowest CPU priority. Parent and child share this machine's
	// cores, which they would not in a fleet: when both are busy (the parent computing one
	// layer's delta while the child rebuilds another), the child's rebuild, whose speed is
	// measured, goes first, and the parent takes what is left.
	pcmd := exec.Command("nice", "-n", "19", o.outpost, "serve", "--addr", paddr, "--data", filepath.Join(dir, "parent-data"), "--log-level", "warn")
	pcmd.Env = benchkit.OutpostEnv()
	parent, err := benchkit.Start(ctx, "Outpost parent", pcmd, paddr, filepath.Join(dir, "parent.log"))
	if err != nil {
		return nil, err
	}
	defer parent.Stop()
	for _, b := range sc.before {
		if err := push(ctx, lc, parent.Base, b.repo, b.tag, b.img); err != nil {
			return nil, fmt.Errorf("pushing %s to the parent: %w%s", b.ref(), err, parent.LogTail())
		}
	}

	// The link, counting every byte between the child and the parent.
	var opts []faultnet.Option
	if o.bandwidthMiB > 0 {
		opts = append(opts, faultnet.WithBandwidth(faultnet.Both, int64(o.bandwidthMiB*mib)))
	}
	link, err := faultnet.NewProxy(parent.Addr, opts...)
	if err != nil {
		return nil, err
	}
	defer link.Close()
	parentSection := ""
	childCreds := benchkit.Admin
	if o.child == childConnected {
		cs, err := defineConnected(ctx, o.outpost, parent.Base, link.Addr(), filepath.Join(dir, "cli.log"))
		if err != nil {
			return nil, fmt.Errorf("defining the connected registry on the parent: %w%s", err, parent.LogTail())
		}
		parentSection = fmt.Sprintf("connectionString: %q\n", cs)
		// A connected registry accepts its own sync token, not the admin's credentials.
		parsed, err := acrapi.ParseConnectionString(cs)
		if err != nil {
			return nil, err
		}
		childCreds = benchkit.Credentials{User: parsed.SyncTokenName, Password: parsed.SyncTokenPassword}
	} else {
		parentSection = fmt.Sprintf(`parent:
  url: %q
  username: admin
  password: %q
sync:
  repositories: ["bench/*"]
  schedule: "0 0 1 1 *"
`, link.URL(), benchkit.AdminPassword)
	}

	// The child.
	caddr, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	cdata := filepath.Join(dir, "child-data")
	if sock := filepath.Join(cdata, "outpost", "admin.sock"); len(sock) > 100 {
		return nil, fmt.Errorf("the child's admin socket %s would be longer than a Unix socket path may be: use a shorter -workdir", sock)
	}
	cfgPath := filepath.Join(dir, "child.yaml")
	logPath := filepath.Join(dir, "child.log")
	startChild := func(withKey bool) (*benchkit.Process, error) {
		if err := os.RemoveAll(cdata); err != nil {
			return nil, err
		}
		delta := ""
		if withKey && mode != modeDefault {
			delta = fmt.Sprintf("  delta: %t\n", mode == modeDelta)
			if o.child == childConnected {
				delta = "sync:\n" + delta
			}
		}
		if err := os.WriteFile(cfgPath, childConfig(caddr, cdata, parentSection+delta), 0o600); err != nil {
			return nil, err
		}
		cmd := exec.Command(o.outpost, "serve", "--config", cfgPath)
		cmd.Env = benchkit.OutpostEnv()
		return benchkit.StartAs(ctx, "Outpost child", cmd, caddr, logPath, childCreds)
	}
	child, err := startChild(keyKnown)
	if err != nil && keyKnown && mode != modeDefault && unknownDeltaKey(err) {
		logf("  the child does not know sync.delta: running it without the key (layer transfer); the Outpost column is \"delta not available\"")
		keyKnown = false
		child, err = startChild(false)
	}
	res.keyDropped = !keyKnown && mode != modeDefault
	if err != nil {
		return nil, err
	}
	defer child.Stop()
	cc := child.Client(2 * time.Minute)
	defer cc.CloseIdleConnections()
	admin := newAdminClient(cdata)
	defer admin.c.CloseIdleConnections()

	// The before state: the child holds every before image and its pass is over.
	t := time.Now()
	if err := waitSynced(ctx, admin, child, sc.before, o.syncLimit); err != nil {
		return nil, fmt.Errorf("the before state: %w%s", err, child.LogTail())
	}
	waitQuiet(ctx, link)
	before := link.Stats()
	if o.verbose {
		logf("  before state in %s: %s over the link", fmtDur(time.Since(t)), fmtBytes(before.BytesDown+before.BytesUp))
	}
	pid := child.Cmd.Process.Pid
	if err := resetPeakRSS(pid); err != nil {
		res.rssNote = "peak since the child started (" + err.Error() + ")"
	}
	cpu0, _, _ := benchkit.ProcessCPU(pid)
	ppid := parent.Cmd.Process.Pid
	pcpu0, _, _ := benchkit.ProcessCPU(ppid)
	parentRSSReset := resetPeakRSS(ppid) == nil
	logStart := fileSize(logPath)

	// The new image: pushed to the parent, then a pass on the child.
	t = time.Now()
	if err := push(ctx, lc, parent.Base, sc.after.repo, sc.after.tag, sc.after.img); err != nil {
		return nil, fmt.Errorf("pushing %s to the parent: %w%s", sc.after.ref(), err, parent.LogTail())
	}
	res.pushTime = time.Since(t)
	if o.waitPrepared && mode != modeLayer {
		t = time.Now()
		if err := waitPrepared(ctx, lc, parent.Base, o.syncLimit); err != nil {
			return nil, fmt.Errorf("the parent preparing the deltas: %w%s", err, parent.LogTail())
		}
		res.notes = append(res.notes, fmt.Sprintf("the parent prepared the deltas in %s after the push, before the pass was asked for", fmtDur(time.Since(t))))
	}
	t0 := time.Now()
	if err := admin.syncNow(ctx); err != nil {
		return nil, fmt.Errorf("asking the child for a pass: %w", err)
	}
	retries, lastErr := 0, error(nil)
	deadline := t0.Add(o.syncLimit)
	lastTrigger := t0
	for {
		if err := child.Alive(); err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d, err := headTag(ctx, cc, child.Base, sc.after.repo, sc.after.tag)
		if err == nil && d == sc.after.img.ManifestDigest {
			break
		}
		if err == nil {
			err = fmt.Errorf("the child serves %s, the parent %s", d, sc.after.img.ManifestDigest)
		}
		lastErr = err
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("the child did not serve %s within %s: %v%s", sc.after.ref(), o.syncLimit, lastErr, child.LogTail())
		}
		// A pass that ended without the tag (an error it will retry on its own schedule):
		// ask again, at most every 2 s.
		if time.Since(lastTrigger) > 2*time.Second {
			if st, err := admin.status(ctx); err == nil && st.passFinished() && passStartedAfter(st, t0) {
				retries++
				lastTrigger = time.Now()
				_ = admin.syncNow(ctx)
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	res.wall = time.Since(t0)
	after := link.Stats()
	res.bytesUp, res.bytesDown = after.BytesUp-before.BytesUp, after.BytesDown-before.BytesDown
	if rss, err := peakRSS(pid); err == nil {
		res.peakRSS = rss
	}
	if rss, err := peakRSS(ppid); err == nil && parentRSSReset {
		res.parentPeakRSS = rss
	}
	if cpu1, _, err := benchkit.ProcessCPU(pid); err == nil {
		res.cpu = cpu1 - cpu0
	}
	if pcpu1, _, err := benchkit.ProcessCPU(ppid); err == nil {
		res.parentCPU = pcpu1 - pcpu0 // includes receiving the push
	}
	if retries > 0 {
		res.notes = append(res.notes, fmt.Sprintf("the pass ended without the tag %d time(s); asked again", retries))
	}

	// The pass's own counters, once it has ended.
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if st, err := admin.status(ctx); err == nil && st.passFinished() && passStartedAfter(st, t0) {
			res.pass = fmt.Sprintf("result=%s %s", st.passResult(), passCounters(st.LastPass))
			break
		}
	}
	logEnd := fileSize(logPath)
	extra := link.Stats()
	if late := (extra.BytesUp + extra.BytesDown) - (after.BytesUp + after.BytesDown); late > 0 {
		res.notes = append(res.notes, fmt.Sprintf("%s more crossed after the tag was served, before the pass ended (not counted)", fmtBytes(late)))
	}

	// Verification, from the child's own store: the link is down.
	link.Down()
	t = time.Now()
	for _, p := range append(append([]placed{}, sc.before...), sc.after) {
		n, err := verifyImage(ctx, cc, child.Base, p.repo, p.tag, p.img)
		res.verified += n
		if err != nil {
			res.verifyErr = fmt.Errorf("%s: %w", p.ref(), err)
			logf("  VERIFY FAILED: %v", res.verifyErr)
			break
		}
	}
	notes, rebuilt := summarizeLog(logPath, logStart, logEnd)
	res.notes, res.rebuilt = append(res.notes, notes...), rebuilt
	logf("  %s over the link (%s down, %s up), %.3f%% of the image, in %s; %d blobs verified in %s",
		fmtBytes(res.bytes()), fmtBytes(res.bytesDown), fmtBytes(res.bytesUp), 100*float64(res.bytes())/float64(sc.after.img.Size),
		fmtDur(res.wall), res.verified, fmtDur(time.Since(t)))
	return res, nil
}

// waitPrepared waits until the parent's /metrics say it has prepared the deltas of every image
// it received (outpost_delta_prepare_queue_images 0).
func waitPrepared(ctx context.Context, c *http.Client, base string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	last := "no answer"
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
		if err != nil {
			return err
		}
		if resp, err := c.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for line := range strings.SplitSeq(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "outpost_delta_prepare_queue_images "); ok {
					if v == "0" {
						return nil
					}
					last = line
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("not done within %s (%s)", limit, last)
}

// childConfig is the child's configuration: its address, data and JSON log, then how it
// reaches its parent (through the link) and its sync section.
//
// A mirroring child (-child mirror) has parent.url and the admin's credentials and mirrors
// bench/*; its schedule fires once a year, as the benchmark asks for every measured pass
// itself, so that no scheduled pass adds to the count. A connected registry (-child connected)
// has the connection string of a definition made on the parent with the same repositories and
// schedule.
func childConfig(addr, dataDir, rest string) []byte {
	return fmt.Appendf(nil, `addr: %q
dataDir: %q
log:
  level: info
  format: json
%s`, addr, dataDir, rest)
}

// defineConnected creates the connected registry benchsite on the parent with the real CLI and
// returns its connection string, which names the link as the parent's endpoint.
func defineConnected(ctx context.Context, binary, parentBase, linkAddr, logPath string) (string, error) {
	c := command{env: benchkit.ChildEnv("OUTPOST_USERNAME=admin", "OUTPOST_PASSWORD="+benchkit.AdminPassword), limit: time.Minute, logPath: logPath}
	if err := c.run(ctx, binary, "connected-registry", "create", "--name", connectedName, "--repository", "bench/*",
		"--sync-schedule", "0 0 1 1 *", "--registry", parentBase); err != nil {
		return "", err
	}
	out, err := c.output(ctx, binary, "connected-registry", "get-settings", "--name", connectedName, "--parent-protocol", "http",
		"--generate-password", "1", "--parent-endpoint", linkAddr, "--registry", parentBase)
	if err != nil {
		return "", err
	}
	cs, ok := strings.CutPrefix(strings.TrimSpace(string(out)), "ACR_REGISTRY_CONNECTION_STRING=")
	if !ok || strings.Contains(cs, "\n") {
		return "", fmt.Errorf("get-settings printed %q, want one line ACR_REGISTRY_CONNECTION_STRING=…", out)
	}
	return cs, nil
}

const connectedName = "benchsite"

// unknownDeltaKey tells whether a node refused to start because it does not know sync.delta.
func unknownDeltaKey(err error) bool {
	s := err.Error()
	return strings.Contains(s, "sync.delta") && strings.Contains(s, "not a configuration key")
}

// waitSynced waits until the child serves every image in want with the parent's digest and its
// sync pass is over.
func waitSynced(ctx context.Context, admin adminClient, child *benchkit.Process, want []placed, limit time.Duration) error {
	c := child.Client(10 * time.Second)
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	lastTrigger := time.Now()
	var last error
	for time.Now().Before(deadline) {
		if err := child.Alive(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		st, err := admin.status(ctx)
		if err != nil {
			last = err
			time.Sleep(50 * time.Millisecond)
			continue
		}
		tags := true
		for _, p := range want {
			d, err := headTag(ctx, c, child.Base, p.repo, p.tag)
			if err != nil || d != p.img.ManifestDigest {
				tags = false
				last = fmt.Errorf("%s: %v (served %q)", p.ref(), err, d)
				break
			}
		}
		switch {
		case tags && st.passFinished():
			return nil
		case !tags && st.passFinished() && time.Since(lastTrigger) > 2*time.Second:
			// The pass ended without them (an error it would retry on its schedule): again.
			lastTrigger = time.Now()
			_ = admin.syncNow(ctx)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not reached within %s: %v", limit, last)
}

// waitQuiet waits until the link has carried nothing for 500 ms (at most 10 s): what a pass
// sends after it ends (a connected registry's status report) is not counted in the next
// measurement.
func waitQuiet(ctx context.Context, link *faultnet.Proxy) {
	last, since := link.Stats(), time.Now()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && ctx.Err() == nil; {
		time.Sleep(50 * time.Millisecond)
		st := link.Stats()
		if st.BytesUp != last.BytesUp || st.BytesDown != last.BytesDown {
			last, since = st, time.Now()
		} else if time.Since(since) >= 500*time.Millisecond {
			return
		}
	}
}

func passStartedAfter(st syncStatus, t time.Time) bool {
	s, _ := st.LastPass["started"].(string)
	ts, err := time.Parse(time.RFC3339Nano, s)
	return err == nil && !ts.Before(t.Add(-time.Second))
}

// summarizeLog condenses what the child logged during the measured sync: its warnings and
// errors, the lines about deltas and recipes, and each layer it rebuilt from a delta, whose
// times and sizes it also adds up.
func summarizeLog(path string, from, to int64) ([]string, rebuildTotals) {
	var totals rebuildTotals
	f, err := os.Open(path)
	if err != nil {
		return nil, totals
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return nil, totals
	}
	counts := map[string]int{}
	var layers []string
	sc := bufio.NewScanner(io.LimitReader(f, to-from))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		msg, _ := e["msg"].(string)
		level, _ := e["level"].(string)
		lm := strings.ToLower(msg)
		if level != "warn" && level != "error" && !strings.Contains(lm, "delta") && !strings.Contains(lm, "recipe") {
			continue
		}
		k := level + ": " + msg
		if er, ok := e["error"].(string); ok {
			k += ": " + shorten(er, 160)
		}
		counts[k]++
		lb, ok1 := e["layer_bytes"].(float64)
		db, ok2 := e["delta_bytes"].(float64)
		if ok1 && ok2 {
			d, _ := e["digest"].(string)
			l := fmt.Sprintf("%s: %s for %s (%.2f%%)", shorten(strings.TrimPrefix(d, "sha256:"), 12), fmtBytes(int64(db)), fmtBytes(int64(lb)), 100*db/max(lb, 1))
			if fm, ok := e["format"].(string); ok {
				l += ", " + fm
			}
			if b, ok := e["bases"].(float64); ok {
				l += fmt.Sprintf(", %d base(s)", int(b))
			}
			// The child's own rebuild, without the parent's work: apply, recompress, verify.
			if ms, ok := e["rebuild"].(float64); ok && ms > 0 {
				tb, _ := e["tar_bytes"].(float64)
				l += fmt.Sprintf(", rebuilt in %.2fs (%.1f MiB/s of layer, %.1f of tar)", ms/1000, lb/mib/(ms/1000), tb/mib/(ms/1000))
				totals.layers++
				totals.time += time.Duration(ms * float64(time.Millisecond))
				totals.layerBytes += int64(lb)
				totals.tar += int64(tb)
			}
			layers = append(layers, l)
		}
	}
	var out []string
	for _, k := range sortedKeys(counts) {
		out = append(out, fmt.Sprintf("child log %s (×%d)", k, counts[k]))
	}
	if len(layers) > 0 {
		out = append(out, "layers rebuilt: "+strings.Join(layers, "; "))
	}
	return out, totals
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
