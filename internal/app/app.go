// Package app is the composition root: it wires configuration, logging, metrics, the registry and
// the /acr API into one HTTP server and runs it until its context ends.
package app

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/outpost-registry/outpost/internal/acr"
	"github.com/outpost-registry/outpost/internal/auth"
	"github.com/outpost-registry/outpost/internal/config"
	"github.com/outpost-registry/outpost/internal/controlplane"
	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/internal/delta/recipe"
	"github.com/outpost-registry/outpost/internal/logging"
	"github.com/outpost-registry/outpost/internal/observe"
	"github.com/outpost-registry/outpost/internal/registry"
	syncengine "github.com/outpost-registry/outpost/internal/sync"
	"github.com/outpost-registry/outpost/internal/version"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// controlPlaneOptions are extra options of the control plane; tests lower the bcrypt cost.
var controlPlaneOptions []controlplane.Option

// Node is one running Outpost node.
type Node struct {
	cfg      config.Config
	log      *zap.Logger
	registry *registry.Registry
	metrics  *prometheus.Registry
	handler  http.Handler
	ready    atomic.Bool
	engine   *syncengine.Engine  // nil without a parent
	control  *controlplane.Store // the definitions of connected registries (a replica on a connected one)
	auth     *auth.Authenticator // who may do what, on /v2 and /acr
	deltas   *delta.Service      // the deltas this node computes for its children
	// adminPassword is the admin password generated at this first start, to show once.
	adminPassword string
	storage       *observe.StorageCollector
	src           config.Sources
	setLogLevel   atomic.Pointer[func(zapcore.Level)]
	lastLogLevel  atomic.Value // the parent's log level last applied
	lock          *DataDirLock // the data directory's, held until Serve returns (lock.go)
}

// New checks the data directory, opens the store and builds the node's HTTP handler. Problems
// the operator must fix in the configuration are returned as *config.Error.
func New(ctx context.Context, cfg config.Config, src config.Sources, log *zap.Logger) (_ *Node, err error) {
	if err := checkWritable(cfg.DataDir); err != nil {
		return nil, &config.Error{Key: "dataDir", Source: src["dataDir"], Msg: err.Error()}
	}
	lock, err := lockDataDir(cfg.DataDir, src["dataDir"])
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Release()
		}
	}()
	logging.RouteLogrus(log)
	n := &Node{cfg: cfg, src: src, log: log, metrics: prometheus.NewRegistry(), lock: lock}
	defer func() {
		if err != nil {
			n.closeStores()
		}
	}()
	// Every node holds a control plane: the root its definitions, tokens and admin; a
	// connected registry a replica of what its parent sends about it and the registries below.
	stateDir := filepath.Join(cfg.DataDir, "outpost")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, &config.Error{Key: "dataDir", Source: src["dataDir"], Msg: err.Error()}
	}
	n.control, err = controlplane.Open(filepath.Join(stateDir, "controlplane.db"), controlPlaneOptions...)
	if err != nil {
		return nil, err
	}
	if cfg.HasAdmin() {
		n.adminPassword, err = n.control.EnsureAdmin(cfg.Admin.Password)
		if err != nil {
			return nil, &config.Error{Key: "admin.password", Source: src["admin.password"], Msg: err.Error()}
		}
	}
	if n.auth, err = n.newAuthenticator(log.Named("audit")); err != nil {
		return nil, err
	}
	ropts := registry.Options{DataDir: cfg.DataDir, Log: log.Named("registry"), MirrorNamespaces: cfg.Mirror.Namespaces, Auth: n.auth}
	if cfg.HasParent() {
		ropts.IndexPlatforms = cfg.Sync.Platforms
	}
	reg, err := registry.New(ctx, ropts)
	if err != nil {
		return nil, err
	}
	n.registry = reg
	n.storage = observe.NewStorageCollector(reg.DataDir(), 30*time.Second)
	useLegacyDeflate(log.Named("delta"))
	// Every node can serve its children layers as deltas (they ask; it computes and caches).
	deltas, err := delta.NewService(filepath.Join(reg.DataDir(), "outpost", "delta"), reg, log.Named("delta"),
		deltaLimits(reg.DataDir(), debug.SetMemoryLimit(-1)))
	if err != nil {
		return nil, err
	}
	n.deltas = deltas
	if err := deltas.Register(n.metrics); err != nil {
		return nil, err
	}
	if cfg.HasParent() {
		n.engine, err = n.newEngine(cfg, reg, log.Named("sync"))
		if err != nil {
			return nil, err
		}
		if err := n.engine.Register(n.metrics); err != nil {
			return nil, err
		}
	}

	reg.OnPush(n.clientChanged)

	httpMetrics := observe.NewHTTPMetrics()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		n.storage,
		buildInfo(),
	} {
		if err := n.metrics.Register(c); err != nil {
			return nil, err
		}
	}
	if err := httpMetrics.Register(n.metrics); err != nil {
		return nil, err
	}

	r := mux.NewRouter()
	r.PathPrefix("/v2").Handler(reg.Handler())
	r.PathPrefix("/acr/").Handler(acr.Handler(acr.Options{ControlPlane: n.control, Auth: n.auth, Deltas: deltas, Log: log.Named("acr")}))
	r.Handle("/metrics", promhttp.HandlerFor(n.metrics, promhttp.HandlerOpts{Registry: n.metrics}))
	r.HandleFunc("/healthz", n.healthz)
	r.HandleFunc("/readyz", n.readyz)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acrapi.WriteError(w, http.StatusNotFound, acrapi.CodeNotFound, "no endpoint at "+r.URL.Path)
	})
	n.handler = observe.Middleware(r, routeOf, httpMetrics, log.Named("http"), "healthz", "readyz", "metrics")
	return n, nil
}

// deltaLimits are what a node's delta service may take of its disk and memory (the Go memory
// limit, memoryLimit).
func deltaLimits(dataDir string, memoryLimit int64) delta.Limits {
	return delta.Limits{TarCache: deltaCacheBudget(dataDir),
		PatchMemory: deltaMemory(memoryLimit, patchReserve), WholeMemory: deltaMemory(memoryLimit, wholeReserve)}
}

// deltaCacheBudget bounds the uncompressed layers a node keeps to compute deltas for its
// children: 4 GiB, or a tenth of the free space at start if that is less (an edge node's disk
// holds its images first), but at least 256 MiB.
func deltaCacheBudget(dataDir string) int64 {
	budget := int64(4 << 30)
	if free, ok := diskFree(dataDir); ok {
		budget = min(budget, max(free/10, 256<<20))
	}
	return budget
}

// patchReserve is what a node's memory limit keeps from a delta's binary patches: the rest of
// the delta computation (zstd encoders, the pipeline of blocks: 120–170 MiB measured on real
// layers), serving, and a rebuild of the node's own when it is also a child. wholeReserve is
// what it keeps from the encoder of a whole layer (a first image's), which is all that
// computation holds: serving, and the node's own rebuild.
const (
	patchReserve = 256 << 20
	wholeReserve = 128 << 20
)

// deltaMemory is how much a part of a delta's computation may take under the Go memory limit
// when reserve is kept for the rest: the limit less reserve, at least a byte (0 would mean no
// bound), and no bound without a limit.
func deltaMemory(limit, reserve int64) int64 {
	if limit <= 0 || limit == math.MaxInt64 {
		return 0
	}
	return max(limit-reserve, 1)
}

// routeOf names a request's route for logs and metrics.
func routeOf(r *http.Request) (string, string) {
	switch p := r.URL.Path; {
	case p == "/v2" || strings.HasPrefix(p, "/v2/"):
		return registry.Route(r)
	case strings.HasPrefix(p, "/acr/"):
		return "acr", ""
	case p == "/healthz", p == "/readyz", p == "/metrics":
		return p[1:], ""
	default:
		return "unknown", ""
	}
}

// Handler is the node's whole HTTP surface.
func (n *Node) Handler() http.Handler { return n.handler }

// Registry is the node's content store.
func (n *Node) Registry() *registry.Registry { return n.registry }

func (n *Node) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 while the node serves and its data directory is writable.
func (n *Node) readyz(w http.ResponseWriter, _ *http.Request) {
	if !n.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "stopping"})
		return
	}
	if err := checkWritable(n.cfg.DataDir); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			// A full disk still serves every image it holds: taking the node out of service
			// would stop pulls too. Pushes and syncs fail, and say why, until space is freed.
			writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "warning": "the data directory is full: pushes and syncs fail until space is freed"})
			return
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "storage unavailable", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Listen opens the configured address. An address in use or not permitted is a *config.Error.
func Listen(cfg config.Config, src config.Sources) (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.Addr)
	if err == nil {
		return ln, nil
	}
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		msg = fmt.Sprintf("%s is already in use: stop the other server or choose another address with --addr", cfg.Addr)
	case errors.Is(err, syscall.EACCES):
		msg = fmt.Sprintf("%s needs privileges to listen on: choose a port above 1023 with --addr", cfg.Addr)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		msg = fmt.Sprintf("%s is not an address of this machine: choose one it has, or :PORT for all", cfg.Addr)
	}
	return nil, &config.Error{Key: "addr", Source: src["addr"], Msg: msg}
}

// serverProtocols are the HTTP versions a node serves: HTTP/1.1 for every client, HTTP/2 over TLS
// (ALPN), and HTTP/2 without TLS for clients that start with its preface: children, whose sync
// passes are mostly small requests whose headers HTTP/2 compresses.
func serverProtocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

// Serve serves on ln until ctx ends, then shuts down gracefully: it stops accepting, lets
// in-flight requests finish within the shutdown timeout, and stops the registry's background
// work. It returns nil after a graceful stop.
func (n *Node) Serve(ctx context.Context, ln net.Listener, src config.Sources) error {
	defer n.lock.Release()
	srv := &http.Server{
		Handler:           n.handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(n.log.Named("http")),
		Protocols:         serverProtocols(),
		HTTP2: &http.HTTP2Config{
			// A child pushing up (ReadWrite) over HTTP/2 sends at most a window per round trip:
			// the 1 MiB default caps a 600 ms satellite hop at 1.7 MiB/s, 4 MiB at 6.7. Bounded
			// so, unread bodies cost at most 16 MiB a connection (a socket's buffers are of that
			// order too).
			MaxReceiveBufferPerStream:     4 << 20,
			MaxReceiveBufferPerConnection: 16 << 20,
		},
	}
	if n.cfg.TLSEnabled() {
		certs, err := n.certificates(src)
		if err != nil {
			return err
		}
		srv.TLSConfig = &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	errc := make(chan error, 2)
	var stopErr error // why the node stops by itself, if it does
	go func() { errc <- srv.Serve(ln) }()
	bg, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	var syncer Syncer
	engineDone := make(chan struct{})
	if n.engine != nil {
		syncer = n.engine
		go func() {
			defer close(engineDone)
			// The engine stops by itself only when the parent refuses this node for good.
			if err := n.engine.Run(bg); err != nil {
				errc <- err
			}
		}()
	} else {
		close(engineDone)
	}
	go n.pruneEvents(bg)
	go serveAdmin(bg, n.registry.DataDir(), syncer, n.registry, n.log.Named("admin"))
	stopGC := n.startGCSchedule(bg, syncer)
	defer stopGC()
	scheme := "http"
	if n.cfg.TLSEnabled() {
		scheme = "https"
	}
	n.log.Info("serving", zap.String("addr", ln.Addr().String()), zap.String("scheme", scheme),
		zap.String("data_dir", n.registry.DataDir()), zap.String("version", version.Version))
	n.ready.Store(true)

	select {
	case err := <-errc:
		if !errors.Is(err, syncengine.ErrRefused) {
			n.ready.Store(false)
			n.closeStores()
			return err
		}
		// Refused by the parent: stop serving as for SIGTERM, then report why.
		n.log.Error("the parent refused this node", zap.Error(err))
		stopErr = err
	case <-ctx.Done():
	}
	n.ready.Store(false)
	stopBackground()
	stopGC()
	n.log.Info("shutting down", zap.Duration("timeout", n.cfg.ShutdownTimeout.Std()))
	sctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout.Std())
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		n.log.Warn("in-flight requests did not finish in time; closing them", zap.Error(err))
		_ = srv.Close()
	}
	// The pass in progress stops at once (its context is gone) and keeps its upload sessions
	// for the next start; wait for it so that nothing writes after the stores close.
	select {
	case <-engineDone:
	case <-sctx.Done():
		n.log.Warn("the sync pass did not stop in time")
	}
	if cerr := n.closeStores(); cerr != nil {
		n.log.Warn("stopping the registry", zap.Error(cerr))
	}
	n.log.Info("stopped")
	if stopErr != nil {
		return stopErr
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// checkWritable creates dir if needed and proves it writable with a probe file holding a byte
// (an empty file needs no data block: it would pass on a full disk).
func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%s cannot be created: %v: choose a writable directory with --data", dir, unwrapPath(err))
	}
	f, err := os.CreateTemp(dir, ".outpost-probe-*")
	if err != nil {
		return fmt.Errorf("%s is not writable: %w: choose a writable directory with --data", dir, unwrapPath(err))
	}
	name := f.Name()
	_, werr := f.Write([]byte{0})
	if werr == nil {
		werr = f.Sync()
	}
	f.Close()
	_ = os.Remove(filepath.Clean(name))
	if werr != nil {
		return fmt.Errorf("%s is not writable: %w", dir, unwrapPath(werr))
	}
	return nil
}

// unwrapPath drops the path from a *fs.PathError, which the message names already.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func buildInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "outpost", Name: "build_info",
		Help:        "Always 1; labels name the build.",
		ConstLabels: prometheus.Labels{"version": version.Version, "commit": version.Commit, "goversion": version.GoVersion()},
	})
	g.Set(1)
	return g
}

// newEngine builds the sync engine from the configuration, over the node's store.
func (n *Node) newEngine(cfg config.Config, reg *registry.Registry, log *zap.Logger) (*syncengine.Engine, error) {
	parent := syncengine.ParentOptions{
		URL: cfg.Parent.URL, Username: cfg.Parent.Username, Password: cfg.Parent.Password,
		CAFile: cfg.Parent.CAFile, InsecureSkipVerify: cfg.Parent.InsecureSkipVerify,
	}
	var connected *syncengine.ConnectedOptions
	if cfg.Connected() {
		cs := cfg.ParsedConnectionString()
		parent.URL, parent.Username, parent.Password = cs.URL(), cs.SyncTokenName, cs.SyncTokenPassword
		instance, err := instanceID(reg.DataDir())
		if err != nil {
			return nil, err
		}
		// Until the parent says which mode this registry has, it takes no pushes.
		reg.SetReadOnly("this connected registry has not received its configuration from its parent yet")
		connected = &syncengine.ConnectedOptions{InstanceID: instance, Apply: n.applyParentConfig, Describe: n.describe}
		log.Info("connected registry", zap.String("name", cs.ConnectedRegistryName), zap.String("parent", cs.URL()), zap.String("instance", instance))
	}
	return syncengine.New(syncengine.Options{
		Parent:         parent,
		Connected:      connected,
		Changed:        n.syncChanged,
		Repositories:   cfg.Sync.Repositories,
		TagInclude:     cfg.Sync.Tags.Include,
		TagExclude:     cfg.Sync.Tags.Exclude,
		Platforms:      cfg.Sync.Platforms,
		Referrers:      cfg.Sync.Referrers,
		Schedule:       cfg.Sync.Schedule,
		Window:         cfg.Sync.Window.Std(),
		ChunkSize:      cfg.Sync.ChunkSizeMiB << 20,
		BandwidthKiBps: cfg.Sync.BandwidthKiBps,
		Parallelism:    cfg.Sync.Parallelism,
		StallTimeout:   cfg.Sync.StallTimeout.Std(),
		Delta:          cfg.Sync.Delta,
		StateDir:       filepath.Join(reg.DataDir(), "outpost", "sync"),
		Log:            log,
	}, reg, config.CronParser)
}

// GeneratedAdminPassword is the admin password this first start generated ("" otherwise): the
// caller shows it once, it is stored only hashed.
func (n *Node) GeneratedAdminPassword() string { return n.adminPassword }

// closeStores stops the registry's background work and closes the control plane.
func (n *Node) closeStores() error {
	var err error
	if n.registry != nil {
		err = n.registry.Close()
	}
	if n.control != nil {
		if cerr := n.control.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// useLegacyDeflate sets up the helpers that reproduce layers written with older
// klauspost/compress releases (the podman, buildah and skopeo distributions ship), those
// installed beside the binary; without them those layers travel whole.
func useLegacyDeflate(log *zap.Logger) {
	paths := recipe.FindLegacyHelpers()
	if len(paths) == 0 {
		log.Info("no " + recipe.LegacyHelperName + " beside the binary: layers that podman, buildah or skopeo built with klauspost/compress before v1.18.1 wrote are sent whole, not as deltas")
		return
	}
	if err := recipe.UseLegacyHelpers(paths...); err != nil {
		log.Warn("a legacy deflate helper does not work; layers that need it are sent whole", zap.Error(err))
	}
	log.Info("legacy deflate helpers in use", zap.Strings("paths", recipe.LegacyHelpers()))
}
