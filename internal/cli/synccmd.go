package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpost-registry/outpost/internal/app"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

func newSyncCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "Trigger or inspect the local node's sync with its parent",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}

	now := &cobra.Command{Use: "now", Short: "Start a sync pass now (outside the sync window only with --force)", Args: cobra.NoArgs}
	force := now.Flags().Bool("force", false, "sync even outside the sync window")
	nowCfg := addNodeFlags(now)
	now.RunE = func(cmd *cobra.Command, _ []string) error {
		path := "/sync/now"
		if *force {
			path += "?force=true"
		}
		body, err := adminCall(cmd.Context(), env, nowCfg, http.MethodPost, path)
		if err != nil {
			return err
		}
		var resp map[string]string
		_ = json.Unmarshal(body, &resp)
		_, err = fmt.Fprintln(cmd.OutOrStdout(), resp["status"])
		return err
	}

	status := &cobra.Command{Use: "status", Short: "Show sync state per repository, blobs in flight with progress and ETA, last errors", Args: cobra.NoArgs}
	output := status.Flags().StringP("output", "o", "text", "output format: text or json")
	statusCfg := addNodeFlags(status)
	status.RunE = func(cmd *cobra.Command, _ []string) error {
		if *output != "text" && *output != "json" {
			return usageError{fmt.Errorf("flag -o/--output: %q is not an output format: expected text or json", *output)}
		}
		body, err := adminCall(cmd.Context(), env, statusCfg, http.MethodGet, "/sync/status")
		if err != nil {
			return err
		}
		if *output == "json" {
			_, err = cmd.OutOrStdout().Write(body)
			return err
		}
		var s acrapi.SyncStatus
		if err := json.Unmarshal(body, &s); err != nil {
			return fmt.Errorf("reading the node's status: %w", err)
		}
		return printStatus(cmd.OutOrStdout(), s)
	}
	cmd.AddCommand(now, status)
	return cmd
}

// adminCall sends a request to the local node's admin socket under its data directory.
func adminCall(ctx context.Context, env Env, nc *nodeConfig, method, path string) ([]byte, error) {
	cfg, _, err := nc.load(env)
	if err != nil {
		return nil, err
	}
	return adminRequest(ctx, cfg.DataDir, method, path, 30*time.Second)
}

// adminRequest sends a request to the admin socket under dataDir; timeout 0 means none.
func adminRequest(ctx context.Context, dataDir, method, path string, timeout time.Duration) ([]byte, error) {
	sock := filepath.Join(dataDir, app.AdminSocket)
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://outpost"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no node answers on %s: is `outpost serve` running with this data directory (--data)? (%v)", sock, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 400 {
		var e acrapi.ErrorResponse
		if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
			return nil, errors.New(e.Errors[0].Message)
		}
		return nil, fmt.Errorf("the node answered %s", resp.Status)
	}
	return body, nil
}

func printStatus(w io.Writer, s acrapi.SyncStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "parent:\t%s\n", orDash(s.Parent))
	fmt.Fprintf(tw, "state:\t%s (link %s)\n", s.State, s.Link)
	win := "closed"
	if s.Window.Open {
		win = "open"
		if s.Window.ClosesAt != nil {
			win += " until " + s.Window.ClosesAt.Format(time.RFC3339)
		}
	}
	if s.Window.NextOpen != nil {
		win += ", next " + s.Window.NextOpen.Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "window:\t%s\n", win)
	if s.LastSuccess != nil {
		fmt.Fprintf(tw, "last success:\t%s\n", s.LastSuccess.Format(time.RFC3339))
	}
	if p := s.LastPass; p != nil {
		fmt.Fprintf(tw, "last pass:\t%s, started %s, %s from parent, %d blobs fetched, %d mounted, %d manifests, %d tags removed\n",
			p.Result, p.Started.Format(time.RFC3339), bytesText(p.BytesFromParent), p.BlobsFetched, p.BlobsMounted, p.ManifestsSynced, p.TagsRemoved)
		if p.LayerTransferBytes > 0 {
			fmt.Fprintf(tw, "delta sync:\t%d layers as deltas; %s crossed the link, %s with layer transfer: %s saved (%.1f%%)\n",
				p.DeltaLayers, bytesText(p.BytesFromParent), bytesText(p.LayerTransferBytes), bytesText(p.SavedBytes),
				100*float64(p.SavedBytes)/float64(p.LayerTransferBytes))
		}
		if p.Error != "" {
			fmt.Fprintf(tw, "last error:\t%s\n", p.Error)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Repositories) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REPOSITORY\tSTATE\tLAST SUCCESS\tPENDING\tLAST ERROR")
		for _, r := range s.Repositories {
			last := "-"
			if r.LastSuccess != nil {
				last = r.LastSuccess.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", r.Name, r.State, last, r.ImagesPending, orDash(oneLine(r.LastError)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.InFlight) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "BLOB\tREPOSITORY\tDONE\tTOTAL\tRATE\tETA")
		for _, b := range s.InFlight {
			eta := "-"
			if b.ETASeconds >= 0 {
				eta = (time.Duration(b.ETASeconds) * time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s/s\t%s\n", shortDigest(b.Digest), b.Repository, bytesText(b.Done), bytesText(b.Total), bytesText(int64(b.BytesPerSecond)), eta)
		}
		return tw.Flush()
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return d[:len(d)-len(hex)] + hex[:12]
	}
	return d
}

func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
