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
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/outpost-registry/outpost/test/bench/benchkit"
)

const mib = 1 << 20

// localClient is for loopback requests that do not cross the simulated link.
func localClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: benchkit.WithAdmin(&http.Transport{
		Proxy:              nil,
		DialContext:        (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableCompression: true,
	})}
}

// headTag returns the digest base serves for the benchmark image's tag (empty, with an error, if
// none).
func headTag(ctx context.Context, c *http.Client, base string) (digest.Digest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, base+"/v2/"+benchkit.Repo+"/manifests/"+benchkit.Tag, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", v1.MediaTypeImageManifest)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HEAD %s:%s: %w %s", benchkit.Repo, benchkit.Tag, benchkit.ErrStatus, resp.Status)
	}
	return digest.Parse(resp.Header.Get("Docker-Content-Digest"))
}

// verifyPull pulls the benchmark image from base the way a client would (manifest by tag, then
// every blob it names) and checks the manifest's digest against want and every blob against its
// digest and size.
func verifyPull(ctx context.Context, base string, want digest.Digest) error {
	c := localClient(2 * time.Minute)
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+benchkit.Repo+"/manifests/"+benchkit.Tag, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", v1.MediaTypeImageManifest)
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("GET manifest: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("reading the manifest: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET manifest: %w %s: %s", benchkit.ErrStatus, resp.Status, bytes.TrimSpace(raw))
	}
	if got := digest.FromBytes(raw); got != want {
		return fmt.Errorf("the manifest is %s, the parent's is %s", got, want)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("parsing the manifest: %w", err)
	}
	for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+benchkit.Repo+"/blobs/"+b.Digest.String(), nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("GET blob %s: %w", b.Digest, err)
		}
		if resp.StatusCode != http.StatusOK {
			msg := benchkit.ReadSome(resp.Body)
			resp.Body.Close()
			return fmt.Errorf("GET blob %s: %w %s: %s", b.Digest, benchkit.ErrStatus, resp.Status, msg)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("reading blob %s: %w", b.Digest, err)
		}
		if got := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil))); got != b.Digest || n != b.Size {
			return fmt.Errorf("blob %s: got %d bytes with digest %s, want %d bytes", b.Digest, n, got, b.Size)
		}
	}
	return nil
}

// cachedBlobs counts the blobs of img that a distribution registry's filesystem storage under
// root holds in full and links into benchkit.Repo, and reports whether the manifest is stored
// there too: the state of its cache, read without a request that would go to the remote.
func cachedBlobs(img *benchkit.Image, root string) (blobs int, manifest bool) {
	v2 := filepath.Join(root, "docker", "registry", "v2")
	repo := filepath.Join(v2, "repositories", filepath.FromSlash(benchkit.Repo))
	for _, b := range img.Blobs {
		hexd := b.Digest.Encoded()
		fi, err := os.Stat(filepath.Join(v2, "blobs", "sha256", hexd[:2], hexd, "data"))
		if err != nil || fi.Size() != b.Size {
			continue
		}
		if _, err := os.Stat(filepath.Join(repo, "_layers", "sha256", hexd, "link")); err != nil {
			continue
		}
		blobs++
	}
	hexd := img.ManifestDesc.Digest.Encoded()
	_, err := os.Stat(filepath.Join(repo, "_manifests", "revisions", "sha256", hexd, "link"))
	return blobs, err == nil
}
