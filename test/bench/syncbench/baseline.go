package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/outpost-registry/outpost/test/bench/benchkit"
)

// distributionCacheConfig is a plain distribution registry configured as a pull-through cache of
// remoteURL, with the options test/bench gives it (benchkit.DistributionConfig). Logging is at
// info so that its cache errors (aborted fills) are in the log.
func distributionCacheConfig(addr, dataDir, remoteURL string) ([]byte, error) {
	return benchkit.DistributionConfig(addr, dataDir, "info", "", fmt.Sprintf("proxy:\n  remoteurl: %q\n  username: admin\n  password: %q\n", remoteURL, benchkit.AdminPassword))
}

// runBaseline starts a fresh distribution registry configured as a pull-through cache of the
// parent through a fresh link, and pulls the image through it with a client that retries the
// whole pull 1 s after any failure, until the image is complete or limit passes. Complete means
// the client read the manifest and every blob with their digests verified and the cache's
// storage holds them all: the image is then local, as it is on an Outpost child.
func runBaseline(ctx context.Context, o options, img *benchkit.Image, parent *benchkit.Process, want digest.Digest, dir, version string, limit time.Duration, logf func(string, ...any)) (*result, error) {
	res := &result{system: "distribution " + version + " proxy", limit: limit}
	if o.baselinePullers > 1 {
		res.system += fmt.Sprintf(", %d layers at once", o.baselinePullers)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	addr, err := benchkit.FreeAddr()
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "distribution.log")

	link, sched, err := newLink(parent.Addr, o)
	if err != nil {
		return nil, err
	}
	defer link.Close()
	cfg, err := distributionCacheConfig(addr, dataDir, link.URL())
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, err
	}

	t0 := time.Now()
	deadline := t0.Add(limit)
	mon := monitorLink(link)
	cmd := exec.Command(o.distribution, "serve", cfgPath)
	// Its OTLP trace exporter would try to reach a collector on localhost:4318 that is not there.
	cmd.Env = benchkit.ChildEnv("OTEL_TRACES_EXPORTER=none")
	cache, err := benchkit.Start(ctx, "distribution cache", cmd, addr, logPath)
	if err != nil {
		return nil, err
	}
	defer cache.Stop()

	ref, err := name.ParseReference(addr+"/"+benchkit.Repo+":"+benchkit.Tag, name.Insecure)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: max(4, o.baselinePullers),
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()

	errKinds := map[string]int{}
	var lastErr error
	attempts := 0
	var clientBytes int64
	for {
		attempts++
		n, err := ggcrPull(cctx, ref, tr, want, o.baselinePullers)
		clientBytes += n
		if err == nil {
			// distribution commits a blob to its cache after the last byte has gone to the
			// client: give it a moment.
			if waitCached(cctx, img, dataDir, 10*time.Second) {
				res.completed = true
				break
			}
			b, m := cachedBlobs(img, dataDir)
			err = fmt.Errorf("the client has the image but the cache holds %d/%d blobs (manifest stored: %v)", b, len(img.Blobs), m)
		}
		if cctx.Err() != nil || ctx.Err() != nil {
			break
		}
		if err := cache.Alive(); err != nil {
			res.notes = append(res.notes, "the cache exited: "+err.Error())
			break
		}
		lastErr = err
		errKinds[errKind(err)]++
		if o.verbose {
			logf("  attempt %d failed at %s: %s", attempts, fmtDur(time.Since(t0)), shorten(err.Error(), 200))
		}
		tr.CloseIdleConnections()
		select {
		case <-cctx.Done():
		case <-time.After(time.Second):
		}
		if cctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	res.wall = time.Since(t0)
	if !res.completed {
		res.wall = min(res.wall, limit)
	}
	res.link = link.Stats()
	res.linkUp, res.linkIdle, res.linkIdleRecovering = mon.finish()
	blobs, manifest := cachedBlobs(img, dataDir)
	logf("  %s after %s: %s down, %s up over the link; cache holds %d/%d blobs", doneWord(res.completed), fmtDur(res.wall),
		fmtBytes(res.link.BytesDown), fmtBytes(res.link.BytesUp), blobs, len(img.Blobs))
	res.notes = append(res.notes,
		fmt.Sprintf("client: %d pull attempts, %s read from the cache in all (each attempt reads every layer again, already cached ones from local storage)", attempts, fmtMiB(clientBytes)),
		fmt.Sprintf("cache at the end: %d/%d blobs stored, manifest stored: %v", blobs, len(img.Blobs), manifest))
	if len(errKinds) > 0 {
		keys := make([]string, 0, len(errKinds))
		for k := range errKinds {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s ×%d", k, errKinds[k]))
		}
		res.notes = append(res.notes, "client errors: "+strings.Join(parts, ", "))
	}
	if !res.completed && lastErr != nil {
		res.notes = append(res.notes, "last client error: "+shorten(lastErr.Error(), 240))
	}
	logEnd := fileSize(logPath)

	if sched != nil {
		sched.Stop()
	}
	link.Down()
	if res.completed {
		t := time.Now()
		if err := verifyPull(ctx, cache.Base, want); err != nil {
			res.verifyErr = err
			logf("  VERIFY FAILED: %v", err)
		} else {
			logf("  verified: full pull from the cache with the link down matches every digest (%s)", fmtDur(time.Since(t)))
		}
	}
	res.notes = append(res.notes, summarizeDistributionLog(logPath, logEnd)...)
	return res, nil
}

// ggcrPull pulls ref with go-containerregistry as a client would: the manifest, the config and
// every layer read to the end, pullers layers at a time (go-containerregistry verifies each
// blob's digest and size as it is read). The first failure ends the attempt. It returns the
// blob bytes read.
func ggcrPull(ctx context.Context, ref name.Reference, tr http.RoundTripper, want digest.Digest, pullers int) (int64, error) {
	img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithTransport(tr))
	if err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return 0, err
	}
	if d.String() != want.String() {
		return 0, fmt.Errorf("the cache serves %s for the tag, the parent %s", d, want)
	}
	if _, err := img.RawConfigFile(); err != nil {
		return 0, fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	var total atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(pullers)
	for i, l := range layers {
		g.Go(func() error {
			if gctx.Err() != nil {
				return nil // another layer failed: this attempt is over
			}
			rc, err := l.Compressed()
			if err != nil {
				return fmt.Errorf("layer %d: %w", i+1, err)
			}
			n, err := io.Copy(io.Discard, &ctxReader{ctx: gctx, r: rc})
			total.Add(n)
			if cerr := rc.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("layer %d after %s: %w", i+1, fmtMiB(n), err)
			}
			return nil
		})
	}
	err = g.Wait()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return total.Load(), err
}

// ctxReader stops reading once ctx ends, so that a failed layer ends the other layers' reads of
// the same attempt.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// waitCached waits up to limit for the cache's storage to hold the whole image.
func waitCached(ctx context.Context, img *benchkit.Image, dataDir string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		if b, m := cachedBlobs(img, dataDir); b == len(img.Blobs) && m {
			return true
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// errKind classifies a client error for the summary.
func errKind(err error) string {
	s := err.Error()
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(s, "unexpected EOF"):
		return "truncated body (unexpected EOF)"
	case strings.Contains(s, "connection reset"):
		return "connection reset"
	case strings.Contains(s, "cache holds"):
		return "cache incomplete after a successful pull"
	case strings.Contains(s, "manifest"):
		return "manifest request failed"
	case strings.Contains(s, "digest") || strings.Contains(s, "size"):
		return "digest or size mismatch"
	default:
		return "other: " + shorten(s, 80)
	}
}

var (
	logfmtMsg = regexp.MustCompile(`level=(error|warning|warn)\s+msg="((?:[^"\\]|\\.)*)"`)
	digestRE  = regexp.MustCompile(`sha256:[0-9a-f]{64}`)
	addrRE    = regexp.MustCompile(`127\.0\.0\.1:\d+`)
)

// summarizeDistributionLog counts the warnings and errors in distribution's text log (its first
// size bytes), by message with long details cut.
func summarizeDistributionLog(path string, size int64) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(io.LimitReader(f, size))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := logfmtMsg.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		msg := m[2]
		// Cut request-specific parts (addresses, digests, ports) so that messages group.
		msg = digestRE.ReplaceAllString(msg, "sha256:…")
		msg = addrRE.ReplaceAllString(msg, "127.0.0.1:…")
		counts[m[1]+": "+shorten(msg, 140)]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return counts[keys[i]] > counts[keys[j]] })
	var out []string
	for i, k := range keys {
		if i == 6 {
			out = append(out, fmt.Sprintf("log: %d more kinds of warnings and errors", len(keys)-i))
			break
		}
		out = append(out, fmt.Sprintf("log %s (×%d)", k, counts[k]))
	}
	return out
}
