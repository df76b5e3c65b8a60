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
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/outpost-registry/outpost/test/bench/benchkit"
	"github.com/outpost-registry/outpost/test/faultnet"
)

// newLink starts the simulated link to target: the bandwidth cap and latency on both
// directions, and the flapping schedule (up, then down with every connection reset, repeated),
// which starts counting now.
func newLink(target string, o options) (*faultnet.Proxy, *faultnet.Schedule, error) {
	p, err := faultnet.NewProxy(target,
		faultnet.WithBandwidth(faultnet.Both, o.bandwidth),
		faultnet.WithLatency(faultnet.Both, o.latency))
	if err != nil {
		return nil, nil, err
	}
	var s *faultnet.Schedule
	if o.up > 0 && o.down > 0 {
		s = p.Loop(faultnet.Flap(o.up, o.down)...)
	}
	return p, s, nil
}

// outpostChildConfig is the child's configuration: it mirrors benchkit.Repo from parentURL (the
// link) in chunkMiB ranged requests, parallelism blobs at a time, with the default schedule
// (a pass at start-up, then every minute).
func outpostChildConfig(addr, dataDir, parentURL string, chunkMiB, parallelism int) []byte {
	return fmt.Appendf(nil, `addr: %q
dataDir: %q
log:
  level: info
  format: json
parent:
  url: %q
  username: admin
  password: %q
sync:
  repositories: [%q]
  chunkSizeMiB: %d
  parallelism: %d
`, addr, dataDir, parentURL, benchkit.AdminPassword, benchkit.Repo, chunkMiB, parallelism)
}

// runOutpost syncs the image into a fresh Outpost child through a fresh link and measures the
// time until the child serves the parent's digest for the tag, and the bytes the link carried
// by then. With kill, the child is killed (SIGKILL) once the link has carried killAt of the
// image downstream, and restarted at once on the same data directory.
func runOutpost(ctx context.Context, o options, img *benchkit.Image, parent *benchkit.Process, want digest.Digest, dir string, kill bool, limit time.Duration, logf func(string, ...any)) (*result, error) {
	res := &result{system: "Outpost child", limit: limit}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	addr, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "outpost.yaml")
	logPath := filepath.Join(dir, "outpost.log")

	link, sched, err := newLink(parent.Addr, o)
	if err != nil {
		return nil, err
	}
	defer link.Close()
	cfg := outpostChildConfig(addr, filepath.Join(dir, "data"), link.URL(), o.chunkMiB, o.parallelism)
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, err
	}
	start := func() (*benchkit.Process, error) {
		cmd := exec.Command(o.outpost, "serve", "--config", cfgPath)
		cmd.Env = benchkit.OutpostEnv()
		return benchkit.Start(ctx, "Outpost child", cmd, addr, logPath)
	}

	t0 := time.Now()
	deadline := t0.Add(limit)
	mon := monitorLink(link)
	child, err := start()
	if err != nil {
		return nil, err
	}
	defer func() { child.Stop() }()

	var killCh chan struct{}
	var killAt int64
	if kill {
		killAt = int64(o.killAt * float64(img.Size))
		killCh = make(chan struct{})
		wctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		go func(ch chan struct{}) {
			if link.WaitBytes(wctx, faultnet.Downstream, killAt) == nil {
				close(ch)
			}
		}(killCh)
	}

	c := localClient(5 * time.Second)
	defer c.CloseIdleConnections()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
poll:
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-killCh:
			killCh = nil
			child.Kill9()
			st := link.Stats()
			res.notes = append(res.notes, fmt.Sprintf("killed (SIGKILL) at %s with %s down, %s up over the link (%.0f%% of the image); restarted at once",
				fmtDur(time.Since(t0)), fmtBytes(st.BytesDown), fmtBytes(st.BytesUp), 100*float64(st.BytesDown)/float64(img.Size)))
			logf("  child killed at %s (%s downstream); restarting", fmtDur(time.Since(t0)), fmtMiB(st.BytesDown))
			if child, err = start(); err != nil {
				return nil, err
			}
			continue
		case <-tick.C:
		}
		if err := child.Alive(); err != nil {
			res.notes = append(res.notes, "the child exited by itself: "+err.Error())
			break poll
		}
		d, err := headTag(ctx, c, child.Base)
		if err == nil && d == want {
			res.completed = true
			break poll
		}
		if err == nil {
			err = fmt.Errorf("the child serves %s for the tag, the parent %s", d, want)
		}
		lastErr = err
		if !time.Now().Before(deadline) {
			break
		}
	}
	res.wall = time.Since(t0)
	res.link = link.Stats()
	res.linkUp, res.linkIdle, res.linkIdleRecovering = mon.finish()
	if res.completed {
		// The pass that stored the tag logs its summary a moment later (after the referrers).
		waitLogged(logPath, fileSize(logPath), `"msg":"sync pass"`, 5*time.Second)
	}
	logEnd := fileSize(logPath) // what the child logged up to here; not the verification below
	if !res.completed && lastErr != nil {
		res.notes = append(res.notes, "last check: "+lastErr.Error())
	}
	logf("  %s after %s: %s down, %s up over the link", doneWord(res.completed), fmtDur(res.wall), fmtBytes(res.link.BytesDown), fmtBytes(res.link.BytesUp))

	// The child's own count of what it received from the parent (since its last start), and
	// of what it received but threw away.
	if m, err := scrapeMetrics(ctx, c, child.Base, "outpost_sync_parent_received_bytes_total", "outpost_sync_refetched_bytes_total"); err == nil {
		res.notes = append(res.notes, fmt.Sprintf("child's metrics (since its last start): received from the parent %s, re-fetched %s",
			fmtMiB(int64(m["outpost_sync_parent_received_bytes_total"])), fmtMiB(int64(m["outpost_sync_refetched_bytes_total"]))))
	}

	// Verify with the link down: the image must be served from the child's own store.
	if sched != nil {
		sched.Stop()
	}
	link.Down()
	if res.completed {
		t := time.Now()
		if err := verifyPull(ctx, child.Base, want); err != nil {
			res.verifyErr = err
			logf("  VERIFY FAILED: %v", err)
		} else {
			logf("  verified: full pull from the child with the link down matches every digest (%s)", fmtDur(time.Since(t)))
		}
	}
	res.notes = append(res.notes, summarizeOutpostLog(logPath, logEnd)...)
	return res, nil
}

func doneWord(ok bool) string {
	if ok {
		return "complete"
	}
	return "NOT complete"
}

// scrapeMetrics reads the named counters (without labels) from a Prometheus text endpoint.
func scrapeMetrics(ctx context.Context, c *http.Client, base string, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %w %s", benchkit.ErrStatus, resp.Status)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !want[name] {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// summarizeOutpostLog condenses the child's JSON log: its sync passes, resumed blobs, and the
// warnings and errors it logged, in its first size bytes.
func summarizeOutpostLog(path string, size int64) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var passes []string
	resumes, starts := 0, 0
	problems := map[string]int{}
	r := bufio.NewReader(io.LimitReader(f, size))
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			var e map[string]any
			if json.Unmarshal(line, &e) == nil {
				msg, _ := e["msg"].(string)
				level, _ := e["level"].(string)
				switch {
				case msg == "sync pass":
					// Outpost's JSON log encodes durations in milliseconds.
					p := fmt.Sprintf("%v in %.1fs, %s from the parent", e["result"], num(e["duration"])/1000, fmtBytes(int64(num(e["bytes_from_parent"]))))
					if er, ok := e["error"].(string); ok {
						p += " (" + shorten(er, 160) + ")"
					}
					passes = append(passes, p)
				case msg == "resuming blob":
					resumes++
				case msg == "blob session is gone; starting over":
					starts++
				}
				if level == "warn" || level == "error" {
					k := level + ": " + msg
					if er, ok := e["error"].(string); ok {
						k += ": " + shorten(er, 160)
					}
					problems[k]++
				}
			}
		}
		if err == io.EOF || err != nil {
			break
		}
	}
	var out []string
	if len(passes) > 0 {
		out = append(out, fmt.Sprintf("sync passes logged: %d: %s", len(passes), strings.Join(passes, "; ")))
	}
	if resumes > 0 || starts > 0 {
		out = append(out, fmt.Sprintf("blobs resumed from a checkpoint: %d; checkpoints whose session was gone: %d", resumes, starts))
	}
	keys := make([]string, 0, len(problems))
	for k := range problems {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, fmt.Sprintf("log %s (×%d)", k, problems[k]))
	}
	return out
}

// waitLogged waits up to limit for the log at path to contain s after its first from bytes.
func waitLogged(path string, from int64, s string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && int64(len(b)) > from && strings.Contains(string(b[from:]), s) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
