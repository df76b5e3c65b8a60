package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/pgzip"

	"github.com/outpost-registry/outpost/internal/iocount"
)

// Layers are written as Docker and BuildKit write them: archive/tar, the tree walked in
// lexical order per directory (as filepath.WalkDir does, which is what moby's archive package
// does), every directory, file and symbolic link with its real mode and its mtime truncated to
// the second, no access or change times, no user or group names; hard links as tar hard links to
// the first path; USTAR headers, and PAX records only where USTAR cannot hold a field (long
// names, large numbers), as archive/tar chooses. Root filesystems keep their numeric owners
// (debootstrap's files are not all root's); application layers are owned by 0:0, as a COPY
// without --chown makes them. Extended attributes are not written.

// tarLayer is an uncompressed layer in the cache.
type tarLayer struct {
	Name    string `json:"name"`
	Stamp   string `json:"stamp"` // the source build it was made from
	DiffID  string `json:"diffID"`
	Size    int64  `json:"size"`
	Entries int    `json:"entries"`
	Path    string `json:"-"`
}

// tree is a directory written into a layer under prefix ("" for the layer's root).
type tree struct {
	prefix, root string
	// keepOwner keeps the files' numeric owners (a root filesystem); otherwise 0:0, as a COPY
	// without --chown makes them.
	keepOwner bool
}

func buildTarLayer(cache, name, stamp string, trees []tree) (*tarLayer, error) {
	dir := filepath.Join(cache, "layers")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name+".tar")
	meta := path + ".json"
	if raw, err := os.ReadFile(meta); err == nil {
		var l tarLayer
		if json.Unmarshal(raw, &l) == nil && l.Stamp == stamp {
			if fi, err := os.Stat(path); err == nil && fi.Size() == l.Size {
				l.Path = path
				return &l, nil
			}
		}
	}
	_ = os.Remove(meta)
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	cw := &iocount.Writer{W: io.MultiWriter(f, h)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	tw := tar.NewWriter(bw)
	entries := 0
	dirs := map[string]bool{}
	for _, t := range trees {
		var n int
		if n, err = writePrefix(tw, t, dirs); err != nil {
			break
		}
		entries += n
		if n, err = writeTree(tw, t); err != nil {
			break
		}
		entries += n
	}
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err != nil {
		os.Remove(path + ".tmp")
		return nil, fmt.Errorf("writing layer %s: %w", name, err)
	}
	l := &tarLayer{Name: name, Stamp: stamp, DiffID: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: cw.N, Entries: entries, Path: path}
	raw, _ := json.MarshalIndent(l, "", "  ")
	return l, os.WriteFile(meta, raw, 0o644)
}

// writePrefix writes the directories of t's prefix not yet written (dirs), as a COPY into a
// new directory makes them: 0755, root's, the tree's own mtime.
func writePrefix(tw *tar.Writer, t tree, dirs map[string]bool) (int, error) {
	if t.prefix == "" {
		return 0, nil
	}
	fi, err := os.Stat(t.root)
	if err != nil {
		return 0, err
	}
	n, dir := 0, ""
	for _, part := range strings.Split(t.prefix, "/") {
		dir = path.Join(dir, part)
		if dirs[dir] {
			continue
		}
		dirs[dir] = true
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: fi.ModTime().Truncate(time.Second)}
		if err := tw.WriteHeader(hdr); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// writeTree writes t's entries under its prefix. Hard links stay within the tree, which may be
// written more than once under several prefixes.
func writeTree(tw *tar.Writer, t tree) (int, error) {
	root, keepOwner := t.root, t.keepOwner
	type inode struct{ dev, ino uint64 }
	seen := map[inode]string{}
	entries := 0
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		name := path.Join(t.prefix, filepath.ToSlash(rel))
		fi, err := de.Info()
		if err != nil {
			return err
		}
		var link string
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case fi.Mode()&(fs.ModeSocket|fs.ModeDevice|fs.ModeCharDevice|fs.ModeIrregular) != 0:
			return nil // trimmed trees hold none; sockets have no place in a layer
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = name
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		hdr.ModTime = fi.ModTime().Truncate(time.Second)
		hdr.Format = tar.FormatUnknown
		hdr.Uid, hdr.Gid = 0, 0
		st, _ := fi.Sys().(*syscall.Stat_t)
		if st != nil && keepOwner {
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		}
		if st != nil && fi.Mode().IsRegular() && st.Nlink > 1 {
			k := inode{uint64(st.Dev), st.Ino}
			if first, ok := seen[k]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				seen[k] = name
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		entries++
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			n, err := io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if n != hdr.Size {
				return fmt.Errorf("%s changed while it was archived", name)
			}
		}
		return nil
	})
	return entries, err
}

// compressor is one way real builders compress a layer.
type compressor struct {
	key, label string
	wrap       func(io.Writer) (io.WriteCloser, error)
}

var compressors = []compressor{
	{key: "gzip", label: "compress/gzip default level (Docker, BuildKit)", wrap: func(w io.Writer) (io.WriteCloser, error) {
		return gzip.NewWriterLevel(w, gzip.DefaultCompression)
	}},
	{key: "gzip-fast", label: "compress/gzip BestSpeed (crane, ko)", wrap: func(w io.Writer) (io.WriteCloser, error) {
		return gzip.NewWriterLevel(w, gzip.BestSpeed)
	}},
	{key: "pgzip", label: "klauspost/pgzip defaults (podman, buildah)", wrap: func(w io.Writer) (io.WriteCloser, error) {
		return pgzip.NewWriter(w), nil
	}},
}

func compressorByKey(key string) (compressor, bool) {
	for _, c := range compressors {
		if c.key == key {
			return c, true
		}
	}
	return compressor{}, false
}

// blob is a compressed layer in the cache: the bytes that are pushed, exactly.
type blob struct {
	Layer      string `json:"layer"`
	Compressor string `json:"compressor"`
	DiffID     string `json:"diffID"`
	Digest     string `json:"digest"`
	Size       int64  `json:"size"`
	Path       string `json:"-"`
}

func compressLayer(ctx context.Context, cache string, l *tarLayer, c compressor) (*blob, error) {
	path := filepath.Join(cache, "layers", l.Name+"."+c.key+".gz")
	meta := path + ".json"
	if raw, err := os.ReadFile(meta); err == nil {
		var b blob
		if json.Unmarshal(raw, &b) == nil && b.DiffID == l.DiffID {
			if fi, err := os.Stat(path); err == nil && fi.Size() == b.Size {
				b.Path = path
				return &b, nil
			}
		}
	}
	_ = os.Remove(meta)
	in, err := os.Open(l.Path)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	out, err := os.Create(path + ".tmp")
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	cw := &iocount.Writer{W: io.MultiWriter(out, h)}
	zw, err := c.wrap(cw)
	if err == nil {
		_, err = io.Copy(zw, ctxReader{ctx, in})
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err != nil {
		os.Remove(path + ".tmp")
		return nil, fmt.Errorf("compressing %s with %s: %w", l.Name, c.key, err)
	}
	b := &blob{Layer: l.Name, Compressor: c.key, DiffID: l.DiffID, Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), Size: cw.N, Path: path}
	raw, _ := json.MarshalIndent(b, "", "  ")
	return b, os.WriteFile(meta, raw, 0o644)
}

// ctxReader stops a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// blobLayer is a v1.Layer whose compressed form is the cached blob, byte for byte: what
// go-containerregistry writes into the manifest and what the benchmark pushes are the bytes this
// benchmark compressed.
type blobLayer struct{ b *blob }

func (l blobLayer) Digest() (v1.Hash, error)            { return v1.NewHash(l.b.Digest) }
func (l blobLayer) DiffID() (v1.Hash, error)            { return v1.NewHash(l.b.DiffID) }
func (l blobLayer) Size() (int64, error)                { return l.b.Size, nil }
func (l blobLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l blobLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.b.Path) }
func (l blobLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.b.Path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return readCloser{zr, func() error { zr.Close(); return f.Close() }}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// image is an OCI image ready to push: its manifest and config as they will be stored, and its
// layers.
type image struct {
	Name           string // "debian-A + go-v1"
	Manifest       []byte
	ManifestDigest string
	Config         []byte
	ConfigDigest   string
	Layers         []*blob
	Size           int64 // manifest + config + layers: one full pull
}

// created is every image's creation time, so that configs do not change from run to run.
var created = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func makeImage(name string, layers []*blob, createdBy []string, cmd []string) (*image, error) {
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(base, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: created},
		Config: v1.Config{
			Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd: cmd,
		},
	})
	if err != nil {
		return nil, err
	}
	var adds []mutate.Addendum
	for i, b := range layers {
		adds = append(adds, mutate.Addendum{Layer: blobLayer{b}, History: v1.History{Created: v1.Time{Time: created}, CreatedBy: createdBy[i]}})
	}
	if img, err = mutate.Append(img, adds...); err != nil {
		return nil, err
	}
	out := &image{Name: name, Layers: layers}
	if out.Manifest, err = img.RawManifest(); err != nil {
		return nil, err
	}
	if out.Config, err = img.RawConfigFile(); err != nil {
		return nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	// The manifest must name exactly the blobs this benchmark compressed.
	if len(m.Layers) != len(layers) {
		return nil, fmt.Errorf("%s: the manifest names %d layers, want %d", name, len(m.Layers), len(layers))
	}
	for i, d := range m.Layers {
		if d.Digest.String() != layers[i].Digest || d.Size != layers[i].Size {
			return nil, fmt.Errorf("%s: manifest layer %d is %s (%d bytes), the blob is %s (%d bytes)", name, i, d.Digest, d.Size, layers[i].Digest, layers[i].Size)
		}
	}
	out.ManifestDigest = sha256Digest(out.Manifest)
	out.ConfigDigest = sha256Digest(out.Config)
	if m.Config.Digest.String() != out.ConfigDigest {
		return nil, errors.New(name + ": the manifest names another config")
	}
	out.Size = int64(len(out.Manifest) + len(out.Config))
	for _, b := range layers {
		out.Size += b.Size
	}
	return out, nil
}

// blobs are the image's config and layers, as (digest, size) pairs.
func (img *image) blobs() map[string]int64 {
	out := map[string]int64{img.ConfigDigest: int64(len(img.Config))}
	for _, b := range img.Layers {
		out[b.Digest] = b.Size
	}
	return out
}

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}
