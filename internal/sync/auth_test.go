package sync_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	stdsync "sync"
	"sync/atomic"
	"testing"

	"github.com/outpost-registry/outpost/internal/registry"
)

// tokenServer is a Docker-style bearer token service in front of a parent: /v2 answers 401 with
// a Bearer challenge until a token from /token (issued for Basic credentials) is presented.
type tokenServer struct {
	user, pass string
	issued     atomic.Int64
	mu         stdsync.Mutex
	valid      map[string]bool
}

func (ts *tokenServer) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			u, p, ok := r.BasicAuth()
			if !ok || u != ts.user || p != ts.pass {
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
				return
			}
			tok := fmt.Sprintf("tok-%d", ts.issued.Add(1))
			ts.mu.Lock()
			ts.valid[tok] = true
			ts.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": 300})
			return
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		ts.mu.Lock()
		ok := ts.valid[tok]
		ts.mu.Unlock()
		if !ok {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test"`, r.Host))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// revokeAll makes every issued token invalid, as an expiry would.
func (ts *tokenServer) revokeAll() {
	ts.mu.Lock()
	ts.valid = map[string]bool{}
	ts.mu.Unlock()
}

func TestBearerTokenAuthIsCachedAndRefreshed(t *testing.T) {
	ts := &tokenServer{user: "sync", pass: "s3cret", valid: map[string]bool{}}
	parent := newNode(t, ts.wrap)
	// Push straight to the store: the test's own client has no token.
	open := newNode(t, nil)
	open.push(t, "app:v1", randomImage(t, 64<<10, 2))
	copyRepo(t, open, parent, "app:v1")

	child := newNode(t, nil)
	opts := engineOptions(t, parent.srv.URL, "app")
	opts.Parent.Username, opts.Parent.Password = "sync", "s3cret"
	e := newEngine(t, opts, child)
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, open, child, "app:v1")
	if n := ts.issued.Load(); n > 2 {
		t.Fatalf("%d tokens issued for one pass: tokens are not reused", n)
	}

	ts.revokeAll()
	open.push(t, "app:v2", randomImage(t, 1024, 1))
	copyRepo(t, open, parent, "app:v2")
	if s := e.RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("pass after token expiry: %+v", s)
	}
	requireSame(t, open, child, "app:v2")

	// Wrong credentials: a clear error, and the link counts as up (the parent answered).
	bad := engineOptions(t, parent.srv.URL, "app")
	bad.Parent.Username, bad.Parent.Password = "sync", "wrong"
	e2 := newEngine(t, bad, newNode(t, nil))
	s := e2.RunPass(context.Background(), false)
	if s.Result != "failed" || !strings.Contains(s.Error, "401") && !strings.Contains(strings.ToLower(s.Error), "unauthorized") {
		t.Fatalf("wrong password: %+v", s)
	}
}

func TestBasicAuth(t *testing.T) {
	var unauthorized atomic.Int64
	basic := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "edge" || p != "pw" {
				unauthorized.Add(1)
				w.Header().Set("WWW-Authenticate", `Basic realm="parent"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	open := newNode(t, nil)
	open.push(t, "app:v1", randomImage(t, 1024, 1))
	parent := newNode(t, basic)
	copyRepo(t, open, parent, "app:v1")
	child := newNode(t, nil)
	opts := engineOptions(t, parent.srv.URL, "app")
	opts.Parent.Username, opts.Parent.Password = "edge", "pw"
	if s := newEngine(t, opts, child).RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("pass: %+v", s)
	}
	requireSame(t, open, child, "app:v1")
}

func TestTLSParentWithCustomCA(t *testing.T) {
	open := newNode(t, nil)
	open.push(t, "app:v1", randomImage(t, 1024, 1))
	reg, err := registry.New(context.Background(), registry.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(reg.Handler())
	t.Cleanup(func() { srv.Close(); _ = reg.Close() })
	parent := &node{reg: reg, srv: srv, host: strings.TrimPrefix(srv.URL, "https://")}
	copyRepo(t, open, parent, "app:v1")

	// Without the CA the parent is refused.
	child := newNode(t, nil)
	s := newEngine(t, engineOptions(t, srv.URL, "app"), child).RunPass(context.Background(), false)
	if s.Result != "failed" || !strings.Contains(s.Error, "certificate") {
		t.Fatalf("untrusted parent accepted: %+v", s)
	}

	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := engineOptions(t, srv.URL, "app")
	opts.Parent.CAFile = ca
	if s := newEngine(t, opts, child).RunPass(context.Background(), false); s.Result != "ok" {
		t.Fatalf("pass with CA: %+v", s)
	}
	requireSame(t, open, child, "app:v1")
}
