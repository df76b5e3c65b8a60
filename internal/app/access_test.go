package app

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-registry/outpost/internal/controlplane"
	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

const testAdminPassword = "access-test-admin-password"

// accessNode is a root node served on loopback, with its admin API client.
type accessNode struct {
	srv   *httptest.Server
	admin *acrapi.Client
	audit *observer.ObservedLogs
}

func startAccessNode(t *testing.T) *accessNode {
	t.Helper()
	cfg := testConfig(t)
	cfg.Admin.Password = testAdminPassword
	core, logs := observer.New(zap.InfoLevel)
	n, err := New(context.Background(), cfg, nil, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	n.ready.Store(true)
	srv := httptest.NewServer(n.Handler())
	t.Cleanup(func() {
		srv.Close()
		_ = n.Close()
	})
	return &accessNode{srv: srv, admin: &acrapi.Client{BaseURL: srv.URL, Username: "admin", Password: testAdminPassword}, audit: logs}
}

// token makes a scope map of actions on repos and a token with it, and returns its password1.
func (a *accessNode) token(t *testing.T, tokenName string, repos []string, actions ...string) string {
	t.Helper()
	ctx := context.Background()
	spec := acrapi.ScopeMapSpec{Name: tokenName + "-scope"}
	for _, r := range repos {
		spec.Actions = append(spec.Actions, acrapi.RepositoryActions{Repository: r, Actions: actions})
	}
	if _, err := a.admin.CreateScopeMap(ctx, spec); err != nil {
		t.Fatal(err)
	}
	tok, err := a.admin.CreateToken(ctx, acrapi.TokenCreate{TokenSpec: acrapi.TokenSpec{Name: tokenName, ScopeMap: spec.Name}})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Passwords[0].Value
}

type reply struct {
	status int
	header http.Header
	body   string
}

// code is the first OCI error code of the body, or "".
func (r reply) code() string {
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if json.Unmarshal([]byte(r.body), &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

func (a *accessNode) do(t *testing.T, user, password, method, path string, body []byte, header ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestAccessMatrix sends every /v2 operation with a token holding each action alone (and none,
// and anonymously): allowed exactly when the action is the one the route needs, refused with
// DENIED naming the action and repository otherwise, and 401 with the Basic challenge without
// credentials.
func TestAccessMatrix(t *testing.T) {
	a := startAccessNode(t)
	const repo = "matrix/app"
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(strings.TrimPrefix(a.srv.URL, "http://") + "/" + repo + ":v1")
	if err := remote.Write(ref, img, remote.WithAuth(basic("admin", testAdminPassword))); err != nil {
		t.Fatal(err)
	}
	manifest, _ := img.RawManifest()
	mdigest, _ := img.Digest()
	layers, _ := img.Layers()
	blob, _ := layers[0].Digest()
	absent := "sha256:" + strings.Repeat("0", 64)

	type op struct {
		name, method, path, need string
		body                     []byte
		header                   []string
	}
	ops := []op{
		{"GET manifest", http.MethodGet, "/v2/" + repo + "/manifests/v1", acrapi.ActionContentRead, nil, nil},
		{"HEAD manifest", http.MethodHead, "/v2/" + repo + "/manifests/" + mdigest.String(), acrapi.ActionContentRead, nil, nil},
		{"GET blob", http.MethodGet, "/v2/" + repo + "/blobs/" + blob.String(), acrapi.ActionContentRead, nil, nil},
		{"HEAD blob", http.MethodHead, "/v2/" + repo + "/blobs/" + blob.String(), acrapi.ActionContentRead, nil, nil},
		{"GET referrers", http.MethodGet, "/v2/" + repo + "/referrers/" + mdigest.String(), acrapi.ActionContentRead, nil, nil},
		{"GET tags", http.MethodGet, "/v2/" + repo + "/tags/list", acrapi.ActionMetadataRead, nil, nil},
		{"POST upload", http.MethodPost, "/v2/" + repo + "/blobs/uploads/", acrapi.ActionContentWrite, nil, nil},
		{"PUT manifest", http.MethodPut, "/v2/" + repo + "/manifests/v2", acrapi.ActionContentWrite, manifest, []string{"Content-Type", mustMediaType(t, img)}},
		{"DELETE manifest", http.MethodDelete, "/v2/" + repo + "/manifests/" + absent, acrapi.ActionContentDelete, nil, nil},
		{"DELETE blob", http.MethodDelete, "/v2/" + repo + "/blobs/" + absent, acrapi.ActionContentDelete, nil, nil},
	}
	passwords := map[string]string{}
	for i, action := range acrapi.ScopeMapActions {
		passwords[action] = a.token(t, fmt.Sprintf("matrix-%d", i), []string{repo}, action)
	}
	// A token with every action, on another repository only.
	other := a.token(t, "matrix-other", []string{"other/*"}, acrapi.ScopeMapActions...)

	for _, o := range ops {
		for i, action := range acrapi.ScopeMapActions {
			r := a.do(t, fmt.Sprintf("matrix-%d", i), passwords[action], o.method, o.path, o.body, o.header...)
			if action == o.need {
				if r.status == http.StatusUnauthorized || r.status == http.StatusForbidden || r.status >= 500 {
					t.Errorf("%s with %s: %d %s, want it allowed", o.name, action, r.status, r.body)
				}
				continue
			}
			if r.status != http.StatusForbidden || (o.method != http.MethodHead && r.code() != "DENIED") {
				t.Errorf("%s with only %s: %d %s, want 403 DENIED", o.name, action, r.status, r.body)
			} else if o.method != http.MethodHead && (!strings.Contains(r.body, o.need) || !strings.Contains(r.body, repo)) {
				t.Errorf("%s with only %s: %s, want a message naming %s on %s", o.name, action, r.body, o.need, repo)
			}
		}
		if r := a.do(t, "matrix-other", other, o.method, o.path, o.body, o.header...); r.status != http.StatusForbidden {
			t.Errorf("%s with every action on other/*: %d, want 403", o.name, r.status)
		}
		r := a.do(t, "", "", o.method, o.path, o.body, o.header...)
		if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") != `Basic realm="outpost"` {
			t.Errorf("%s anonymously: %d (WWW-Authenticate %q), want 401 with the Basic challenge", o.name, r.status, r.header.Get("WWW-Authenticate"))
		}
		if r := a.do(t, "admin", testAdminPassword, o.method, o.path, o.body, o.header...); r.status == http.StatusUnauthorized || r.status == http.StatusForbidden {
			t.Errorf("%s as admin: %d %s", o.name, r.status, r.body)
		}
	}

	// Base route: credentials are checked (docker login), any valid token passes.
	if r := a.do(t, "matrix-3", passwords[acrapi.ActionMetadataRead], http.MethodGet, "/v2/", nil); r.status != http.StatusOK {
		t.Errorf("GET /v2/ with a token: %d", r.status)
	}
	if r := a.do(t, "matrix-3", "wrong", http.MethodGet, "/v2/", nil); r.status != http.StatusUnauthorized || r.code() != "UNAUTHORIZED" {
		t.Errorf("GET /v2/ with a wrong password: %d %s", r.status, r.body)
	}
	// The audit log names refusals, never passwords.
	if a.audit.FilterMessage("request refused").Len() == 0 {
		t.Error("no audit line for refused requests")
	}
	for _, e := range a.audit.All() {
		for _, p := range passwords {
			if strings.Contains(fmt.Sprint(e.ContextMap()), p) || strings.Contains(e.Message, p) {
				t.Fatalf("a log line contains a password: %s %v", e.Message, e.ContextMap())
			}
		}
	}
}

// TestCatalogFiltered: the catalog lists only what a token may read, paginated.
func TestCatalogFiltered(t *testing.T) {
	a := startAccessNode(t)
	auth := remote.WithAuth(basic("admin", testAdminPassword))
	img, _ := random.Image(64, 1)
	for _, r := range []string{"a/one", "a/two", "a/three", "b/one", "c/x"} {
		ref, _ := name.ParseReference(strings.TrimPrefix(a.srv.URL, "http://") + "/" + r + ":v1")
		if err := remote.Write(ref, img, auth); err != nil {
			t.Fatal(err)
		}
	}
	pw := a.token(t, "catalog-reader", []string{"a/*"}, acrapi.ActionContentRead)
	metaPw := a.token(t, "catalog-meta", []string{"c/x"}, acrapi.ActionMetadataRead)
	list := func(user, pw, query string) ([]string, string) {
		r := a.do(t, user, pw, http.MethodGet, "/v2/_catalog"+query, nil)
		if r.status != http.StatusOK {
			t.Fatalf("catalog%s as %s: %d %s", query, user, r.status, r.body)
		}
		var c struct{ Repositories []string }
		_ = json.Unmarshal([]byte(r.body), &c)
		return c.Repositories, r.header.Get("Link")
	}
	if got, _ := list("catalog-reader", pw, ""); !slices.Equal(got, []string{"a/one", "a/three", "a/two"}) {
		t.Errorf("catalog for a/* readers: %v", got)
	}
	got, link := list("catalog-reader", pw, "?n=2")
	if !slices.Equal(got, []string{"a/one", "a/three"}) || !strings.Contains(link, "last=a%2Fthree") {
		t.Errorf("first page of 2: %v, Link %q", got, link)
	}
	if got, link := list("catalog-reader", pw, "?n=2&last=a%2Fthree"); !slices.Equal(got, []string{"a/two"}) || link != "" {
		t.Errorf("second page: %v, Link %q", got, link)
	}
	if got, _ := list("catalog-meta", metaPw, ""); !slices.Equal(got, []string{"c/x"}) {
		t.Errorf("catalog for a metadata/read token: %v", got)
	}
	if got, _ := list("admin", testAdminPassword, ""); len(got) != 5 {
		t.Errorf("catalog for the admin: %v", got)
	}
	if r := a.do(t, "", "", http.MethodGet, "/v2/_catalog", nil); r.status != http.StatusUnauthorized {
		t.Errorf("anonymous catalog: %d", r.status)
	}
	if r := a.do(t, "catalog-reader", pw, http.MethodGet, "/v2/_catalog?n=-1", nil); r.code() != "PAGINATION_NUMBER_INVALID" {
		t.Errorf("catalog ?n=-1: %d %s", r.status, r.body)
	}
}

// TestTokenLifecycle: both passwords work, rotation, expiry, disable, delete; every change
// takes effect on the next request although verified credentials are cached.
func TestTokenLifecycle(t *testing.T) {
	a := startAccessNode(t)
	ctx := context.Background()
	p1 := a.token(t, "rotating", []string{"*"}, acrapi.ActionMetadataRead)
	ok := func(pw string) bool {
		return a.do(t, "rotating", pw, http.MethodGet, "/v2/", nil).status == http.StatusOK
	}
	if !ok(p1) {
		t.Fatal("password1 refused")
	}
	cred, err := a.admin.GenerateTokenPassword(ctx, "rotating", acrapi.TokenCredentialsRequest{Password: 2})
	if err != nil {
		t.Fatal(err)
	}
	p2 := cred.Passwords[0].Value
	if !ok(p1) || !ok(p2) {
		t.Fatal("both passwords must work")
	}
	// Rotating password1 retires the old one at once.
	cred, err = a.admin.GenerateTokenPassword(ctx, "rotating", acrapi.TokenCredentialsRequest{Password: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ok(p1) || !ok(cred.Passwords[0].Value) || !ok(p2) {
		t.Fatal("after rotating password1: the old one must fail, the new one and password2 work")
	}
	p1 = cred.Passwords[0].Value

	// A password with an expiry stops working then, cached or not.
	expiry := time.Now().Add(1500 * time.Millisecond)
	cred, err = a.admin.GenerateTokenPassword(ctx, "rotating", acrapi.TokenCredentialsRequest{Password: 2, Expiry: &expiry})
	if err != nil {
		t.Fatal(err)
	}
	p2 = cred.Passwords[0].Value
	if !ok(p2) {
		t.Fatal("password2 refused before its expiry")
	}
	time.Sleep(time.Until(expiry) + 100*time.Millisecond)
	if r := a.do(t, "rotating", p2, http.MethodGet, "/v2/", nil); r.status != http.StatusUnauthorized || !strings.Contains(r.body, "expired") {
		t.Fatalf("expired password2: %d %s, want 401 saying it expired", r.status, r.body)
	}

	disabled := acrapi.TokenStatusDisabled
	if _, err := a.admin.UpdateToken(ctx, "rotating", acrapi.TokenUpdate{Status: &disabled}); err != nil {
		t.Fatal(err)
	}
	if r := a.do(t, "rotating", p1, http.MethodGet, "/v2/", nil); r.status != http.StatusUnauthorized || !strings.Contains(r.body, "disabled") {
		t.Fatalf("disabled token: %d %s", r.status, r.body)
	}
	enabled := acrapi.TokenStatusEnabled
	if _, err := a.admin.UpdateToken(ctx, "rotating", acrapi.TokenUpdate{Status: &enabled}); err != nil {
		t.Fatal(err)
	}
	if !ok(p1) {
		t.Fatal("re-enabled token refused")
	}
	if err := a.admin.DeleteToken(ctx, "rotating"); err != nil {
		t.Fatal(err)
	}
	if ok(p1) {
		t.Fatal("deleted token still accepted")
	}
	if a.audit.FilterMessage("admin change").Len() < 5 {
		t.Errorf("audit lines for token changes: %d", a.audit.FilterMessage("admin change").Len())
	}
}

// TestFailedLoginLimit: after 10 wrong passwords from one address, that address is refused with
// 429 and Retry-After before any password is checked (the right one too, unless already
// verified), while other addresses are not affected.
func TestFailedLoginLimit(t *testing.T) {
	a := startAccessNode(t)
	pw := a.token(t, "limited", []string{"*"}, acrapi.ActionMetadataRead)
	for i := range 10 {
		if r := a.do(t, "limited", fmt.Sprintf("guess-%d", i), http.MethodGet, "/v2/", nil); r.status != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, r.status)
		}
	}
	r := a.do(t, "limited", "guess-10", http.MethodGet, "/v2/", nil)
	if r.status != http.StatusTooManyRequests || r.code() != "TOOMANYREQUESTS" || r.header.Get("Retry-After") == "" {
		t.Fatalf("11th guess: %d %s (Retry-After %q), want 429 TOOMANYREQUESTS", r.status, r.body, r.header.Get("Retry-After"))
	}
	if r := a.do(t, "limited", pw, http.MethodGet, "/v2/", nil); r.status != http.StatusTooManyRequests {
		t.Fatalf("the right password from the blocked address: %d, want 429 (no hash is checked)", r.status)
	}
	// The admin API shares the limit.
	if r := a.do(t, "admin", "nope", http.MethodGet, "/acr/v1/tokens", nil); r.status != http.StatusTooManyRequests {
		t.Fatalf("/acr from the blocked address: %d, want 429", r.status)
	}
	// Another client behind the trusted local proxy is not blocked.
	if r := a.do(t, "limited", pw, http.MethodGet, "/v2/", nil, "X-Forwarded-For", "192.0.2.7"); r.status != http.StatusOK {
		t.Fatalf("another client address: %d %s", r.status, r.body)
	}
	if a.audit.FilterMessage("login failed").Len() != 10 {
		t.Errorf("audit lines for failed logins: %d, want 10", a.audit.FilterMessage("login failed").Len())
	}
}

// TestAnonymousPull: only the configured patterns are open without credentials, for reading.
func TestAnonymousPull(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.Password = testAdminPassword
	cfg.Auth.AnonymousPull = []string{"public/*"}
	n, err := New(context.Background(), cfg, nil, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	n.ready.Store(true)
	srv := httptest.NewServer(n.Handler())
	defer func() { srv.Close(); _ = n.Close() }()
	a := &accessNode{srv: srv}
	img, _ := random.Image(64, 1)
	for _, r := range []string{"public/app", "private/app"} {
		ref, _ := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/" + r + ":v1")
		if err := remote.Write(ref, img, remote.WithAuth(basic("admin", testAdminPassword))); err != nil {
			t.Fatal(err)
		}
	}
	pub, _ := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/public/app:v1")
	if _, err := remote.Image(pub); err != nil {
		t.Errorf("anonymous pull of public/app: %v", err)
	}
	if r := a.do(t, "", "", http.MethodGet, "/v2/private/app/manifests/v1", nil); r.status != http.StatusUnauthorized {
		t.Errorf("anonymous pull of private/app: %d", r.status)
	}
	if r := a.do(t, "", "", http.MethodPost, "/v2/public/app/blobs/uploads/", nil); r.status != http.StatusUnauthorized {
		t.Errorf("anonymous push to public/app: %d", r.status)
	}
	if r := a.do(t, "", "", http.MethodGet, "/v2/_catalog", nil); r.status != http.StatusOK || !strings.Contains(r.body, "public/app") || strings.Contains(r.body, "private") {
		t.Errorf("anonymous catalog: %d %s", r.status, r.body)
	}
}

func basic(user, password string) authn.Authenticator {
	return authn.FromConfig(authn.AuthConfig{Username: user, Password: password})
}

func mustMediaType(t *testing.T, img v1.Image) string {
	t.Helper()
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return string(mt)
}

// Hashing at bcrypt's default cost takes seconds under the race detector; the tests here are
// about access decisions, which the cost does not change.
func init() {
	controlPlaneOptions = []controlplane.Option{controlplane.WithPasswordCost(bcrypt.MinCost)}
}

// TestDeltaReadableByRepositoryReaders: a delta holds a layer's bytes; only a caller who may
// read the repository it was planned for fetches it, whoever knows its id.
func TestDeltaReadableByRepositoryReaders(t *testing.T) {
	a := startAccessNode(t)
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	body := []byte(strings.Repeat("a line of a config file that compresses well\n", 4000))
	for i := range 20 {
		_ = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("etc/app/%02d.conf", i), Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		_, _ = tw.Write(body)
	}
	_ = tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(raw.Bytes())
	_ = zw.Close()
	layer := static.NewLayer(gz.Bytes(), types.OCILayer)
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(strings.TrimPrefix(a.srv.URL, "http://") + "/secret/app:v1")
	if err := remote.Write(ref, img, remote.WithAuth(basic("admin", testAdminPassword))); err != nil {
		t.Fatal(err)
	}
	ld, _ := layer.Digest()
	size, _ := layer.Size()
	var plan acrapi.DeltaPlan
	if err := a.admin.Do(context.Background(), http.MethodPost, "/acr/v1/deltas",
		acrapi.DeltaRequest{Repository: "secret/app", Digest: ld.String(), Size: size, Formats: delta.Formats}, &plan); err != nil || plan.ID == "" {
		t.Fatalf("planning a delta as admin: %v %+v", err, plan)
	}
	otherPw := a.token(t, "other-reader", []string{"other/*"}, acrapi.ActionContentRead)
	if r := a.do(t, "other-reader", otherPw, http.MethodGet, "/acr/v1/deltas/"+plan.ID, nil); r.status != http.StatusForbidden {
		t.Fatalf("a reader of other/* fetching a delta of secret/app: %d %s", r.status, r.body)
	}
	secretPw := a.token(t, "secret-reader", []string{"secret/*"}, acrapi.ActionContentRead)
	r := a.do(t, "secret-reader", secretPw, http.MethodGet, "/acr/v1/deltas/"+plan.ID, nil)
	if r.status != http.StatusOK || digest.FromString(r.body).String() != plan.ID {
		t.Fatalf("a reader of secret/* fetching its delta: %d, %d bytes", r.status, len(r.body))
	}
}
