package benchkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Repo and Tag name the image the benchmarks push and pull.
const (
	Repo = "bench/image"
	Tag  = "v1"
)

// ErrStatus is wrapped by errors about a response with a status other than the one expected.
var ErrStatus = errors.New("unexpected status")

// Image is an OCI image held in memory: random layers (nothing compresses them, and registries
// do not look inside), a config and the manifest naming them.
type Image struct {
	Layers       [][]byte
	Config       []byte
	Manifest     []byte
	ManifestDesc v1.Descriptor
	Blobs        []v1.Descriptor // config first, then the layers
	Size         int64           // manifest and blobs: the bytes of one pull
}

// NewImage generates the image from seed, so that a benchmark pushes the same bytes every run.
func NewImage(seed string, layers int, layerSize int64) (*Image, error) {
	var s [32]byte
	copy(s[:], seed)
	img := &Image{}
	rng := rand.NewChaCha8(s)
	diffIDs := make([]digest.Digest, 0, layers)
	var layerDescs []v1.Descriptor
	for range layers {
		b := make([]byte, layerSize)
		_, _ = rng.Read(b)
		d := digest.FromBytes(b)
		img.Layers = append(img.Layers, b)
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
	img.Config = cfg
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
	img.Manifest = m
	img.ManifestDesc = v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
	img.Blobs = append([]v1.Descriptor{cfgDesc}, layerDescs...)
	img.Size = int64(len(m))
	for _, b := range img.Blobs {
		img.Size += b.Size
	}
	return img, nil
}

// Push uploads every blob to base with c monolithically (POST, then PUT with the digest), then
// the manifest under Tag.
func (img *Image) Push(ctx context.Context, c *http.Client, base string) error {
	if err := pushBlob(ctx, c, base, img.Config, img.Blobs[0].Digest); err != nil {
		return err
	}
	for i, l := range img.Layers {
		if err := pushBlob(ctx, c, base, l, img.Blobs[i+1].Digest); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v2/"+Repo+"/manifests/"+Tag, bytes.NewReader(img.Manifest))
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
		return fmt.Errorf("pushing the manifest: %w %s: %s", ErrStatus, resp.Status, ReadSome(resp.Body))
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != img.ManifestDesc.Digest.String() {
		return fmt.Errorf("the manifest was stored as %q, expected %s", got, img.ManifestDesc.Digest)
	}
	return nil
}

func pushBlob(ctx context.Context, c *http.Client, base string, b []byte, d digest.Digest) error {
	return UploadBlob(ctx, c, base, Repo, d.String(), bytes.NewReader(b), int64(len(b)))
}

// UploadBlob uploads size bytes read from body as blob dgst of repo, in one PUT (a monolithic
// upload), and checks that the registry stored it.
func UploadBlob(ctx context.Context, c *http.Client, base, repo, dgst string, body io.Reader, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("starting an upload to %s: %w", repo, err)
	}
	msg := ReadSome(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("starting an upload to %s: %w %s: %s", repo, ErrStatus, resp.Status, msg)
	}
	loc, err := url.Parse(base + "/v2/")
	if err != nil {
		return err
	}
	if loc, err = loc.Parse(resp.Header.Get("Location")); err != nil {
		return fmt.Errorf("upload location %q: %w", resp.Header.Get("Location"), err)
	}
	q := loc.Query()
	q.Set("digest", dgst)
	loc.RawQuery = q.Encode()
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = c.Do(req)
	if err != nil {
		return fmt.Errorf("uploading %s: %w", dgst, err)
	}
	msg = ReadSome(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("uploading %s: %w %s: %s", dgst, ErrStatus, resp.Status, msg)
	}
	return nil
}

// ReadSome reads the start of an error response body, for the message, and drains the rest, so
// that the connection can be reused.
func ReadSome(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 2048))
	_, _ = io.Copy(io.Discard, r)
	return string(bytes.TrimSpace(b))
}
