// Package registry embeds distribution's registry App for the OCI /v2 API, stores content on disk
// under the data directory, and adds what distribution lacks: the OCI 1.1 referrers API.
package registry

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/atomicfile"
	"github.com/outpost-registry/outpost/internal/auth"
)

// Options configure a Registry.
type Options struct {
	// DataDir is the node's data directory. Registry content lives in DataDir/docker/registry/v2
	// (distribution's layout), Outpost's registry state in DataDir/outpost.
	DataDir string
	Log     *zap.Logger
	// IndexPlatforms, when set (os/arch[/variant]), makes an image index valid when the
	// manifests of these platforms are stored, instead of all of them: a node that mirrors
	// only some platforms stores indexes whose other children it never fetches.
	IndexPlatforms []string
	// MirrorNamespaces maps the upstream registry host that containerd and K3s name in ?ns= to a
	// local repository prefix ("" keeps names); an ns not listed keeps the path as it is.
	MirrorNamespaces map[string]string
	// Auth authenticates and authorises every /v2 request; nil lets every request through
	// (tests and tools that embed the store, never a node).
	Auth *auth.Authenticator
}

// Registry is the node's content store and its /v2 handler.
type Registry struct {
	// app serves /v2. Garbage collection replaces it after deleting content, because its
	// in-memory blob descriptor cache would keep answering for what was deleted.
	app       atomic.Pointer[handlers.App]
	appMu     sync.Mutex // serialises renewing and closing the App
	closed    bool       // under appMu
	appCtx    context.Context
	appConfig func() *configuration.Configuration
	driver    storagedriver.StorageDriver
	namespace distribution.Namespace
	referrers *referrerIndex
	handler   http.Handler
	log       *zap.Logger
	dataDir   string
	// mirrorNamespaces is Options.MirrorNamespaces with lower-case hosts; read-only.
	mirrorNamespaces map[string]string
	auth             *auth.Authenticator

	// maint is the maintenance lock: every write to the store holds it for reading, garbage
	// collection holds it for writing. Reads never take it.
	maint sync.RWMutex
	// readOnly, when set, is the message every push and delete through /v2 is denied with.
	readOnly atomic.Pointer[string]
	onPush   atomic.Pointer[func(Pushed)]
	// aliasTargets memoises blobAliasTarget: a sha512 digest stands for the sha256 of the same
	// bytes, so an answer found once never changes.
	aliasTargets sync.Map // digest.Digest → digest.Digest
	// gcHook, when set (by tests), runs inside CollectGarbage once the lock is held.
	gcHook func(context.Context)
}

// New opens (creating if needed) the store under opts.DataDir and builds the /v2 handler.
func New(ctx context.Context, opts Options) (*Registry, error) {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data directory %q: %w", opts.DataDir, err)
	}
	stateDir := filepath.Join(dataDir, "outpost")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory %q: %w", dataDir, err)
	}
	secret, err := loadOrCreateSecret(filepath.Join(stateDir, "http-secret"))
	if err != nil {
		return nil, err
	}

	appConfig := func() *configuration.Configuration {
		// A fresh value for each App: NewApp writes to the configuration it is given.
		cfg := &configuration.Configuration{
			Storage: configuration.Storage{
				"filesystem": configuration.Parameters{"rootdirectory": dataDir},
				"delete":     configuration.Parameters{"enabled": true},
				"cache":      configuration.Parameters{"blobdescriptor": "inmemory"},
				// Blobs are served by this process: there is no backend to redirect to.
				"redirect": configuration.Parameters{"disable": true},
			},
		}
		// distribution applies these defaults when it parses its YAML; built in code, they are
		// ours to set (a zero catalog limit would refuse every ?n=).
		cfg.Catalog.MaxEntries = maxCatalogEntries
		cfg.Tags.MaxTags = 1000
		cfg.HTTP.Secret = secret
		// Relative Location headers keep clients on the proxy's address behind nginx.
		cfg.HTTP.RelativeURLs = true
		cfg.HTTP.Headers = http.Header{"X-Content-Type-Options": []string{"nosniff"}}
		// Foreign and non-distributable layers (Windows base images) name http(s) URLs that
		// clients fetch them from, as ACR and the OCI spec allow; distribution's default allows
		// none, and refuses such a manifest with a 500. putManifest refuses malformed URLs.
		cfg.Validation.Manifests.URLs.Allow = []string{`(?i)^https?://`}
		if len(opts.IndexPlatforms) > 0 {
			cfg.Validation.Manifests.Indexes.Platforms = "list"
			for _, p := range opts.IndexPlatforms {
				os, rest, _ := strings.Cut(p, "/")
				arch, _, _ := strings.Cut(rest, "/")
				cfg.Validation.Manifests.Indexes.PlatformList = append(cfg.Validation.Manifests.Indexes.PlatformList,
					configuration.Platform{OS: os, Architecture: arch})
			}
		}
		return cfg
	}
	app, err := newApp(ctx, appConfig())
	if err != nil {
		return nil, err
	}

	driver := filesystem.New(filesystem.DriverParameters{RootDirectory: dataDir, MaxThreads: 100})
	ns, err := storage.NewRegistry(ctx, driver, storage.EnableDelete)
	if err != nil {
		_ = app.Shutdown()
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	r := &Registry{
		appCtx:    ctx,
		appConfig: appConfig,
		driver:    driver,
		namespace: ns,
		log:       opts.Log,
		dataDir:   dataDir,

		mirrorNamespaces: normalizeNamespaces(opts.MirrorNamespaces),
		auth:             opts.Auth,
	}
	r.referrers = &referrerIndex{dir: filepath.Join(stateDir, "referrers"), ns: ns, maint: &r.maint}
	r.app.Store(app)
	r.handler = r.wrap()
	return r, nil
}

// newApp builds distribution's App. NewApp reports configuration problems by panicking; they
// are returned as an error.
func newApp(ctx context.Context, cfg *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("starting the embedded registry: %v", p)
		}
	}()
	return handlers.NewApp(ctx, cfg), nil
}

// renewApp replaces the App serving /v2 with a new one, whose caches know nothing yet, and
// stops the old one's background work. Requests in flight on the old App finish there.
func (r *Registry) renewApp() error {
	r.appMu.Lock()
	defer r.appMu.Unlock()
	if r.closed {
		return nil
	}
	app, err := newApp(r.appCtx, r.appConfig())
	if err != nil {
		return err
	}
	return r.app.Swap(app).Shutdown()
}

// Handler serves /v2/ and everything below it.
func (r *Registry) Handler() http.Handler { return r.handler }

// Namespace gives direct access to the stored content, for the sync engine and garbage collection.
func (r *Registry) Namespace() distribution.Namespace { return r.namespace }

// Driver is the storage driver under the store.
func (r *Registry) Driver() storagedriver.StorageDriver { return r.driver }

// DataDir is the absolute data directory.
func (r *Registry) DataDir() string { return r.dataDir }

// Close stops distribution's background work (the upload purger).
func (r *Registry) Close() error {
	r.appMu.Lock()
	defer r.appMu.Unlock()
	r.closed = true
	return r.app.Load().Shutdown()
}

// loadOrCreateSecret keeps distribution's upload-state HMAC secret across restarts, so that an
// upload interrupted by a restart can be resumed by its client instead of started over.
func loadOrCreateSecret(path string) (string, error) {
	secret, err := atomicfile.RandomHex(path, 32, 32)
	if err != nil {
		return "", fmt.Errorf("the upload secret: %w", err)
	}
	return secret, nil
}

// SetReadOnly makes /v2 refuse pushes and deletes with DENIED and message (a ReadOnly connected
// registry), or accept them again when message is empty. The sync engine writes through the
// store, not /v2, and is not affected.
func (r *Registry) SetReadOnly(message string) {
	if message == "" {
		r.readOnly.Store(nil)
		return
	}
	r.readOnly.Store(&message)
}
