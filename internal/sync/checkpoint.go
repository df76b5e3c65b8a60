package sync

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/outpost-registry/outpost/internal/atomicfile"
)

// checkpoint is the durable record of a blob being fetched: which upload session holds its
// bytes. With it, a restart resumes from the last stored byte instead of from zero.
type checkpoint struct {
	Digest   digest.Digest `json:"digest"`
	Repo     string        `json:"repository"`
	UploadID string        `json:"uploadID"`
}

// checkpoints stores one small file per blob in flight under dir.
type checkpoints struct{ dir string }

func (c checkpoints) path(d digest.Digest) string {
	return filepath.Join(c.dir, d.Algorithm().String()+"-"+d.Encoded()+".json")
}

// load returns the checkpoint of d, or ok=false. A torn file counts as none.
func (c checkpoints) load(d digest.Digest) (checkpoint, bool) {
	b, err := os.ReadFile(c.path(d))
	if err != nil {
		return checkpoint{}, false
	}
	var cp checkpoint
	if json.Unmarshal(b, &cp) != nil || cp.Digest != d || cp.UploadID == "" || cp.Repo == "" {
		return checkpoint{}, false
	}
	return cp, true
}

// save writes cp so that a crash leaves either the old record or the new one.
func (c checkpoints) save(cp checkpoint) error {
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	return atomicfile.Write(c.path(cp.Digest), b, 0o600)
}

func (c checkpoints) remove(d digest.Digest) error {
	if err := os.Remove(c.path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
