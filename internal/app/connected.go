package app

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/outpost-registry/outpost/internal/atomicfile"
	"github.com/outpost-registry/outpost/internal/registry"
	"github.com/outpost-registry/outpost/internal/repopattern"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// instanceID names this installation of a connected registry, kept in the data directory: the
// same node restarting is the same instance; another node under the same name is not.
func instanceID(dataDir string) (string, error) {
	id, err := atomicfile.RandomHex(filepath.Join(dataDir, "outpost", "instance-id"), 16, 1)
	if err != nil {
		return "", fmt.Errorf("the instance id: %w", err)
	}
	return id, nil
}

// applyParentConfig applies what the parent defines for this node beyond what to sync.
func (n *Node) applyParentConfig(cfg acrapi.ChildConfig) {
	n.applyLogLevel(cfg.Registry.LogLevel)
	n.applyDefinitions(cfg)
	if cfg.Registry.Mode == acrapi.ModeReadWrite {
		n.registry.SetReadOnly("")
	} else {
		n.registry.SetReadOnly(fmt.Sprintf("%s is a ReadOnly connected registry: push to its parent instead", cfg.Registry.Name))
	}
}

// applyDefinitions keeps the definitions below this node as the parent sent them, and drops
// the inventories of layers reported by registries no longer among them (deleted at the root).
func (n *Node) applyDefinitions(cfg acrapi.ChildConfig) {
	if err := n.control.ApplyReplica(cfg); err != nil {
		n.log.Error("applying the definitions below this node", zap.Error(err))
		return
	}
	names := make([]string, 0, len(cfg.Descendants))
	for _, d := range cfg.Descendants {
		names = append(names, d.Name)
	}
	if err := n.deltas.KeepInventories(names); err != nil {
		n.log.Warn("removing the inventories of layers of deleted connected registries failed", zap.Error(err))
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

// clientChanged logs a client's push or delete for this node's children and prepares the
// deltas they will ask for, and queues a push on a connected (hence ReadWrite: ReadOnly
// refuses pushes) registry for its parent.
func (n *Node) clientChanged(p registry.Pushed) {
	e := acrapi.Event{Repository: p.Repository, Tag: p.Tag, Digest: p.Digest.String(), Action: acrapi.EventPush}
	switch {
	case p.Deleted && p.Tag != "":
		e.Action, e.Digest = acrapi.EventUntag, ""
	case p.Deleted:
		e.Action = acrapi.EventDelete
	case p.Tag == "" && !p.Referrer:
		return // pushed by digest: the tagged manifest that references it makes the event
	}
	n.appendEvent(e)
	if e.Action == acrapi.EventPush && !p.Referrer {
		n.deltas.Prepare(p.Repository, p.Digest, n.deltaChild(p.Repository))
	}
	if n.engine != nil {
		n.engine.StoreChanged()
	}
	if n.engine != nil && n.cfg.Connected() && !p.Deleted {
		if err := n.engine.Enqueue(p.Repository, p.Tag, p.Digest); err != nil {
			n.log.Error("queueing a push for the parent failed", zap.String("repository", p.Repository), zap.String("tag", p.Tag), zap.Error(err))
		}
	}
}

// deltaChild says whether a connected registry that reported an inventory is still a child to
// prepare deltas of repo for: defined here, active, syncing repo, with delta sync on; nil on a
// node that defines none.
func (n *Node) deltaChild(repo string) func(registry string) bool {
	if n.control == nil {
		return nil
	}
	if crs, err := n.control.List(); err == nil && len(crs) == 0 {
		return nil // no connected registries (a mirror, a lone node): nothing to prepare
	}
	return func(name string) bool {
		cr, err := n.control.Get(name)
		return err == nil && cr.ActivationStatus == acrapi.ActivationActive && cr.DeltaSync != acrapi.DeltaDisabled &&
			repopattern.MatchAny(cr.Repositories, repo)
	}
}

// syncChanged logs a tag the sync engine stored or removed, for this node's children, and
// prepares the deltas they will ask for.
func (n *Node) syncChanged(repo, tag string, d digest.Digest, action string) {
	if action == acrapi.EventPush && d != "" {
		n.deltas.Prepare(repo, d, n.deltaChild(repo)) // for this node's own children
	}
	if n.control == nil {
		return
	}
	e := acrapi.Event{Repository: repo, Tag: tag, Action: action}
	if d != "" {
		e.Digest = d.String()
	}
	n.appendEvent(e)
}

func (n *Node) appendEvent(e acrapi.Event) {
	if err := n.control.AppendEvent(e); err != nil {
		n.log.Error("logging an event for the children failed", zap.String("repository", e.Repository), zap.Error(err))
	}
}

// pruneEvents drops, every ten minutes, events older than the longest message TTL of the
// registries this node serves (P2D when it serves none).
func (n *Node) pruneEvents(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		ttl, err := n.control.LongestMessageTTL()
		if err != nil {
			n.log.Warn("reading message TTLs", zap.Error(err))
		} else if dropped, err := n.control.PruneEvents(ttl); err != nil {
			n.log.Warn("pruning the event log", zap.Error(err))
		} else if dropped > 0 {
			n.log.Info("event log pruned", zap.Int("events", dropped), zap.Duration("ttl", ttl))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// parentLogLevels maps a connected registry's log levels to the node's.
var parentLogLevels = map[string]zapcore.Level{
	"Debug": zapcore.DebugLevel, "Information": zapcore.InfoLevel, "Warning": zapcore.WarnLevel,
	"Error": zapcore.ErrorLevel, "None": zapcore.FatalLevel, // nothing is logged at fatal
}

// OnLogLevel is how the node changes its log level when its parent defines one.
func (n *Node) OnLogLevel(set func(zapcore.Level)) { n.setLogLevel.Store(&set) }

// applyLogLevel takes the parent's log level, unless the operator set log.level on the node.
func (n *Node) applyLogLevel(parentLevel string) {
	set := n.setLogLevel.Load()
	lvl, ok := parentLogLevels[parentLevel]
	if set == nil || !ok || n.src["log.level"] != "" {
		return
	}
	if n.lastLogLevel.Swap(parentLevel) != parentLevel {
		n.log.Info("log level from the parent", zap.String("level", parentLevel))
		(*set)(lvl)
	}
}
