package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/atomicfile"
	"github.com/outpost-registry/outpost/internal/cronexpr"
	"github.com/outpost-registry/outpost/internal/duration"
	"github.com/outpost-registry/outpost/internal/version"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// ConnectedOptions make the engine a connected registry under an Outpost parent: at the start
// of every pass it activates with its sync token (the same instance again is fine, another is
// refused) and receives its configuration — repositories, schedule, window, mode, and the
// definitions below it — and after every pass it reports its status. The last configuration is
// kept in the state directory, so that a restart with the parent unreachable goes on as before.
type ConnectedOptions struct {
	// InstanceID names this installation; a second one under the same name is refused.
	InstanceID string
	// Apply receives every configuration (and the kept one at start-up), to apply what is not
	// the engine's: the registry's mode, the definitions the node serves to its own children.
	Apply func(acrapi.ChildConfig)
	// Describe adds to the status report what the engine does not know: storage used, images
	// held, the statuses of the registries below.
	Describe func(*acrapi.StatusReport)
}

// ErrRefused ends Run: the parent refuses this node for good — another instance is active
// under its name — and retrying would not change that.
var ErrRefused = errors.New("the parent refuses this connected registry")

// configFile keeps the last configuration received from the parent.
func (e *Engine) configFile() string { return filepath.Join(e.opts.StateDir, "connected-config.json") }

// initConnected sets up the /acr client and applies the kept configuration, if any.
func (e *Engine) initConnected(link *linkTransport) {
	e.acr = &acrapi.Client{
		BaseURL: e.opts.Parent.URL, Username: e.opts.Parent.Username, Password: e.opts.Parent.Password,
		HTTP: &http.Client{Transport: transport.NewUserAgent(link, version.UserAgent()), Timeout: 2 * time.Minute},
	}
	b, err := os.ReadFile(e.configFile())
	if err != nil {
		return
	}
	var cfg acrapi.ChildConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		e.log.Warn("ignoring the kept configuration", zap.Error(err))
		return
	}
	if err := e.applyConfig(cfg); err != nil {
		e.log.Warn("ignoring the kept configuration", zap.Error(err))
	}
}

// connect activates and applies the configuration the parent answers with. Without an Outpost
// parent it does nothing.
func (e *Engine) connect(ctx context.Context) error {
	if e.connected == nil {
		return nil
	}
	cfg, err := e.acr.Activate(ctx, e.connected.InstanceID)
	e.noteLink(err)
	if err != nil {
		var apiErr *acrapi.APIError
		if errors.As(err, &apiErr) {
			// Only another active instance is final. A 401 is not: a parent that is itself a
			// connected registry learns a new child's token at its own next sync.
			if apiErr.Code == "ALREADY_ACTIVATED" {
				refused := fmt.Errorf("%w: %s", ErrRefused, apiErr.Error())
				e.refused.Store(&refused)
				return refused
			}
			return fmt.Errorf("activating with the parent: %s", apiErr.Error())
		}
		return fmt.Errorf("activating with the parent: %w", err)
	}
	if err := e.applyConfig(cfg); err != nil {
		return fmt.Errorf("the parent's configuration: %w", err)
	}
	if b, err := json.Marshal(cfg); err == nil {
		if err := atomicfile.Write(e.configFile(), b, 0o600); err != nil {
			e.log.Warn("keeping the configuration", zap.Error(err))
		}
	}
	return nil
}

// applyConfig makes the parent's definition of this registry the engine's plan.
func (e *Engine) applyConfig(cfg acrapi.ChildConfig) error {
	r := cfg.Registry
	sched, err := cronexpr.Parse(r.SyncSchedule)
	if err != nil {
		return err
	}
	var window time.Duration
	if r.SyncWindow != "" {
		w, err := duration.Parse(r.SyncWindow)
		if err != nil {
			return err
		}
		window = w.Std()
	}
	old := e.plan()
	e.setPlan(plan{repositories: r.Repositories, schedule: sched, scheduleText: r.SyncSchedule, window: window})
	if old.scheduleText != r.SyncSchedule || old.window != window {
		e.log.Info("sync schedule from the parent", zap.String("schedule", r.SyncSchedule), zap.Duration("window", window))
	}
	if off := r.DeltaSync == acrapi.DeltaDisabled; e.deltaOff.Swap(off) != off {
		e.log.Info("delta sync from the parent", zap.Bool("enabled", !off))
	}
	if e.connected.Apply != nil {
		e.connected.Apply(cfg)
	}
	return nil
}

// reportSyncing tells a connected registry's parent, once per pass and only when the pass has
// something to fetch, that the node is syncing: a long transfer over a slow link shows as
// Syncing, not as the last pass's Online. Quiet passes send nothing more than before. The
// report carries no inventory (that walks the store; the report after the pass has it).
func (e *Engine) reportSyncing(ctx context.Context) {
	if e.connected == nil || !e.pass.syncing.CompareAndSwap(false, true) {
		return
	}
	report := e.statusReport(acrapi.StateSyncing, time.Now().UTC())
	if _, err := e.acr.ReportStatus(ctx, report); err != nil && ctx.Err() == nil {
		e.log.Debug("reporting the sync to the parent failed", zap.Error(err))
	}
}

// statusReport is the node's status in state at now, with what the app adds (Describe).
func (e *Engine) statusReport(state string, now time.Time) acrapi.StatusReport {
	st := acrapi.NodeStatus{ConnectionState: state, Version: version.Version, LastActivityTime: now}
	e.progress.mu.Lock()
	st.LastSyncTime = e.progress.lastSuccess
	e.progress.mu.Unlock()
	report := acrapi.StatusReport{Status: st}
	if e.parentReadsPlatforms.Load() {
		report.Platforms = e.opts.Platforms
	}
	if e.connected.Describe != nil {
		e.connected.Describe(&report)
	}
	return report
}

// reportStatus sends the node's status after a pass, while the link is open.
func (e *Engine) reportStatus(ctx context.Context, pass acrapi.PassSummary) {
	if e.connected == nil || ctx.Err() != nil {
		return
	}
	now := time.Now().UTC()
	state := acrapi.StateOnline
	if pass.Result != "ok" {
		state = acrapi.StateUnhealthy
	}
	report := e.statusReport(state, now)
	if pass.Result != "ok" {
		report.Status.StatusDetails = append(report.Status.StatusDetails, acrapi.StatusDetail{
			Type: "SyncFailed", Code: pass.Result, Description: pass.Error, Timestamp: now,
			CorrelationID: pass.Started.Format("20060102T150405.000Z"),
		})
	}
	inventory, hash := e.describeInventory(ctx, &report)
	ans, err := e.acr.ReportStatus(ctx, report)
	if err == nil {
		e.parentReadsPlatforms.Store(slices.Contains(ans.Reads, acrapi.ReportPlatforms))
	}
	if err == nil && hash != "" {
		e.inventoryMu.Lock()
		if ans.LayersHash == hash {
			e.inventory, e.inventoryHash = inventory, hash
		} else {
			// The parent holds another inventory (it lost ours, or dropped changes to one it
			// did not hold): the next report sends it whole.
			e.inventory, e.inventoryHash = nil, ""
		}
		e.inventoryMu.Unlock()
	}
	if err != nil {
		e.log.Warn("reporting status to the parent failed", zap.Error(err))
	}
}
