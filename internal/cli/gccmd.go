package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outpost-registry/outpost/internal/app"
	"github.com/outpost-registry/outpost/internal/config"
	"github.com/outpost-registry/outpost/internal/duration"
	"github.com/outpost-registry/outpost/internal/logging"
	"github.com/outpost-registry/outpost/internal/registry"
)

func newGCCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete blobs no image needs (and, with --delete-untagged, manifests no tag reaches)",
		Long: `Garbage collection deletes the blobs that no kept manifest references, and with
--delete-untagged the manifests no tag reaches. The children of a tagged index and the referrers
(signatures, SBOMs) of a kept manifest are kept. Whatever was written less than --grace ago is
kept, so that a push in progress finishes.

If a node serves the data directory, it runs the collection (writes wait meanwhile, reads do not);
otherwise this command runs it on the data directory, which it locks.`,
		Args: cobra.NoArgs,
	}
	dryRun := cmd.Flags().Bool("dry-run", false, "report what would be deleted; delete nothing")
	untagged := cmd.Flags().Bool("delete-untagged", false, "also delete manifests no tag reaches")
	grace := cmd.Flags().String("grace", duration.Duration(registry.DefaultGCGrace).String(),
		"keep what was written less than this long ago (ISO 8601, e.g. PT1H)")
	output := cmd.Flags().StringP("output", "o", "text", "output format: text or json")
	nc := addNodeFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *output != "text" && *output != "json" {
			return usageError{fmt.Errorf("flag -o/--output: %q is not an output format: expected text or json", *output)}
		}
		g, err := duration.Parse(*grace)
		if err != nil {
			return usageError{fmt.Errorf("flag --grace: %v", err)}
		}
		cfg, src, err := nc.load(env)
		if err != nil {
			return err
		}
		opts := registry.GCOptions{DryRun: *dryRun, RemoveUntagged: *untagged, Grace: g.Std()}
		res, where, err := collectGarbage(cmd.Context(), env, cfg, src, opts)
		if err != nil {
			return err
		}
		if *output == "json" {
			return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
		}
		return printGC(cmd.OutOrStdout(), res, where)
	}
	return cmd
}

// collectGarbage runs garbage collection in the node that serves cfg.DataDir, or here when none
// does; where says which ("online" or "offline").
func collectGarbage(ctx context.Context, env Env, cfg config.Config, src config.Sources, opts registry.GCOptions) (res registry.GCResult, where string, err error) {
	if fi, err := os.Stat(cfg.DataDir); err != nil || !fi.IsDir() {
		msg := "is not a directory"
		if err != nil {
			msg = "cannot be read: " + unwrapPathError(err).Error()
		}
		return res, "", &config.Error{Key: "dataDir", Source: src["dataDir"],
			Msg: fmt.Sprintf("%s %s: choose the node's data directory with --data", cfg.DataDir, msg)}
	}
	if !isDataDir(cfg.DataDir) {
		return res, "", &config.Error{Key: "dataDir", Source: src["dataDir"],
			Msg: fmt.Sprintf("%s is not an outpost data directory (it has neither docker/ nor outpost/): choose the node's data directory with --data", cfg.DataDir)}
	}
	lock, err := app.LockDataDir(cfg.DataDir)
	if errors.Is(err, app.ErrDataDirInUse) {
		// A node serves this directory: it collects, under its own maintenance lock.
		body, err := adminRequest(ctx, cfg.DataDir, http.MethodPost, "/gc?"+app.GCQuery(opts), 0)
		if err != nil {
			return res, "", fmt.Errorf("another outpost process holds %s: %w", cfg.DataDir, err)
		}
		if err := json.Unmarshal(body, &res); err != nil {
			return res, "", fmt.Errorf("reading the node's answer: %w", err)
		}
		return res, "online", nil
	}
	if err != nil {
		return res, "", err
	}
	defer lock.Release()

	logOut := env.Stderr
	if logOut == nil {
		logOut = io.Discard
	}
	log, err := logging.New(logOut, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return res, "", usageError{err}
	}
	defer func() { _ = log.Sync() }()
	logging.RouteLogrus(log)
	reg, err := registry.New(ctx, registry.Options{DataDir: cfg.DataDir, Log: log.Named("registry")})
	if err != nil {
		return res, "", err
	}
	defer reg.Close()
	res, err = reg.CollectGarbage(ctx, opts)
	if err != nil {
		return res, "", fmt.Errorf("garbage collection: %w", err)
	}
	return res, "offline", nil
}

// isDataDir reports whether dir holds a store or a node's state, so that a mistyped --data is
// not taken for an empty store (and littered with one).
func isDataDir(dir string) bool {
	for _, sub := range []string{"docker", "outpost"} {
		if fi, err := os.Stat(filepath.Join(dir, sub)); err == nil && fi.IsDir() {
			return true
		}
	}
	return false
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func printGC(w io.Writer, res registry.GCResult, where string) error {
	if res.DryRun {
		fmt.Fprintf(w, "dry run (%s): would delete %d manifests, remove %d blob links, delete %d blobs, free %s\n",
			where, res.ManifestsDeleted, res.BlobLinksRemoved, res.BlobsDeleted, bytesText(res.BytesFreed))
	} else {
		fmt.Fprintf(w, "garbage collection (%s): deleted %d manifests, removed %d blob links, deleted %d blobs, freed %s\n",
			where, res.ManifestsDeleted, res.BlobLinksRemoved, res.BlobsDeleted, bytesText(res.BytesFreed))
	}
	if len(res.Manifests)+len(res.BlobLinks)+len(res.Blobs) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, m := range res.Manifests {
		fmt.Fprintf(tw, "manifest\t%s@%s\t\n", m.Repository, m.Digest)
	}
	for _, l := range res.BlobLinks {
		fmt.Fprintf(tw, "blob link\t%s@%s\t\n", l.Repository, l.Digest)
	}
	for _, b := range res.Blobs {
		fmt.Fprintf(tw, "blob\t%s\t%s\n", b.Digest, bytesText(b.Size))
	}
	return tw.Flush()
}
