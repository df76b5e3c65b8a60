package app

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/outpost-registry/outpost/internal/config"
	"github.com/outpost-registry/outpost/internal/registry"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

func testConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.ShutdownTimeout = 5e9
	return cfg
}

// A second node on the same data directory is refused with a dataDir error, and the directory
// is free again once the first node is closed or has served.
func TestSecondNodeOnSameDataDirFails(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	first, err := New(ctx, cfg, nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(ctx, cfg, config.Sources{"dataDir": "flag --data"}, zap.NewNop())
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Key != "dataDir" || ce.Source != "flag --data" ||
		!strings.Contains(err.Error(), "another outpost process uses this data directory") {
		t.Fatalf("second node on the same data directory: %v", err)
	}
	// Offline tools see the lock too.
	if _, err := LockDataDir(cfg.DataDir); !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("LockDataDir while a node holds it: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	second, err := New(ctx, cfg, nil, zap.NewNop())
	if err != nil {
		t.Fatalf("after the first node closed: %v", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- second.Serve(sctx, ln, nil) }()
	waitForSocket(t, filepath.Join(cfg.DataDir, AdminSocket))
	if _, err := LockDataDir(cfg.DataDir); !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("LockDataDir while a node serves: %v", err)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return")
	}
	lock, err := LockDataDir(cfg.DataDir)
	if err != nil {
		t.Fatalf("after Serve returned: %v", err)
	}
	lock.Release()
	lock.Release()
}

func waitForSocket(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no admin socket at %s", path)
}

func TestAdminGC(t *testing.T) {
	reg, err := registry.New(context.Background(), registry.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	srv := httptest.NewServer(adminHandler(nil, reg, zap.NewNop()))
	t.Cleanup(srv.Close)

	post := func(query string) (int, []byte) {
		t.Helper()
		resp, err := http.Post(srv.URL+"/gc?"+query, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b json.RawMessage
		_ = json.NewDecoder(resp.Body).Decode(&b)
		return resp.StatusCode, b
	}
	code, body := post(GCQuery(registry.GCOptions{DryRun: true, RemoveUntagged: true, Grace: time.Minute}))
	var res registry.GCResult
	if err := json.Unmarshal(body, &res); code != http.StatusOK || err != nil || !res.DryRun || !res.RemoveUntagged {
		t.Fatalf("POST /gc: %d %s", code, body)
	}
	for _, q := range []string{"grace=soon", "dryRun=maybe", "grace=-1s"} {
		code, body := post(q)
		var e acrapi.ErrorResponse
		if code != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || len(e.Errors) != 1 {
			t.Errorf("POST /gc?%s: %d %s", q, code, body)
		}
	}
	resp, err := http.Get(srv.URL + "/gc")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /gc: %d", resp.StatusCode)
	}
}

func TestGCOptionsFromQuery(t *testing.T) {
	opts, err := gcOptionsFromQuery(nil)
	if err != nil || opts.DryRun || opts.RemoveUntagged || opts.Grace != registry.DefaultGCGrace {
		t.Fatalf("defaults: %+v %v", opts, err)
	}
	want := registry.GCOptions{DryRun: true, RemoveUntagged: true, Grace: 90 * time.Minute}
	q, _ := url.ParseQuery(GCQuery(want))
	if got, err := gcOptionsFromQuery(q); err != nil || got != want {
		t.Fatalf("round trip: %+v %v", got, err)
	}
}

type fakeSyncer struct{ states chan string }

func (f fakeSyncer) Status() acrapi.SyncStatus {
	select {
	case s := <-f.states:
		return acrapi.SyncStatus{State: s}
	default:
		return acrapi.SyncStatus{State: "idle"}
	}
}
func (fakeSyncer) Trigger(bool) error { return nil }

func TestScheduledGCWaitsForSyncPass(t *testing.T) {
	s := fakeSyncer{states: make(chan string, 3)}
	s.states <- "syncing"
	s.states <- "syncing"
	if !waitForSyncPass(context.Background(), s, time.Millisecond, zap.NewNop()) {
		t.Fatal("did not proceed once the pass ended")
	}
	if len(s.states) != 0 {
		t.Fatal("did not wait for the pass")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.states <- "syncing"
	if waitForSyncPass(ctx, s, time.Millisecond, zap.NewNop()) {
		t.Fatal("proceeded after its context ended")
	}
	if !waitForSyncPass(context.Background(), nil, time.Millisecond, zap.NewNop()) {
		t.Fatal("a node without sync waits")
	}
}

// sync.gcSchedule runs collections and logs one line per run with its totals. ("@every" is
// accepted by the parser, which saves waiting for a cron minute.)
func TestGCSchedule(t *testing.T) {
	cfg := testConfig(t)
	cfg.Sync.GCSchedule = "@every 1s"
	core, logs := observer.New(zap.InfoLevel)
	n, err := New(context.Background(), cfg, nil, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	stop := n.startGCSchedule(context.Background(), nil)
	deadline := time.Now().Add(10 * time.Second)
	for logs.FilterMessage("garbage collection finished").Len() == 0 {
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("no scheduled collection logged; logs: %v", logs.All())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	entry := logs.FilterMessage("garbage collection finished").All()[0]
	fields := entry.ContextMap()
	if fields["trigger"] != "schedule" || fields["remove_untagged"] != true || fields["grace"] != "PT1H" {
		t.Errorf("log line fields: %v", fields)
	}
	for _, k := range []string{"manifests_deleted", "blob_links_removed", "blobs_deleted", "bytes_freed"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("log line lacks %s: %v", k, fields)
		}
	}
}
