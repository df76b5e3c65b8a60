package cli

import (
	"fmt"
	"math"
	"os"
	"strconv"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/outpost-registry/outpost/internal/app"
	"github.com/outpost-registry/outpost/internal/logging"
)

func newServe(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a node: the OCI registry on /v2, the connected-registry API on /acr, /metrics, /healthz and /readyz",
		Args:  cobra.NoArgs,
	}
	nc := addNodeFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, src, err := nc.load(env)
		if err != nil {
			return err
		}
		if err := checkMemoryEnv(env.Environ); err != nil {
			return usageError{err}
		}
		logOut := env.Stderr
		if logOut == nil {
			logOut = os.Stderr
		}
		log, level, err := logging.NewAdjustable(logOut, cfg.Log.Level, cfg.Log.Format)
		if err != nil {
			return usageError{err}
		}
		defer func() { _ = log.Sync() }()
		// Before the node is made (its delta service sizes patches to the limit); logged once it
		// is, so that a configuration error stays the only line on stderr.
		memLimit, memErr := setMemoryLimit()

		// Listen first: an address in use stops the node before it touches its data.
		ln, err := app.Listen(cfg, src)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		node, err := app.New(ctx, cfg, src, log)
		if err != nil {
			ln.Close()
			return err
		}
		node.OnLogLevel(func(l zapcore.Level) { logging.SetLevel(level, l) })
		logMemoryLimit(log, memLimit, memErr)
		if pw := node.GeneratedAdminPassword(); pw != "" {
			// Shown once, outside the structured log; only its hash is stored.
			fmt.Fprintf(logOut, "outpost: generated the admin password (shown only now; set admin.password or OUTPOST_ADMIN_PASSWORD before the first start to choose it): %s\n", pw)
		}
		return node.Serve(ctx, ln, src)
	}
	return cmd
}

// setMemoryLimit sets the Go runtime's soft memory limit to 90% of the container's (its cgroup's
// memory limit) or else of the machine's memory, as a container's limit is a hard one: the
// collector then works harder near it instead of letting the heap grow to twice what is live,
// and the node's delta computations size their binary patches to it. GOMEMLIMIT, when set,
// wins; AUTOMEMLIMIT=off leaves the runtime's default (no limit).
func setMemoryLimit() (int64, error) {
	return memlimit.Set(memlimit.WithRatio(0.9),
		memlimit.WithProvider(memlimit.ApplyFallback(memlimit.FromCgroup, memlimit.FromSystem)))
}

// checkMemoryEnv refuses an AUTOMEMLIMIT that setMemoryLimit cannot use, which would otherwise
// leave the node running without the limit its operator meant to set.
func checkMemoryEnv(environ []string) error {
	v, ok := lookupEnv(environ, "AUTOMEMLIMIT")
	if !ok || v == "off" {
		return nil
	}
	if r, err := strconv.ParseFloat(v, 64); err != nil || !(r > 0 && r <= 1) {
		return fmt.Errorf("environment variable AUTOMEMLIMIT: %q is not a ratio of the container's memory: expected a number in (0, 1], such as 0.9, or off", v)
	}
	return nil
}

func logMemoryLimit(log *zap.Logger, limit int64, err error) {
	switch {
	case err != nil:
		log.Warn("the memory limit could not be read; the Go runtime runs without one", zap.Error(err))
	case limit == math.MaxInt64:
		log.Info("no memory limit")
	default:
		log.Info("memory limit", zap.Int64("go_memory_limit_bytes", limit))
	}
}
