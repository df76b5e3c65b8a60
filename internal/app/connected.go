package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/atomicfile"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// instanceID names this installation of a connected registry, kept in the data directory: the
// same node restarting is the same instance; another node under the same name is not.
func instanceID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "outpost", "instance-id")
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading the instance id: %w", err)
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw)
	if err := atomicfile.Write(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing the instance id: %w", err)
	}
	return id, nil
}

// applyParentConfig applies what the parent defines for this node beyond what to sync.
func (n *Node) applyParentConfig(cfg acrapi.ChildConfig) {
	if err := n.control.ApplyReplica(cfg.Descendants, cfg.SyncTokens); err != nil {
		n.log.Error("applying the definitions below this node", zap.Error(err))
	}
	if cfg.Registry.Mode == acrapi.ModeReadWrite {
		n.registry.SetReadOnly("")
	} else {
		n.registry.SetReadOnly(fmt.Sprintf("%s is a ReadOnly connected registry: push to its parent instead", cfg.Registry.Name))
	}
}

// describe adds the node's storage and images to its status report, and relays the statuses
// of the registries below it.
func (n *Node) describe(r *acrapi.StatusReport) {
	used, _ := n.storage.Used()
	r.Status.StorageUsedBytes = used
	images, err := n.registry.CountImages(context.Background())
	if err != nil {
		n.log.Warn("counting images for the status report", zap.Error(err))
	}
	r.Status.ImagesHeld = images
	if r.Descendants, err = n.control.Statuses(); err != nil {
		n.log.Warn("reading the statuses below this node", zap.Error(err))
	}
}
