package sync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-registry/outpost/internal/acr"
	"github.com/outpost-registry/outpost/internal/auth"
	"github.com/outpost-registry/outpost/internal/controlplane"
	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/internal/registry"
	"github.com/outpost-registry/outpost/internal/sync"
	"github.com/outpost-registry/outpost/pkg/acrapi"
	"github.com/outpost-registry/outpost/test/faultnet"
)

// root is an Outpost root in one process: its registry on /v2 and the control plane on /acr.
type root struct {
	*node
	cp     *controlplane.Store
	deltas *delta.Service // every Outpost node serves deltas
	// observe, when set, sees every /acr request before it is served (its body unread).
	observe func(*http.Request)
	// v2, and v2Faults when set, serve /v2.
	v2       http.Handler
	v2Faults atomic.Pointer[faultnet.HTTPFaults]
	// acr serves /acr (once the first request has built it), behind acrFaults when set.
	acr       http.Handler
	acrFaults atomic.Pointer[faultnet.HTTPFaults]
}

// faultV2 puts faults in front of the root's /v2 API.
func (r *root) faultV2(rules ...faultnet.Rule) []*faultnet.RuleHandle {
	f := faultnet.NewHTTPFaults(r.v2)
	var hs []*faultnet.RuleHandle
	for _, rule := range rules {
		hs = append(hs, f.Add(rule))
	}
	r.v2Faults.Store(f)
	return hs
}

func newRoot(t *testing.T) *root {
	t.Helper()
	cp, err := controlplane.Open(filepath.Join(t.TempDir(), "cp.db"), controlplane.WithPasswordCost(bcrypt.MinCost))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	rt := &root{cp: cp}
	var once gosync.Once
	rt.node = newNode(t, func(v2 http.Handler) http.Handler {
		r := mux.NewRouter()
		r.PathPrefix("/acr/").Handler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			once.Do(func() { // the delta service reads the root's store, there once newNode returns
				deltas, err := delta.NewService(filepath.Join(t.TempDir(), "delta"), rt.node.reg, zaptest.NewLogger(t), delta.Limits{})
				if err != nil {
					t.Error(err)
				}
				rt.deltas = deltas
				rt.acr = acr.Handler(acr.Options{ControlPlane: cp, Deltas: deltas, Log: zaptest.NewLogger(t)})
			})
			if rt.observe != nil {
				rt.observe(req)
			}
			if f := rt.acrFaults.Load(); f != nil {
				f.ServeHTTP(w, req)
				return
			}
			rt.acr.ServeHTTP(w, req)
		}))
		rt.v2 = v2
		r.PathPrefix("/v2").Handler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if f := rt.v2Faults.Load(); f != nil {
				f.ServeHTTP(w, req)
				return
			}
			v2.ServeHTTP(w, req)
		}))
		return r
	})
	return rt
}

// faultACR puts faults in front of the root's /acr API (behind observe).
func (r *root) faultACR(rules ...faultnet.Rule) []*faultnet.RuleHandle {
	f := faultnet.NewHTTPFaults(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { r.acr.ServeHTTP(w, req) }))
	var hs []*faultnet.RuleHandle
	for _, rule := range rules {
		hs = append(hs, f.Add(rule))
	}
	r.acrFaults.Store(f)
	return hs
}

// observeStatus has fn see every status report the root receives.
func (r *root) observeStatus(fn func(acrapi.StatusReport)) {
	r.observe = func(req *http.Request) {
		if req.URL.Path != "/acr/v1/status" {
			return
		}
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(b))
		var rep acrapi.StatusReport
		_ = json.Unmarshal(b, &rep)
		fn(rep)
	}
}

// define creates a connected registry at the root and returns the engine options of a node
// activated with its connection string.
func (r *root) define(t *testing.T, spec acrapi.ConnectedRegistrySpec) (sync.Options, *appliedConfigs) {
	t.Helper()
	if _, err := r.cp.Create(spec); err != nil {
		t.Fatal(err)
	}
	token, password, err := r.cp.GeneratePassword(spec.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	opts := engineOptions(t, r.srv.URL)
	opts.Parent.Username, opts.Parent.Password = token, password
	applied := &appliedConfigs{}
	opts.Connected = &sync.ConnectedOptions{InstanceID: "instance-" + spec.Name, Apply: applied.add}
	return opts, applied
}

type appliedConfigs struct{ last []acrapi.ChildConfig }

func (a *appliedConfigs) add(c acrapi.ChildConfig) { a.last = append(a.last, c) }

func TestConnectedRegistryFollowsItsParent(t *testing.T) {
	root := newRoot(t)
	root.push(t, "team/app:v1", randomImage(t, 2048, 1))
	root.push(t, "team/web:v1", randomImage(t, 2048, 1))
	root.push(t, "other/x:v1", randomImage(t, 1024, 1))

	opts, applied := root.define(t, acrapi.ConnectedRegistrySpec{Name: "siteA01", Mode: acrapi.ModeReadOnly, Repositories: []string{"team/app"}})
	var statesMu gosync.Mutex
	var states []string // the states the node reported, in order
	root.observeStatus(func(rep acrapi.StatusReport) {
		statesMu.Lock()
		states = append(states, rep.Status.ConnectionState)
		statesMu.Unlock()
	})
	child := newNode(t, nil)
	e := newEngine(t, opts, child)
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, root.node, child, "team/app:v1")
	if child.digestOf(t, "team/web:v1") != "" || child.digestOf(t, "other/x:v1") != "" {
		t.Fatal("synced repositories the parent did not define for this registry")
	}
	if len(applied.last) != 1 || applied.last[0].Registry.Mode != acrapi.ModeReadOnly {
		t.Fatalf("configuration applied: %+v", applied.last)
	}
	cr, _ := root.cp.Get("siteA01")
	if cr.ActivationStatus != "Active" || cr.ConnectionState != acrapi.StateOnline || cr.Status == nil || cr.LastSyncTime == nil {
		t.Fatalf("the root's view after a pass: %+v", cr)
	}
	// A pass that fetches says so when it starts fetching, then reports how it ended; a
	// quiet pass only the latter.
	if s := e.RunPass(context.Background(), true); s.Result != "ok" || s.BlobsFetched != 0 {
		t.Fatalf("quiet pass: %+v", s)
	}
	statesMu.Lock()
	if want := []string{acrapi.StateSyncing, acrapi.StateOnline, acrapi.StateOnline}; !slices.Equal(states, want) {
		t.Errorf("states reported %v, want %v", states, want)
	}
	statesMu.Unlock()
	root.observe = nil

	// A change at the root reaches the node on its next pass.
	w := "PT2H"
	if _, err := root.cp.Update("siteA01", acrapi.ConnectedRegistryUpdate{AddRepositories: []string{"team/web"}, SyncWindow: &w}); err != nil {
		t.Fatal(err)
	}
	if s := e.RunPass(context.Background(), true); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, root.node, child, "team/web:v1")
	if got := applied.last[len(applied.last)-1].Registry.SyncWindow; got != "PT2H" {
		t.Fatalf("window %q not applied", got)
	}

	// Another instance under the same name is refused, for good.
	opts2 := opts
	opts2.StateDir = t.TempDir()
	opts2.Connected = &sync.ConnectedOptions{InstanceID: "another-instance"}
	e2 := newEngine(t, opts2, newNode(t, nil))
	s := e2.RunPass(context.Background(), true)
	if s.Result != "failed" || !strings.Contains(s.Error, "ALREADY_ACTIVATED") {
		t.Fatalf("second instance: %+v", s)
	}
	if err := e2.Run(context.Background()); !errors.Is(err, sync.ErrRefused) {
		t.Fatalf("Run of a refused node returned %v", err)
	}
	// After deactivate it may take over.
	if err := root.cp.Deactivate("siteA01"); err != nil {
		t.Fatal(err)
	}
	if s := newEngine(t, opts2, newNode(t, nil)).RunPass(context.Background(), true); s.Result != "ok" {
		t.Fatalf("after deactivate: %+v", s)
	}
}

func TestConnectedRegistryKeepsItsConfigurationOffline(t *testing.T) {
	root := newRoot(t)
	root.push(t, "team/app:v1", randomImage(t, 1024, 1))
	opts, _ := root.define(t, acrapi.ConnectedRegistrySpec{Name: "siteB01", Mode: acrapi.ModeReadWrite, Repositories: []string{"team/*"}, SyncSchedule: "*/5 * * * *"})
	child := newNode(t, nil)
	if s := newEngine(t, opts, child).RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	// A restart while the parent is down applies the kept configuration at once.
	root.srv.Close()
	applied := &appliedConfigs{}
	opts.Connected = &sync.ConnectedOptions{InstanceID: "instance-siteB01", Apply: applied.add}
	e := newEngine(t, opts, child)
	if len(applied.last) != 1 || applied.last[0].Registry.Mode != acrapi.ModeReadWrite || applied.last[0].Registry.SyncSchedule != "*/5 * * * *" {
		t.Fatalf("kept configuration not applied at start-up: %+v", applied.last)
	}
	if s := e.RunPass(context.Background(), true); s.Result != "failed" {
		t.Fatalf("pass with the parent down: %+v", s)
	}
	if st := e.Status(); st.Link != "down" {
		t.Fatalf("link %q with the parent down", st.Link)
	}
	if child.digestOf(t, "team/app:v1") == "" {
		t.Fatal("team/app:v1 no longer served while the parent is down")
	}
}

// TestNestedConnectedRegistries: root → L1 → L2, with L1 serving L2 from its replica of the
// definitions below it; L2's status reaches the root through L1.
func TestNestedConnectedRegistries(t *testing.T) {
	root := newRoot(t)
	root.push(t, "team/app:v1", randomImage(t, 2048, 1))
	l1Opts, _ := root.define(t, acrapi.ConnectedRegistrySpec{Name: "gatewayL1", Mode: acrapi.ModeReadWrite, Repositories: []string{"team/**"}})
	if _, err := root.cp.Create(acrapi.ConnectedRegistrySpec{Name: "lineL2", Parent: "gatewayL1", Repositories: []string{"team/app"}}); err != nil {
		t.Fatal(err)
	}
	l2Token, l2Password, err := root.cp.GeneratePassword("lineL2", 1)
	if err != nil {
		t.Fatal(err)
	}

	// L1: a registry with a replica control plane on /acr, as the app wires it.
	replica, err := controlplane.Open(filepath.Join(t.TempDir(), "replica.db"), controlplane.WithPasswordCost(bcrypt.MinCost))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { replica.Close() })
	l1Auth, err := auth.New(auth.Options{Verifier: acr.NewConnectedVerifier(replica, acrapi.ConnectionString{
		ConnectedRegistryName: "gatewayL1", SyncTokenName: l1Opts.Parent.Username, SyncTokenPassword: l1Opts.Parent.Password})})
	if err != nil {
		t.Fatal(err)
	}
	acrL1 := acr.Handler(acr.Options{ControlPlane: replica, Auth: l1Auth, Log: zaptest.NewLogger(t)})
	l1 := newNode(t, func(v2 http.Handler) http.Handler {
		r := mux.NewRouter()
		r.PathPrefix("/acr/").Handler(acrL1)
		r.PathPrefix("/v2").Handler(v2)
		return r
	})
	l1Opts.Connected = &sync.ConnectedOptions{
		InstanceID: "l1",
		Apply: func(c acrapi.ChildConfig) {
			if err := replica.ApplyReplica(c); err != nil {
				t.Errorf("replica: %v", err)
			}
		},
		Describe: func(r *acrapi.StatusReport) { r.Descendants, _ = replica.Statuses() },
	}
	e1 := newEngine(t, l1Opts, l1)

	// L2 under L1.
	l2Opts := engineOptions(t, l1.srv.URL)
	l2Opts.Parent.Username, l2Opts.Parent.Password = l2Token, l2Password
	l2Opts.Connected = &sync.ConnectedOptions{InstanceID: "l2"}
	l2 := newNode(t, nil)
	e2 := newEngine(t, l2Opts, l2)

	if s := e1.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("L1 pass: %+v", s)
	}
	if s := e2.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("L2 pass: %+v", s)
	}
	requireSame(t, root.node, l2, "team/app:v1")
	if s := e1.RunPass(context.Background(), false); s.Result != "ok" { // relays L2's status
		t.Fatalf("L1 pass: %+v", s)
	}
	cr, err := root.cp.Get("lineL2")
	if err != nil {
		t.Fatal(err)
	}
	if cr.ActivationStatus != "Active" || cr.ConnectionState != acrapi.StateOnline || cr.Status == nil {
		t.Fatalf("L2 at the root: %+v", cr)
	}

	// L2 keeps authenticating at L1 while the root is down.
	root.srv.Close()
	if s := e2.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("L2 pass with the root down: %+v", s)
	}
}

// TestOutboxChunkAnswerLost: a chunk the parent stored but whose answer was lost, and then a
// failed status request, leave the node with a stale upload state; the parent answers the
// next chunk with 416, and the node asks where the upload got to and goes on from there.
func TestOutboxChunkAnswerLost(t *testing.T) {
	root := newRoot(t)
	opts, _ := root.define(t, acrapi.ConnectedRegistrySpec{Name: "gatewayRW2", Mode: acrapi.ModeReadWrite, Repositories: []string{"edge/**"}})
	opts.ChunkSize = 256 << 10
	uploads := regexp.MustCompile(`/blobs/uploads/.+`)
	rules := root.faultV2(
		faultnet.Rule{Method: http.MethodPatch, Path: uploads, Skip: 1, Times: 1, Action: faultnet.LoseResponse()},
		faultnet.Rule{Method: http.MethodGet, Path: uploads, Times: 1, Action: faultnet.Status(http.StatusInternalServerError)},
	)
	child := newNode(t, nil)
	e := newEngine(t, opts, child)
	child.reg.OnPush(func(p registry.Pushed) {
		if err := e.Enqueue(p.Repository, p.Tag, p.Digest); err != nil {
			t.Error(err)
		}
	})
	child.push(t, "edge/camera:v1", randomImage(t, 1<<20, 1))
	if s := e.RunPass(context.Background(), true); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, child, root.node, "edge/camera:v1")
	for i, r := range rules {
		if r.Applied() != 1 {
			t.Errorf("fault %d applied %d times, want once", i, r.Applied())
		}
	}
}

// TestReadWriteOutboxPushesUp: an image pushed to a ReadWrite connected registry reaches the
// root during the next pass, over a link that resets, and is not removed locally meanwhile.
func TestReadWriteOutboxPushesUp(t *testing.T) {
	root := newRoot(t)
	opts, _ := root.define(t, acrapi.ConnectedRegistrySpec{Name: "gatewayRW", Mode: acrapi.ModeReadWrite, Repositories: []string{"edge/**"}})
	link, err := faultnet.NewProxy(root.host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	opts.Parent.URL = link.URL()
	child := newNode(t, nil)
	e := newEngine(t, opts, child)
	child.reg.OnPush(func(p registry.Pushed) {
		if err := e.Enqueue(p.Repository, p.Tag, p.Digest); err != nil {
			t.Error(err)
		}
	})
	img := randomImage(t, 3<<20, 2)
	child.push(t, "edge/camera:v1", img)

	// A first pass whose link is down: the image stays queued and stays local.
	link.Down()
	if s := e.RunPass(context.Background(), true); s.Result == "ok" {
		t.Fatalf("pass with the link down: %+v", s)
	}
	if child.digestOf(t, "edge/camera:v1") == "" {
		t.Fatal("a queued local push was removed")
	}
	// Then a link that resets every connection once 2.5 MiB have gone up: the push asks the
	// parent how far it got and resumes from there.
	link.Up()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if link.WaitBytes(ctx, faultnet.Upstream, 2560<<10) == nil {
			link.ResetAll()
		}
	}()
	if s := e.RunPass(context.Background(), true); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, child, root.node, "edge/camera:v1")
	if st := link.Stats(); st.Resets == 0 || st.BytesUp > 7<<20 {
		t.Fatalf("%d resets, %d bytes sent up for a 6 MiB image (at most one 256 KiB chunk again per reset)", st.Resets, st.BytesUp)
	}
	// The next pass finds it on the parent: nothing is pushed or removed.
	if s := e.RunPass(context.Background(), true); s.Result != "ok" || s.TagsRemoved != 0 {
		t.Fatalf("pass after the push: %+v", s)
	}
	requireSame(t, child, root.node, "edge/camera:v1")
}

// TestReadWriteOutboxKeepsSHA512Names: an image pushed at the edge by sha512 digests goes up
// tagged, and the parent serves its manifest by that digest too, as the child does.
func TestReadWriteOutboxKeepsSHA512Names(t *testing.T) {
	ctx := context.Background()
	root := newRoot(t)
	e, img := queueSHA512Image(t, root, "gatewayRW512")
	if s := e.RunPass(ctx, true); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	if _, ok, err := root.node.reg.TagDigest(ctx, "edge/sensor", "v1"); err != nil || !ok {
		t.Fatalf("edge/sensor:v1 on the parent: %t, %v", ok, err)
	}
	if _, got, err := root.node.reg.GetManifest(ctx, "edge/sensor", img.manifest); err != nil || !bytes.Equal(got, img.raw) {
		t.Fatalf("edge/sensor@%s on the parent: %v", img.manifest, err)
	}
	for _, b := range [][]byte{img.config, img.layer} {
		rc, _, err := root.node.reg.OpenBlob(ctx, "edge/sensor", digest.SHA512.FromBytes(b))
		if err != nil {
			t.Fatalf("blob %s on the parent: %v", digest.SHA512.FromBytes(b), err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("blob %s on the parent has other bytes (%v)", digest.SHA512.FromBytes(b), err)
		}
	}
}

// queueSHA512Image defines a ReadWrite connected registry name under parent and a child node
// for it, stores an image named by sha512 digests as edge/sensor:v1 on the child and queues it in
// its outbox, as the child's /v2 push hook does.
func queueSHA512Image(t *testing.T, parent *root, name string) (*sync.Engine, sha512Image) {
	t.Helper()
	opts, _ := parent.define(t, acrapi.ConnectedRegistrySpec{Name: name, Mode: acrapi.ModeReadWrite, Repositories: []string{"edge/**"}})
	child := newNode(t, nil)
	e := newEngine(t, opts, child)
	img := newSHA512Image(t)
	img.store(t, child, "edge/sensor", "v1")
	if err := e.Enqueue("edge/sensor", "v1", img.manifest); err != nil {
		t.Fatal(err)
	}
	return e, img
}

// TestReadWriteOutboxSHA512Faults: when the manifest's second PUT, by its sha512 digest, fails
// (a 500, then an answer lost after the parent stored it), the image stays queued and the next
// pass pushes it again, until the parent names it by that digest; then nothing is pushed again.
func TestReadWriteOutboxSHA512Faults(t *testing.T) {
	ctx := context.Background()
	root := newRoot(t)
	bySHA512 := regexp.MustCompile(`/manifests/sha512:`)
	rules := root.faultV2(
		faultnet.Rule{Method: http.MethodPut, Path: regexp.MustCompile(`/manifests/v1$`)}, // counts
		faultnet.Rule{Method: http.MethodPut, Path: bySHA512, Times: 1, Action: faultnet.Status(http.StatusInternalServerError)},
		faultnet.Rule{Method: http.MethodPut, Path: bySHA512, Times: 1, Action: faultnet.LoseResponse()},
	)
	e, img := queueSHA512Image(t, root, "gatewayRW513")
	named := func() bool {
		_, got, err := root.node.reg.GetManifest(ctx, "edge/sensor", img.manifest)
		return err == nil && bytes.Equal(got, img.raw)
	}
	if s := e.RunPass(ctx, true); s.Result == "ok" || named() {
		t.Fatalf("pass through a 500 on the sha512 PUT: %+v, named on the parent: %t", s, named())
	}
	if _, ok, err := root.node.reg.TagDigest(ctx, "edge/sensor", "v1"); err != nil || !ok {
		t.Fatalf("edge/sensor:v1 on the parent after the first pass: %t, %v", ok, err)
	}
	if s := e.RunPass(ctx, true); s.Result == "ok" || !named() {
		t.Fatalf("pass whose sha512 PUT's answer was lost: %+v, named on the parent: %t", s, named())
	}
	if s := e.RunPass(ctx, true); s.Result != "ok" {
		t.Fatalf("pass after the faults: %+v", s)
	}
	if got := rules[0].Seen(); got != 3 {
		t.Errorf("the tag was pushed %d times; want 3 (once a pass until both PUTs succeed)", got)
	}
	if s := e.RunPass(ctx, true); s.Result != "ok" || rules[0].Seen() != 3 {
		t.Errorf("a pass with the outbox empty: %+v, the tag pushed %d times in all", s, rules[0].Seen())
	}
	for i, r := range rules[1:] {
		if r.Applied() != 1 {
			t.Errorf("fault %d applied %d times, want once", i+1, r.Applied())
		}
	}
}

// TestEventsMakeQuietPassesCheap: after a full pass, a child reads the root's event log instead
// of listing tags; pushes, tag deletions and referrers reach it through events.
func TestEventsMakeQuietPassesCheap(t *testing.T) {
	root := newRoot(t)
	for i := range 6 {
		root.push(t, fmt.Sprintf("team/app%d:v1", i), randomImage(t, 512, 1))
	}
	opts, _ := root.define(t, acrapi.ConnectedRegistrySpec{Name: "siteE01", Repositories: []string{"team/*"}})
	child := newNode(t, nil)
	e := newEngine(t, opts, child)
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("full pass: %+v", s)
	}
	full := e.Meter().In()

	// A quiet pass: activation, an empty page of events, the status report.
	before := e.Meter().In()
	if s := e.RunPass(context.Background(), false); s.Result != "ok" || s.ManifestsSynced != 0 {
		t.Fatalf("quiet pass: %+v", s)
	}
	quiet := e.Meter().In() - before
	t.Logf("first pass received %d bytes, a quiet pass %d", full, quiet)
	if quiet > 2048 {
		t.Fatalf("a quiet pass received %d bytes", quiet)
	}

	// Events as the root's app records them.
	img := randomImage(t, 1024, 1)
	d := root.push(t, "team/app0:v2", img)
	record := func(ev acrapi.Event) {
		if err := root.cp.AppendEvent(ev); err != nil {
			t.Fatal(err)
		}
	}
	record(acrapi.Event{Repository: "team/app0", Tag: "v2", Digest: d.String(), Action: acrapi.EventPush})
	if err := remote.Delete(root.ref(t, "team/app1:v1")); err != nil {
		t.Fatal(err)
	}
	record(acrapi.Event{Repository: "team/app1", Tag: "v1", Action: acrapi.EventUntag})
	sig := signatureFor(t, img)
	if err := remote.Write(root.ref(t, "team/app0@"+mustDigest(t, sig)), sig); err != nil {
		t.Fatal(err)
	}
	record(acrapi.Event{Repository: "team/app0", Digest: mustDigest(t, sig), Action: acrapi.EventPush})
	record(acrapi.Event{Repository: "other/x", Tag: "v1", Action: acrapi.EventPush}) // not this site's

	if s := e.RunPass(context.Background(), false); s.Result != "ok" || s.TagsRemoved != 1 {
		t.Fatalf("pass with events: %+v", s)
	}
	requireSame(t, root.node, child, "team/app0:v2")
	if child.digestOf(t, "team/app1:v1") != "" {
		t.Fatal("a tag removed at the root is still on the child")
	}
	if child.digestOf(t, "team/app0@"+mustDigest(t, sig)) == "" {
		t.Fatal("a referrer pushed at the root did not reach the child")
	}

	// Events dropped by their TTL: the child reconciles in full.
	root.push(t, "team/app2:v2", randomImage(t, 512, 1)) // logged nowhere
	record(acrapi.Event{Repository: "team/app3", Tag: "v1", Action: acrapi.EventPush})
	if _, err := root.cp.PruneEvents(-time.Hour); err != nil {
		t.Fatal(err)
	}
	record(acrapi.Event{Repository: "team/app3", Tag: "v1", Action: acrapi.EventPush})
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("pass after the log was pruned: %+v", s)
	}
	requireSame(t, root.node, child, "team/app2:v2")
}
