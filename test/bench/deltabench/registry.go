package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/outpost-registry/outpost/test/bench/benchkit"
)

// localClient is for loopback requests that do not cross the link: pushes to the parent,
// checks and verification on the child.
func localClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: benchkit.WithAdmin(&http.Transport{
		Proxy:              nil,
		DialContext:        (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableCompression: true,
	})}
}

const manifestAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"

// push uploads img's config and layers to repo on base (each skipped when the registry has it
// already, as clients do), then its manifest under tag.
func push(ctx context.Context, c *http.Client, base, repo, tag string, img *image) error {
	if err := pushBlob(ctx, c, base, repo, img.ConfigDigest, int64(len(img.Config)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(img.Config)), nil
	}); err != nil {
		return err
	}
	for _, b := range img.Layers {
		if err := pushBlob(ctx, c, base, repo, b.Digest, b.Size, func() (io.ReadCloser, error) { return os.Open(b.Path) }); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(img.Manifest))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("pushing the manifest of %s:%s: %w", repo, tag, err)
	}
	msg := benchkit.ReadSome(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("pushing the manifest of %s:%s: %w %s: %s", repo, tag, benchkit.ErrStatus, resp.Status, msg)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != img.ManifestDigest {
		return fmt.Errorf("the manifest of %s:%s was stored as %q, expected %s", repo, tag, got, img.ManifestDigest)
	}
	return nil
}

func pushBlob(ctx context.Context, c *http.Client, base, repo, digest string, size int64, open func() (io.ReadCloser, error)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, base+"/v2/"+repo+"/blobs/"+digest, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("HEAD blob %s: %w", digest, err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	body, err := open()
	if err != nil {
		return err
	}
	defer body.Close()
	return benchkit.UploadBlob(ctx, c, base, repo, digest, body, size)
}

// headTag returns the digest base serves for repo:tag, or an error.
func headTag(ctx context.Context, c *http.Client, base, repo, tag string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, base+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HEAD %s:%s: %w %s", repo, tag, benchkit.ErrStatus, resp.Status)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}

// verifyImage pulls repo:tag from base as a client would and checks the manifest's bytes and
// every blob's digest and size against img: the child must hold the parent's blobs byte for
// byte. It returns the number of blobs checked.
func verifyImage(ctx context.Context, c *http.Client, base, repo, tag string, img *image) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET manifest %s:%s: %w", repo, tag, err)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET manifest %s:%s: %w %s", repo, tag, benchkit.ErrStatus, resp.Status)
	}
	if !bytes.Equal(raw, img.Manifest) {
		return 0, fmt.Errorf("%s:%s: the manifest is %s, the parent's %s", repo, tag, sha256Digest(raw), img.ManifestDigest)
	}
	n := 0
	for d, size := range img.blobs() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/blobs/"+d, nil)
		if err != nil {
			return n, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return n, fmt.Errorf("GET blob %s: %w", d, err)
		}
		if resp.StatusCode != http.StatusOK {
			msg := benchkit.ReadSome(resp.Body)
			resp.Body.Close()
			return n, fmt.Errorf("GET blob %s in %s: %w %s: %s", d, repo, benchkit.ErrStatus, resp.Status, msg)
		}
		h := sha256.New()
		got, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil {
			return n, fmt.Errorf("reading blob %s: %w", d, err)
		}
		if gd := "sha256:" + hex.EncodeToString(h.Sum(nil)); gd != d || got != size {
			return n, fmt.Errorf("blob %s in %s: got %d bytes with digest %s, want %d bytes", d, repo, got, gd, size)
		}
		n++
	}
	return n, nil
}

// adminClient talks to a node's local admin socket (what `outpost sync now|status` use).
type adminClient struct{ c *http.Client }

func newAdminClient(dataDir string) adminClient {
	sock := filepath.Join(dataDir, "outpost", "admin.sock")
	return adminClient{&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}}
}

// syncStatus is the part of GET /sync/status the benchmark reads; lastPass is kept whole, for
// the counters a newer node may add.
type syncStatus struct {
	State    string         `json:"state"`
	Link     string         `json:"link"`
	LastPass map[string]any `json:"lastPass"`
}

func (s syncStatus) passFinished() bool {
	if s.LastPass == nil {
		return false
	}
	f, _ := s.LastPass["finished"].(string)
	return f != "" && s.State == "idle"
}

func (s syncStatus) passResult() string {
	r, _ := s.LastPass["result"].(string)
	return r
}

func (a adminClient) status(ctx context.Context) (syncStatus, error) {
	var s syncStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://admin/sync/status", nil)
	if err != nil {
		return s, err
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET /sync/status: %w %s", benchkit.ErrStatus, resp.Status)
	}
	return s, json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&s)
}

// syncNow asks for a pass now, as `outpost sync now --force` does.
func (a adminClient) syncNow(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://admin/sync/now?force=true", nil)
	if err != nil {
		return err
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return err
	}
	msg := benchkit.ReadSome(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST /sync/now: %w %s: %s", benchkit.ErrStatus, resp.Status, msg)
	}
	return nil
}

// passCounters renders the numeric fields of a pass summary, "bytesFromParent=123 …".
func passCounters(p map[string]any) string {
	var out []string
	for _, k := range sortedKeys(p) {
		if v, ok := p[k].(float64); ok {
			out = append(out, k+"="+strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	return joinNonEmpty(out, " ")
}
