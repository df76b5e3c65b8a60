package sync_test

import (
	"bytes"
	"io"

	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// staticLayer is a blob of fixed bytes with a media type of our choosing (artifacts' layers).
type staticLayer struct {
	b  []byte
	mt types.MediaType
}

func (l staticLayer) Digest() (ggcrv1.Hash, error) {
	h, _, err := ggcrv1.SHA256(bytes.NewReader(l.b))
	return h, err
}
func (l staticLayer) DiffID() (ggcrv1.Hash, error) { return l.Digest() }
func (l staticLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.b)), nil
}
func (l staticLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }
func (l staticLayer) Size() (int64, error)                 { return int64(len(l.b)), nil }
func (l staticLayer) MediaType() (types.MediaType, error)  { return l.mt, nil }
