package controlplane

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

func ra(repo string, actions ...string) acrapi.RepositoryActions {
	return acrapi.RepositoryActions{Repository: repo, Actions: actions}
}

func mustScopeMap(t *testing.T, s *Store, name string, actions ...acrapi.RepositoryActions) acrapi.ScopeMap {
	t.Helper()
	sm, err := s.CreateScopeMap(acrapi.ScopeMapSpec{Name: name, Actions: actions})
	if err != nil {
		t.Fatalf("create scope map %s: %v", name, err)
	}
	return sm
}

func mustToken(t *testing.T, s *Store, name, scopeMap string) acrapi.Token {
	t.Helper()
	tok, err := s.CreateToken(acrapi.TokenSpec{Name: name, ScopeMap: scopeMap})
	if err != nil {
		t.Fatalf("create token %s: %v", name, err)
	}
	return tok
}

func wantErr(t *testing.T, err, sentinel error, msg string) {
	t.Helper()
	if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), msg) {
		t.Errorf("err = %v, want %v containing %q", err, sentinel, msg)
	}
}

func TestScopeMapRules(t *testing.T) {
	s := openStore(t)
	sm := mustScopeMap(t, s, "readers",
		ra("app/*", "metadata/read", "content/read", "content/read"), ra("base", "content/read"), ra("app/*", "Content/Write"))
	if len(sm.Actions) != 2 || sm.Actions[0].Repository != "app/*" ||
		strings.Join(sm.Actions[0].Actions, ",") != "content/read,content/write,metadata/read" || sm.CreatedAt.IsZero() {
		t.Fatalf("normalized: %+v", sm)
	}
	for _, tt := range []struct {
		spec acrapi.ScopeMapSpec
		msg  string
	}{
		{acrapi.ScopeMapSpec{Name: "abcd", Actions: []acrapi.RepositoryActions{ra("a", "content/read")}}, "must be 5 to 50 characters"},
		{acrapi.ScopeMapSpec{Name: strings.Repeat("a", 51), Actions: []acrapi.RepositoryActions{ra("a", "content/read")}}, "must be 5 to 50 characters"},
		{acrapi.ScopeMapSpec{Name: "bad_name", Actions: []acrapi.RepositoryActions{ra("a", "content/read")}}, "only letters, digits and '-'"},
		{acrapi.ScopeMapSpec{Name: "empty"}, "actions are empty"},
		{acrapi.ScopeMapSpec{Name: "noacts", Actions: []acrapi.RepositoryActions{ra("a")}}, `actions of "a" are empty`},
		{acrapi.ScopeMapSpec{Name: "badact", Actions: []acrapi.RepositoryActions{ra("a", "content/push")}}, `"content/push" on "a" is not an action: expected content/read, content/write, content/delete, metadata/read, metadata/write`},
		{acrapi.ScopeMapSpec{Name: "badrepo", Actions: []acrapi.RepositoryActions{ra("a*/b", "content/read")}}, "not a repository pattern"},
		{acrapi.ScopeMapSpec{Name: "longdesc", Description: strings.Repeat("x", 257), Actions: []acrapi.RepositoryActions{ra("a", "content/read")}}, "at most 256"},
	} {
		if _, err := s.CreateScopeMap(tt.spec); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: err = %v, want it to contain %q", tt.spec.Name, err, tt.msg)
		}
	}
	_, err := s.CreateScopeMap(acrapi.ScopeMapSpec{Name: "READERS", Actions: []acrapi.RepositoryActions{ra("a", "content/read")}})
	wantErr(t, err, ErrExists, "scope map readers")

	// update: description, add, remove (an emptied repository goes), replace.
	d := "pull only"
	sm, err = s.UpdateScopeMap("Readers", acrapi.ScopeMapUpdate{Description: &d, AddActions: []acrapi.RepositoryActions{ra("tools/**", "content/read")},
		RemoveActions: []acrapi.RepositoryActions{ra("base", "content/read"), ra("app/*", "content/write")}})
	if err != nil {
		t.Fatal(err)
	}
	if sm.Description != d || len(sm.Actions) != 2 || sm.Actions[1].Repository != "tools/**" || strings.Join(sm.Actions[0].Actions, ",") != "content/read,metadata/read" {
		t.Fatalf("updated: %+v", sm)
	}
	sm, err = s.UpdateScopeMap("readers", acrapi.ScopeMapUpdate{Actions: []acrapi.RepositoryActions{ra("*", "content/read")}})
	if err != nil || len(sm.Actions) != 1 || sm.Actions[0].Repository != "*" {
		t.Fatalf("replaced: %+v, %v", sm, err)
	}
	_, err = s.UpdateScopeMap("readers", acrapi.ScopeMapUpdate{RemoveActions: []acrapi.RepositoryActions{ra("*", "content/read")}})
	wantErr(t, err, ErrInvalid, "actions are empty")
	_, err = s.UpdateScopeMap("readers", acrapi.ScopeMapUpdate{AddActions: []acrapi.RepositoryActions{ra("x", "admin")}})
	wantErr(t, err, ErrInvalid, `"admin" on "x" is not an action`)
	_, err = s.UpdateScopeMap("nobody", acrapi.ScopeMapUpdate{Description: &d})
	wantErr(t, err, ErrNotFound, `scope map "nobody"`)
	if got, _ := s.GetScopeMap("readers"); got.Description != d {
		t.Errorf("get: %+v", got)
	}

	// delete: refused while a token uses it, and says which.
	mustScopeMap(t, s, "writers", ra("app/**", "content/read", "content/write"))
	mustToken(t, s, "ci-token", "writers")
	wantErr(t, s.DeleteScopeMap("writers"), ErrInUse, "scope map writers is used by token ci-token")
	if list, err := s.ListScopeMaps(); err != nil || len(list) != 2 || list[0].Name != "readers" {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if err := s.DeleteScopeMap("READERS"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.DeleteScopeMap("readers"), ErrNotFound, "readers")
	_, err = s.GetScopeMap("readers")
	wantErr(t, err, ErrNotFound, "readers")
}

func TestTokenRules(t *testing.T) {
	s := openStore(t)
	mustScopeMap(t, s, "readers", ra("app/*", "content/read"))
	mustScopeMap(t, s, "writers", ra("app/*", "content/read", "content/write"))
	tok := mustToken(t, s, "puller1", "Readers")
	if tok.Status != acrapi.TokenStatusEnabled || tok.ScopeMap != "readers" || len(tok.Passwords) != 0 {
		t.Fatalf("created: %+v", tok)
	}
	for _, tt := range []struct {
		spec     acrapi.TokenSpec
		sentinel error
		msg      string
	}{
		{acrapi.TokenSpec{Name: "tok", ScopeMap: "readers"}, ErrInvalid, "5 to 50"},
		{acrapi.TokenSpec{Name: "tok.en", ScopeMap: "readers"}, ErrInvalid, "letters, digits"},
		{acrapi.TokenSpec{Name: "token2", ScopeMap: ""}, ErrInvalid, "scope map is empty"},
		{acrapi.TokenSpec{Name: "token2", ScopeMap: "nothere"}, ErrInvalid, `scope map "nothere" does not exist`},
		{acrapi.TokenSpec{Name: "token2", ScopeMap: "readers", Status: "paused"}, ErrInvalid, `status "paused": expected enabled or disabled`},
		{acrapi.TokenSpec{Name: "PULLER1", ScopeMap: "readers"}, ErrExists, "token puller1"},
	} {
		_, err := s.CreateToken(tt.spec)
		wantErr(t, err, tt.sentinel, tt.msg)
	}
	w, dis, bad, none := "writers", "Disabled", "off", "gone1"
	tok, err := s.UpdateToken("puller1", acrapi.TokenUpdate{ScopeMap: &w, Status: &dis})
	if err != nil || tok.ScopeMap != "writers" || tok.Status != acrapi.TokenStatusDisabled {
		t.Fatalf("updated: %+v, %v", tok, err)
	}
	_, err = s.UpdateToken("puller1", acrapi.TokenUpdate{Status: &bad})
	wantErr(t, err, ErrInvalid, "status")
	_, err = s.UpdateToken("puller1", acrapi.TokenUpdate{ScopeMap: &none})
	wantErr(t, err, ErrInvalid, `scope map "gone1" does not exist`)
	_, err = s.UpdateToken("nobody", acrapi.TokenUpdate{Status: &dis})
	wantErr(t, err, ErrNotFound, `token "nobody"`)
	mustToken(t, s, "another", "readers")
	if list, err := s.ListTokens(); err != nil || len(list) != 2 || list[0].Name != "another" {
		t.Fatalf("list: %+v, %v", list, err)
	}

	// Client tokens of connected registries must be tokens; a token in use cannot be deleted.
	sp := spec("gateway1", "", "", "app/*")
	sp.ClientTokens = []string{"nosuchtoken"}
	_, err = s.Create(sp)
	wantErr(t, err, ErrInvalid, `client token "nosuchtoken" is not a token`)
	sp.ClientTokens = []string{"PULLER1"}
	mustCreate(t, s, sp)
	_, err = s.Update("gateway1", acrapi.ConnectedRegistryUpdate{AddClientTokens: []string{"ghost"}})
	wantErr(t, err, ErrInvalid, `client token "ghost" is not a token`)
	if _, err := s.Update("gateway1", acrapi.ConnectedRegistryUpdate{AddClientTokens: []string{"another"}}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.DeleteToken("puller1"), ErrInUse, "token puller1 is a client token of connected registry gateway1")
	if _, err := s.Update("gateway1", acrapi.ConnectedRegistryUpdate{RemoveClientTokens: []string{"PULLER1", "puller1"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteToken("puller1"); err != nil {
		t.Fatalf("delete after removal: %v", err)
	}
	wantErr(t, s.DeleteToken("puller1"), ErrNotFound, "puller1")
	_, err = s.GetToken("puller1")
	wantErr(t, err, ErrNotFound, "puller1")
}

func TestAuthenticateToken(t *testing.T) {
	s := openStore(t)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	mustScopeMap(t, s, "pushers", ra("app/**", "content/read", "content/write"), ra("base", "content/read"))
	mustToken(t, s, "ci-token", "pushers")

	_, err := s.AuthenticateToken("ci-token", "")
	wantErr(t, err, ErrUnauthorized, `token "ci-token" or its password is wrong`) // no password yet
	_, err = s.GenerateTokenPassword("ci-token", 3, nil)
	wantErr(t, err, ErrInvalid, "expected 1 or 2")
	past := now.Add(-time.Second)
	_, err = s.GenerateTokenPassword("ci-token", 1, &past)
	wantErr(t, err, ErrInvalid, "not in the future")
	_, err = s.GenerateTokenPassword("nobody", 1, nil)
	wantErr(t, err, ErrNotFound, "nobody")

	p1, err := s.GenerateTokenPassword("ci-token", 1, nil)
	if err != nil || len(p1) < 40 {
		t.Fatalf("password %q, %v", p1, err)
	}
	expiry := now.Add(time.Hour)
	p2, err := s.GenerateTokenPassword("CI-TOKEN", 2, &expiry)
	if err != nil || p2 == p1 {
		t.Fatalf("password2 %q, %v", p2, err)
	}
	tok, _ := s.GetToken("ci-token")
	if len(tok.Passwords) != 2 || tok.Passwords[1].Name != "password2" || !tok.Passwords[1].Expiry.Equal(expiry) || tok.Passwords[0].Value != "" {
		t.Fatalf("token: %+v", tok)
	}
	for _, p := range []string{p1, p2} {
		acts, err := s.AuthenticateToken("ci-token", p)
		if err != nil || len(acts) != 2 {
			t.Fatalf("authenticate: %v, %v", acts, err)
		}
		if !Allowed(acts, "app/web/api", acrapi.ActionContentWrite) || !Allowed(acts, "base", acrapi.ActionContentRead) ||
			Allowed(acts, "base", acrapi.ActionContentWrite) || Allowed(acts, "app", acrapi.ActionContentRead) ||
			Allowed(acts, "app/web", acrapi.ActionContentDelete) || Allowed(acts, "other", acrapi.ActionContentRead) {
			t.Errorf("allowed: wrong answers for %+v", acts)
		}
	}
	// Names are case-insensitive.
	if _, err := s.AuthenticateToken("CI-Token", p1); err != nil {
		t.Errorf("authenticate with another case: %v", err)
	}
	// Wrong password, wrong name.
	_, err = s.AuthenticateToken("ci-token", p1+"x")
	wantErr(t, err, ErrUnauthorized, "or its password is wrong")
	_, err = s.AuthenticateToken("someone", p1)
	wantErr(t, err, ErrUnauthorized, `token "someone" or its password is wrong`)

	// Expiry: password2 lapses, password1 stays.
	now = now.Add(time.Hour)
	_, err = s.AuthenticateToken("ci-token", p2)
	wantErr(t, err, ErrUnauthorized, "has expired")
	if _, err := s.AuthenticateToken("ci-token", p1); err != nil {
		t.Fatalf("password1 after password2 expired: %v", err)
	}

	// Rotation: a new password1 replaces the old one; password2's new one works.
	p1b, err := s.GenerateTokenPassword("ci-token", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.AuthenticateToken("ci-token", p1)
	wantErr(t, err, ErrUnauthorized, "or its password is wrong")
	if _, err := s.AuthenticateToken("ci-token", p1b); err != nil {
		t.Fatalf("rotated password1: %v", err)
	}
	p2b, _ := s.GenerateTokenPassword("ci-token", 2, nil)
	if _, err := s.AuthenticateToken("ci-token", p2b); err != nil {
		t.Fatalf("rotated password2: %v", err)
	}

	// Disabled: the right password is refused with a distinct error; a wrong one as before.
	dis, en := "disabled", "enabled"
	if _, err := s.UpdateToken("ci-token", acrapi.TokenUpdate{Status: &dis}); err != nil {
		t.Fatal(err)
	}
	_, err = s.AuthenticateToken("ci-token", p1b)
	wantErr(t, err, ErrTokenDisabled, `token "ci-token" is disabled`)
	wantErr(t, err, ErrUnauthorized, "disabled")
	_, err = s.AuthenticateToken("ci-token", "wrong")
	if errors.Is(err, ErrTokenDisabled) || !errors.Is(err, ErrUnauthorized) {
		t.Errorf("wrong password of a disabled token: %v", err)
	}
	if _, err := s.UpdateToken("ci-token", acrapi.TokenUpdate{Status: &en}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthenticateToken("ci-token", p1b); err != nil {
		t.Fatalf("re-enabled: %v", err)
	}

	// Deleted: refused.
	if err := s.DeleteToken("ci-token"); err != nil {
		t.Fatal(err)
	}
	_, err = s.AuthenticateToken("ci-token", p1b)
	wantErr(t, err, ErrUnauthorized, "or its password is wrong")
}

func TestAllowedPatterns(t *testing.T) {
	acts := []acrapi.RepositoryActions{ra("team/*", "metadata/read"), ra("exact", "content/delete"), ra("*", "content/read")}
	for _, tt := range []struct {
		repo, action string
		want         bool
	}{
		{"anything/at/all", "content/read", true},
		{"team/x", "metadata/read", true},
		{"team/x/y", "metadata/read", false},
		{"exact", "content/delete", true},
		{"exact/sub", "content/delete", false},
		{"exact", "metadata/write", false},
	} {
		if got := Allowed(acts, tt.repo, tt.action); got != tt.want {
			t.Errorf("Allowed(%s, %s) = %v, want %v", tt.repo, tt.action, got, tt.want)
		}
	}
	if Allowed(nil, "a", "content/read") {
		t.Error("nil actions allow")
	}
}
