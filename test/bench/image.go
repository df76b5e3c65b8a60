package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	benchRepo = "bench/image"
	benchTag  = "v1"
)

// image is an OCI image held in memory: random layer bytes (registries do not look inside
// layers), a config and the manifest naming them.
type image struct {
	layers       [][]byte
	config       []byte
	manifest     []byte
	manifestDesc v1.Descriptor
	blobs        []v1.Descriptor // config first, then the layers
	size         int64           // manifest and blobs, the bytes of one pull
}

func newImage(layers int, layerSize int64) (*image, error) {
	img := &image{}
	rng := rand.NewChaCha8([32]byte{'o', 'u', 't', 'p', 'o', 's', 't'})
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

// push uploads every blob monolithically (POST, then PUT with the digest) and then the manifest
// under benchTag.
func (img *image) push(ctx context.Context, s *server) error {
	if err := s.pushBlob(ctx, img.config, img.blobs[0].Digest); err != nil {
		return err
	}
	for i, l := range img.layers {
		if err := s.pushBlob(ctx, l, img.blobs[i+1].Digest); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, s.base+"/v2/"+benchRepo+"/manifests/"+benchTag, bytes.NewReader(img.manifest))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", v1.MediaTypeImageManifest)
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: pushing the manifest: %w", s.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("%s: pushing the manifest: %w %s: %s", s.name, errStatus, resp.Status, readSome(resp.Body))
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != img.manifestDesc.Digest.String() {
		return fmt.Errorf("%s: the manifest was stored as %q, expected %s", s.name, got, img.manifestDesc.Digest)
	}
	return nil
}

func (s *server) pushBlob(ctx context.Context, b []byte, d digest.Digest) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v2/"+benchRepo+"/blobs/uploads/", nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: starting an upload: %w", s.name, err)
	}
	body := readSome(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("%s: starting an upload: %w %s: %s", s.name, errStatus, resp.Status, body)
	}
	loc, err := url.Parse(s.base + "/v2/")
	if err != nil {
		return err
	}
	if loc, err = loc.Parse(resp.Header.Get("Location")); err != nil {
		return fmt.Errorf("%s: upload location %q: %w", s.name, resp.Header.Get("Location"), err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = s.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: uploading %s: %w", s.name, d, err)
	}
	body = readSome(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("%s: uploading %s: %w %s: %s", s.name, d, errStatus, resp.Status, body)
	}
	return nil
}

// readSome reads the start of an error response body and drains the rest.
func readSome(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 2048))
	_, _ = io.Copy(io.Discard, r)
	return string(bytes.TrimSpace(b))
}
