package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	benchRepo = "bench/image"
	benchTag  = "v1"
	mib       = 1 << 20
)

// image is an OCI image held in memory: random layers (nothing compresses them, and registries
// do not look inside), a config and the manifest naming them.
type image struct {
	layers       [][]byte
	config       []byte
	manifest     []byte
	manifestDesc v1.Descriptor
	blobs        []v1.Descriptor // config first, then the layers
	size         int64           // manifest and blobs: the bytes of one pull
}

func newImage(layers int, layerSize int64) (*image, error) {
	img := &image{}
	rng := rand.NewChaCha8([32]byte{'o', 'u', 't', 'p', 'o', 's', 't', '-', 's', 'y', 'n', 'c'})
	diffIDs := make([]digest.Digest, 0, layers)
	var layerDescs []v1.Descriptor
	for range layers {
		b := make([]byte, layerSize)
		_, _ = rng.Read(b)
		d := digest.FromBytes(b)
		img.layers = append(img.layers, b)
		diffIDs = append(diffIDs, d)
		layerDescs = append(layerDescs, v1.Descriptor{MediaType: v1.MediaTypeImageLayer, Digest: d, Size: layerSize})
	}
	cfg, err := json.Marshal(v1.Image{
		Platform: v1.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   v1.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	if err != nil {
		return nil, err
	}
	img.config = cfg
	cfgDesc := v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	m, err := json.Marshal(v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    cfgDesc,
		Layers:    layerDescs,
	})
	if err != nil {
		return nil, err
	}
	img.manifest = m
	img.manifestDesc = v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
	img.blobs = append([]v1.Descriptor{cfgDesc}, layerDescs...)
	img.size = int64(len(m))
	for _, b := range img.blobs {
		img.size += b.Size
	}
	return img, nil
}

var errStatus = errors.New("unexpected status")

// localClient is for loopback requests that do not cross the simulated link.
func localClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		Proxy:              nil,
		DialContext:        (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		DisableCompression: true,
	}}
}

// push uploads every blob monolithically (POST, then PUT with the digest), then the manifest
// under benchTag, straight to base (not through the link).
func (img *image) push(ctx context.Context, base string) error {
	c := localClient(2 * time.Minute)
	defer c.CloseIdleConnections()
	if err := pushBlob(ctx, c, base, img.config, img.blobs[0].Digest); err != nil {
		return err
	}
	for i, l := range img.layers {
		if err := pushBlob(ctx, c, base, l, img.blobs[i+1].Digest); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/"+benchRepo+"/manifests/"+benchTag, bytes.NewReader(img.manifest))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", v1.MediaTypeImageManifest)
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("pushing the manifest: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("pushing the manifest: %w %s: %s", errStatus, resp.Status, readSome(resp.Body))
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != img.manifestDesc.Digest.String() {
		return fmt.Errorf("the manifest was stored as %q, expected %s", got, img.manifestDesc.Digest)
	}
	return nil
}

func pushBlob(ctx context.Context, c *http.Client, base string, b []byte, d digest.Digest) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/"+benchRepo+"/blobs/uploads/", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("starting an upload: %w", err)
	}
	body := readSome(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("starting an upload: %w %s: %s", errStatus, resp.Status, body)
	}
	loc, err := url.Parse(base + "/v2/")
	if err != nil {
		return err
	}
	if loc, err = loc.Parse(resp.Header.Get("Location")); err != nil {
		return fmt.Errorf("upload location %q: %w", resp.Header.Get("Location"), err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = c.Do(req)
	if err != nil {
		return fmt.Errorf("uploading %s: %w", d, err)
	}
	body = readSome(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("uploading %s: %w %s: %s", d, errStatus, resp.Status, body)
	}
	return nil
}

// readSome reads the start of an error response body and drains the rest.
func readSome(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 2048))
	_, _ = io.Copy(io.Discard, r)
	return string(bytes.TrimSpace(b))
}

// headTag returns the digest base serves for benchRepo:benchTag (empty, with an error, if none).
func headTag(ctx context.Context, c *http.Client, base string) (digest.Digest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, base+"/v2/"+benchRepo+"/manifests/"+benchTag, nil)
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
		return "", fmt.Errorf("HEAD %s:%s: %w %s", benchRepo, benchTag, errStatus, resp.Status)
	}
	return digest.Parse(resp.Header.Get("Docker-Content-Digest"))
}

// verifyPull pulls benchRepo:benchTag from base the way a client would (manifest by tag, then
// every blob it names) and checks the manifest's digest against want and every blob against its
// digest and size.
func verifyPull(ctx context.Context, base string, want digest.Digest) error {
	c := localClient(2 * time.Minute)
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+benchRepo+"/manifests/"+benchTag, nil)
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
		return fmt.Errorf("GET manifest: %w %s: %s", errStatus, resp.Status, bytes.TrimSpace(raw))
	}
	if got := digest.FromBytes(raw); got != want {
		return fmt.Errorf("the manifest is %s, the parent's is %s", got, want)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("parsing the manifest: %w", err)
	}
	for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+benchRepo+"/blobs/"+b.Digest.String(), nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("GET blob %s: %w", b.Digest, err)
		}
		if resp.StatusCode != http.StatusOK {
			msg := readSome(resp.Body)
			resp.Body.Close()
			return fmt.Errorf("GET blob %s: %w %s: %s", b.Digest, errStatus, resp.Status, msg)
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
// root holds in full and links into benchRepo, and reports whether the manifest is stored there
// too: the state of its cache, read without a request that would go to the remote.
func (img *image) cachedBlobs(root string) (blobs int, manifest bool) {
	v2 := filepath.Join(root, "docker", "registry", "v2")
	repo := filepath.Join(v2, "repositories", filepath.FromSlash(benchRepo))
	for _, b := range img.blobs {
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
	hexd := img.manifestDesc.Digest.Encoded()
	_, err := os.Stat(filepath.Join(repo, "_manifests", "revisions", "sha256", hexd, "link"))
	return blobs, err == nil
}
