package sync

import (
	"context"
	"io"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
)

// Store is the node's local content, as the sync engine needs it. internal/registry implements
// it; app injects it, so that sync and registry do not import each other.
type Store interface {
	// StatBlob reports whether the node holds blob dgst (in any repository) and its size.
	StatBlob(ctx context.Context, dgst digest.Digest) (size int64, ok bool, err error)
	// HasBlob reports whether repo links blob dgst.
	HasBlob(ctx context.Context, repo string, dgst digest.Digest) (bool, error)
	// LinkBlob makes a blob the node holds part of repo: a local mount, no bytes copied.
	LinkBlob(ctx context.Context, repo string, dgst digest.Digest, size int64) error
	// CreateUpload starts an upload session in repo; ResumeUpload reopens one by its ID after
	// a restart. Committing verifies the digest and size of the bytes written.
	CreateUpload(ctx context.Context, repo string) (distribution.BlobWriter, error)
	ResumeUpload(ctx context.Context, repo, id string) (distribution.BlobWriter, error)
	// HasManifest reports whether repo holds manifest dgst.
	HasManifest(ctx context.Context, repo string, dgst digest.Digest) (bool, error)
	// PutManifest stores raw (whose digest is dgst) in repo, then points tag at it when tag is
	// not empty. Everything it references must be stored first.
	PutManifest(ctx context.Context, repo, mediaType string, raw []byte, dgst digest.Digest, tag string) error
	// TagDigest returns the manifest digest tag points at in repo; ok is false without the tag.
	TagDigest(ctx context.Context, repo, tag string) (dgst digest.Digest, ok bool, err error)
	// Tags lists repo's tags (none, without error, for an unknown repository).
	Tags(ctx context.Context, repo string) ([]string, error)
	// Untag removes tag from repo; the manifest stays until garbage collection.
	Untag(ctx context.Context, repo, tag string) error
	// GetManifest returns manifest dgst of repo: its media type and exact bytes.
	GetManifest(ctx context.Context, repo string, dgst digest.Digest) (mediaType string, raw []byte, err error)
	// Pin keeps content stored ahead of the manifest that references it from garbage
	// collection; Unpin releases it once that manifest is stored.
	Pin(ctx context.Context, ds ...digest.Digest) error
	Unpin(ctx context.Context, ds ...digest.Digest) error
	// Repositories lists every repository the node holds.
	Repositories(ctx context.Context) ([]string, error)
	// OpenBlob opens blob dgst of repo for reading.
	OpenBlob(ctx context.Context, repo string, dgst digest.Digest) (io.ReadSeekCloser, int64, error)
}
