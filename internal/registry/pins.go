package registry

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Pins keep content that the sync engine stored ahead of the manifest that will reference it:
// the blobs and child manifests of an image whose pass a closed window cut short. Garbage
// collection treats a pinned digest as reachable until it is unpinned — when its manifest is
// stored — or until the pin is older than pinMaxAge, so that an image its parent dropped does
// not hold storage forever.

// pinMaxAge is how long a pin keeps content without its manifest arriving.
const pinMaxAge = 14 * 24 * time.Hour

func (r *Registry) pinDir() string { return filepath.Join(r.dataDir, "outpost", "pins") }

func (r *Registry) pinPath(d digest.Digest) string {
	return filepath.Join(r.pinDir(), d.Algorithm().String()+"-"+d.Encoded())
}

// Pin keeps ds from garbage collection until Unpin; pinning again renews the pin.
func (r *Registry) Pin(_ context.Context, ds ...digest.Digest) error {
	if err := os.MkdirAll(r.pinDir(), 0o700); err != nil {
		return err
	}
	now := time.Now()
	for _, d := range ds {
		if err := d.Validate(); err != nil {
			return err
		}
		p := r.pinPath(d)
		if err := os.Chtimes(p, now, now); err == nil {
			continue
		}
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		f.Close()
	}
	return nil
}

// Unpin releases ds.
func (r *Registry) Unpin(_ context.Context, ds ...digest.Digest) error {
	for _, d := range ds {
		if err := os.Remove(r.pinPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// pinned returns the digests pinned less than pinMaxAge ago, and removes older pins.
func (r *Registry) pinned() (map[digest.Digest]bool, error) {
	out := map[digest.Digest]bool{}
	entries, err := os.ReadDir(r.pinDir())
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		alg, hex, ok := strings.Cut(e.Name(), "-")
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
		info, err := e.Info()
		if !ok || err != nil || d.Validate() != nil {
			continue
		}
		if time.Since(info.ModTime()) > pinMaxAge {
			_ = os.Remove(filepath.Join(r.pinDir(), e.Name()))
			continue
		}
		out[d] = true
	}
	return out, nil
}
