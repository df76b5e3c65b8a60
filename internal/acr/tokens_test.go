package acr

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-registry/outpost/internal/controlplane"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

const adminPassword = "acr-test-admin-password"

func startRoot(t *testing.T) (*acrapi.Client, *controlplane.Store, string) {
	t.Helper()
	store, err := controlplane.Open(filepath.Join(t.TempDir(), "cp.db"), controlplane.WithPasswordCost(bcrypt.MinCost))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.EnsureAdmin(adminPassword); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(Options{ControlPlane: store}))
	t.Cleanup(srv.Close)
	return &acrapi.Client{BaseURL: srv.URL, Username: controlplane.AdminUser, Password: adminPassword}, store, srv.URL
}

// apiErr checks that err is an /acr error of status and code whose message holds msg.
func apiErr(t *testing.T, err error, status int, code, msg string) {
	t.Helper()
	var ae *acrapi.APIError
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code || !strings.Contains(ae.Message, msg) {
		t.Errorf("err = %#v, want %d %s containing %q", err, status, code, msg)
	}
}

func TestScopeMapRoutes(t *testing.T) {
	c, _, base := startRoot(t)
	ctx := context.Background()
	sm, err := c.CreateScopeMap(ctx, acrapi.ScopeMapSpec{Name: "readers", Description: "pull",
		Actions: []acrapi.RepositoryActions{{Repository: "app/*", Actions: []string{"content/read", "metadata/read"}}}})
	if err != nil || sm.Name != "readers" || len(sm.Actions) != 1 || sm.CreatedAt.IsZero() {
		t.Fatalf("create: %+v, %v", sm, err)
	}
	_, err = c.CreateScopeMap(ctx, acrapi.ScopeMapSpec{Name: "readers", Actions: sm.Actions})
	apiErr(t, err, http.StatusConflict, "ALREADY_EXISTS", "scope map readers")
	_, err = c.CreateScopeMap(ctx, acrapi.ScopeMapSpec{Name: "badone", Actions: []acrapi.RepositoryActions{{Repository: "a", Actions: []string{"pull"}}}})
	apiErr(t, err, http.StatusBadRequest, "INVALID", `action "pull" on "a" is not an action`)
	if ae := new(acrapi.APIError); errors.As(err, &ae) && strings.HasPrefix(ae.Message, "invalid") {
		t.Errorf("message keeps its sentinel: %q", ae.Message)
	}

	if got, err := c.GetScopeMap(ctx, "READERS"); err != nil || got.Description != "pull" {
		t.Fatalf("get: %+v, %v", got, err)
	}
	_, err = c.GetScopeMap(ctx, "nobody")
	apiErr(t, err, http.StatusNotFound, acrapi.CodeNotFound, `scope map "nobody"`)

	d := "pull and push"
	sm, err = c.UpdateScopeMap(ctx, "readers", acrapi.ScopeMapUpdate{Description: &d,
		AddActions: []acrapi.RepositoryActions{{Repository: "app/*", Actions: []string{"content/write"}}}})
	if err != nil || sm.Description != d || len(sm.Actions[0].Actions) != 3 {
		t.Fatalf("update: %+v, %v", sm, err)
	}
	if list, err := c.ListScopeMaps(ctx); err != nil || len(list) != 1 {
		t.Fatalf("list: %+v, %v", list, err)
	}

	// A scope map used by a token cannot be deleted.
	if _, err := c.CreateToken(ctx, acrapi.TokenCreate{TokenSpec: acrapi.TokenSpec{Name: "ci-token", ScopeMap: "readers"}, NoPasswords: true}); err != nil {
		t.Fatal(err)
	}
	apiErr(t, c.DeleteScopeMap(ctx, "readers"), http.StatusConflict, "IN_USE", "scope map readers is used by token ci-token")
	if err := c.DeleteToken(ctx, "ci-token"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteScopeMap(ctx, "readers"); err != nil {
		t.Fatal(err)
	}
	apiErr(t, c.DeleteScopeMap(ctx, "readers"), http.StatusNotFound, acrapi.CodeNotFound, "readers")
	if list, err := c.ListScopeMaps(ctx); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("list after delete: %#v, %v", list, err)
	}

	// Admin only; bodies are strict.
	anon := &acrapi.Client{BaseURL: base}
	_, err = anon.ListScopeMaps(ctx)
	apiErr(t, err, http.StatusUnauthorized, "UNAUTHORIZED", "admin")
	wrong := &acrapi.Client{BaseURL: base, Username: "admin", Password: "wrong"}
	_, err = wrong.ListTokens(ctx)
	apiErr(t, err, http.StatusUnauthorized, "UNAUTHORIZED", "wrong admin user or password")
	err = c.Do(ctx, http.MethodPost, "/acr/v1/scope-maps", map[string]any{"name": "x1234", "scopes": []string{}}, nil)
	apiErr(t, err, http.StatusBadRequest, "INVALID", "unknown field")
}

func TestTokenRoutes(t *testing.T) {
	c, store, _ := startRoot(t)
	ctx := context.Background()
	if _, err := c.CreateScopeMap(ctx, acrapi.ScopeMapSpec{Name: "pushers",
		Actions: []acrapi.RepositoryActions{{Repository: "app/**", Actions: []string{"content/read", "content/write"}}}}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateToken(ctx, acrapi.TokenCreate{TokenSpec: acrapi.TokenSpec{Name: "ci-token", ScopeMap: "nothere"}})
	apiErr(t, err, http.StatusBadRequest, "INVALID", `scope map "nothere" does not exist`)

	// Create generates password1 and shows it once.
	tok, err := c.CreateToken(ctx, acrapi.TokenCreate{TokenSpec: acrapi.TokenSpec{Name: "ci-token", ScopeMap: "pushers"}})
	if err != nil || tok.Status != acrapi.TokenStatusEnabled || len(tok.Passwords) != 1 || tok.Passwords[0].Name != acrapi.TokenPassword1 || tok.Passwords[0].Value == "" {
		t.Fatalf("create: %+v, %v", tok, err)
	}
	p1 := tok.Passwords[0].Value
	if acts, err := store.AuthenticateToken("ci-token", p1); err != nil || !controlplane.Allowed(acts, "app/x/y", "content/write") {
		t.Fatalf("authenticate with the created password: %v, %v", acts, err)
	}
	got, err := c.GetToken(ctx, "ci-token")
	if err != nil || len(got.Passwords) != 1 || got.Passwords[0].Value != "" {
		t.Fatalf("get shows a password value, or fails: %+v, %v", got, err)
	}
	_, err = c.CreateToken(ctx, acrapi.TokenCreate{TokenSpec: acrapi.TokenSpec{Name: "CI-TOKEN", ScopeMap: "pushers"}})
	apiErr(t, err, http.StatusConflict, "ALREADY_EXISTS", "token ci-token")

	// Credentials: password2 with an expiry.
	expiry := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	cred, err := c.GenerateTokenPassword(ctx, "ci-token", acrapi.TokenCredentialsRequest{Password: 2, Expiry: &expiry})
	if err != nil || cred.Username != "ci-token" || len(cred.Passwords) != 1 || cred.Passwords[0].Name != "password2" ||
		cred.Passwords[0].Value == "" || !cred.Passwords[0].Expiry.Equal(expiry) {
		t.Fatalf("credentials: %+v, %v", cred, err)
	}
	if _, err := store.AuthenticateToken("ci-token", cred.Passwords[0].Value); err != nil {
		t.Fatalf("password2: %v", err)
	}
	_, err = c.GenerateTokenPassword(ctx, "ci-token", acrapi.TokenCredentialsRequest{Password: 3})
	apiErr(t, err, http.StatusBadRequest, "INVALID", "password must be 1 or 2")
	past := time.Now().Add(-time.Hour)
	_, err = c.GenerateTokenPassword(ctx, "ci-token", acrapi.TokenCredentialsRequest{Password: 1, Expiry: &past})
	apiErr(t, err, http.StatusBadRequest, "INVALID", "not in the future")
	_, err = c.GenerateTokenPassword(ctx, "nobody", acrapi.TokenCredentialsRequest{Password: 1})
	apiErr(t, err, http.StatusNotFound, acrapi.CodeNotFound, `token "nobody"`)

	// Update: disable.
	dis := "disabled"
	tok, err = c.UpdateToken(ctx, "ci-token", acrapi.TokenUpdate{Status: &dis})
	if err != nil || tok.Status != acrapi.TokenStatusDisabled {
		t.Fatalf("update: %+v, %v", tok, err)
	}
	if _, err := store.AuthenticateToken("ci-token", p1); !errors.Is(err, controlplane.ErrTokenDisabled) {
		t.Fatalf("disabled token: %v", err)
	}
	bad := "maybe"
	_, err = c.UpdateToken(ctx, "ci-token", acrapi.TokenUpdate{Status: &bad})
	apiErr(t, err, http.StatusBadRequest, "INVALID", `status "maybe"`)

	// A client token of a connected registry cannot be deleted.
	if _, err := c.CreateConnectedRegistry(ctx, acrapi.ConnectedRegistrySpec{Name: "gateway1", Repositories: []string{"app/**"}, ClientTokens: []string{"ghost-token"}}); err == nil {
		t.Fatal("a connected registry with an unknown client token was created")
	} else {
		apiErr(t, err, http.StatusBadRequest, "INVALID", `client token "ghost-token" is not a token`)
	}
	if _, err := c.CreateConnectedRegistry(ctx, acrapi.ConnectedRegistrySpec{Name: "gateway1", Repositories: []string{"app/**"}, ClientTokens: []string{"ci-token"}}); err != nil {
		t.Fatal(err)
	}
	apiErr(t, c.DeleteToken(ctx, "ci-token"), http.StatusConflict, "IN_USE", "client token of connected registry gateway1")
	if list, err := c.ListTokens(ctx); err != nil || len(list) != 1 {
		t.Fatalf("list: %+v, %v", list, err)
	}
}
