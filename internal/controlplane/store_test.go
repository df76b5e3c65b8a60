package controlplane

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	s.cost = bcrypt.MinCost
	t.Cleanup(func() { s.Close() })
	return s
}

func spec(name, parent, mode string, repos ...string) acrapi.ConnectedRegistrySpec {
	return acrapi.ConnectedRegistrySpec{Name: name, Parent: parent, Mode: mode, Repositories: repos}
}

func mustCreate(t *testing.T, s *Store, sp acrapi.ConnectedRegistrySpec) acrapi.ConnectedRegistry {
	t.Helper()
	r, err := s.Create(sp)
	if err != nil {
		t.Fatalf("create %s: %v", sp.Name, err)
	}
	return r
}

func TestCreateDefaults(t *testing.T) {
	s := openStore(t)
	r := mustCreate(t, s, spec("siteA01", "", "", "team/**", "library/alpine", "library/alpine"))
	if r.Mode != acrapi.ModeReadOnly || r.SyncSchedule != "* * * * *" || r.SyncMessageTTL != "P2D" || r.LogLevel != "Information" {
		t.Fatalf("defaults: %+v", r)
	}
	if len(r.Repositories) != 2 || r.SyncTokenName != "siteA01-sync-token" || r.ActivationStatus != "Inactive" || r.ConnectionState != "Offline" {
		t.Fatalf("created: %+v", r)
	}
}

func TestCreateRules(t *testing.T) {
	s := openStore(t)
	mustCreate(t, s, spec("gateway1", "", acrapi.ModeReadWrite, "team/**", "library/*"))
	mustCreate(t, s, spec("readonly1", "", acrapi.ModeReadOnly, "team/**"))
	tests := []struct {
		name string
		sp   acrapi.ConnectedRegistrySpec
		want error
		msg  string
	}{
		{"short name", spec("ab12", "", "", "a"), ErrInvalid, "5 to 40 letters and digits"},
		{"name starts with digit", spec("1site", "", "", "a"), ErrInvalid, "starting with a letter"},
		{"name too long", spec("a"+strings.Repeat("b", 40), "", "", "a"), ErrInvalid, "5 to 40"},
		{"name with dash", spec("site-one", "", "", "a"), ErrInvalid, "letters and digits"},
		{"duplicate, other case", spec("GATEWAY1", "", "", "a"), ErrExists, "gateway1"},
		{"unknown parent", spec("line0001", "nosuchone", "", "team/a"), ErrInvalid, `parent "nosuchone" is not a connected registry`},
		{"ReadWrite under ReadOnly", spec("line0002", "readonly1", acrapi.ModeReadWrite, "team/a"), ErrInvalid, "ReadWrite is not allowed under readonly1"},
		{"repository outside parent", spec("line0003", "gateway1", "", "other/app"), ErrInvalid, `"other/app" is not within the repositories of parent gateway1`},
		{"wider pattern than parent", spec("line0004", "gateway1", "", "library/**"), ErrInvalid, "not within"},
		{"no repositories", spec("line0005", "", "", ""), ErrInvalid, "repositories are empty"},
		{"bad repository", spec("line0006", "", "", "Team/*/x"), ErrInvalid, "repository"},
		{"bad mode", spec("line0007", "", "Mirror", "a"), ErrInvalid, `mode "Mirror": expected ReadOnly or ReadWrite`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Create(tt.sp)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
	// Allowed: ReadOnly under ReadWrite, a narrower pattern, an exact name under ns/*.
	mustCreate(t, s, spec("line0010", "gateway1", acrapi.ModeReadOnly, "team/app/*", "library/alpine"))
	mustCreate(t, s, spec("line0011", "gateway1", acrapi.ModeReadWrite, "team/**"))
	mustCreate(t, s, spec("cell00001", "line0010", "", "team/app/x"))
}

func TestFieldRules(t *testing.T) {
	s := openStore(t)
	for _, tt := range []struct {
		mutate func(*acrapi.ConnectedRegistrySpec)
		msg    string
	}{
		{func(sp *acrapi.ConnectedRegistrySpec) { sp.SyncSchedule = "every hour" }, "syncSchedule"},
		{func(sp *acrapi.ConnectedRegistrySpec) { sp.SyncWindow = "PT10S" }, "syncWindow PT10S is out of range"},
		{func(sp *acrapi.ConnectedRegistrySpec) { sp.SyncWindow = "P8D" }, "expected PT1M to P7D"},
		{func(sp *acrapi.ConnectedRegistrySpec) { sp.SyncMessageTTL = "PT12H" }, "syncMessageTtl PT12H is out of range: expected P1D to P90D"},
		{func(sp *acrapi.ConnectedRegistrySpec) { sp.SyncMessageTTL = "P91D" }, "out of range"},
		{func(sp *acrapi.ConnectedRegistrySpec) { sp.SyncMessageTTL = "two days" }, "syncMessageTtl"},
		{func(sp *acrapi.ConnectedRegistrySpec) { sp.LogLevel = "Verbose" }, `logLevel "Verbose": expected one of Debug, Information, Warning, Error, None`},
		{func(sp *acrapi.ConnectedRegistrySpec) { sp.ClientTokens = []string{"x"} }, "client token"},
	} {
		sp := spec("siteB0001", "", "", "a")
		tt.mutate(&sp)
		if _, err := s.Create(sp); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("err = %v, want it to contain %q", err, tt.msg)
		}
	}
	sp := spec("siteB0001", "", "", "a")
	sp.SyncWindow, sp.SyncMessageTTL, sp.LogLevel, sp.SyncSchedule = "PT3H", "P90D", "None", "0 1 * * *"
	mustCreate(t, s, sp)
}

func TestUpdateRules(t *testing.T) {
	s := openStore(t)
	mustCreate(t, s, spec("gateway1", "", acrapi.ModeReadWrite, "team/**"))
	mustCreate(t, s, spec("line0001", "gateway1", "", "team/app"))

	mustScopeMap(t, s, "readers", ra("team/**", "content/read"))
	mustToken(t, s, "client-token-1", "readers")
	w := "PT2H"
	r, err := s.Update("GATEWAY1", acrapi.ConnectedRegistryUpdate{SyncWindow: &w, AddRepositories: []string{"library/alpine"}, AddClientTokens: []string{"client-token-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.SyncWindow != "PT2H" || len(r.Repositories) != 2 || len(r.ClientTokens) != 1 {
		t.Fatalf("updated: %+v", r)
	}
	// The parent may not drop what a child syncs.
	if _, err := s.Update("gateway1", acrapi.ConnectedRegistryUpdate{RemoveRepositories: []string{"team/**"}}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `would no longer include "team/app", which child line0001 syncs`) {
		t.Fatalf("err = %v", err)
	}
	// A child may not grow beyond its parent.
	if _, err := s.Update("line0001", acrapi.ConnectedRegistryUpdate{AddRepositories: []string{"other/x"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	bad := "Loud"
	if _, err := s.Update("line0001", acrapi.ConnectedRegistryUpdate{LogLevel: &bad}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	if _, err := s.Update("nosuchone", acrapi.ConnectedRegistryUpdate{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	got, _ := s.Get("gateway1")
	if len(got.Repositories) != 2 {
		t.Fatalf("a refused update changed the definition: %+v", got)
	}
}

func TestDeleteNeedsCascade(t *testing.T) {
	s := openStore(t)
	mustCreate(t, s, spec("gateway1", "", acrapi.ModeReadWrite, "team/**"))
	mustCreate(t, s, spec("line0001", "gateway1", "", "team/a"))
	mustCreate(t, s, spec("cell00001", "line0001", "", "team/a"))
	mustCreate(t, s, spec("gateway2", "", "", "x"))
	if _, err := s.Delete("gateway1", false); !errors.Is(err, ErrHasChildren) || !strings.Contains(err.Error(), "line0001, cell00001") {
		t.Fatalf("err = %v", err)
	}
	deleted, err := s.Delete("gateway1", true)
	if err != nil || strings.Join(deleted, ",") != "line0001,cell00001,gateway1" {
		t.Fatalf("deleted %v, %v", deleted, err)
	}
	all, _ := s.List()
	if len(all) != 1 || all[0].Name != "gateway2" {
		t.Fatalf("left: %+v", all)
	}
	if _, err := s.Delete("gateway1", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
}

func TestListIsTreeOrder(t *testing.T) {
	s := openStore(t)
	mustCreate(t, s, spec("zulu00001", "", acrapi.ModeReadWrite, "*"))
	mustCreate(t, s, spec("alpha0001", "", acrapi.ModeReadWrite, "*"))
	mustCreate(t, s, spec("beta00001", "zulu00001", "", "a"))
	mustCreate(t, s, spec("alpha0002", "zulu00001", "", "a"))
	all, _ := s.List()
	var names []string
	for _, r := range all {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, ","); got != "alpha0001,zulu00001,alpha0002,beta00001" {
		t.Fatalf("order %s", got)
	}
	below, _ := s.Descendants("zulu00001")
	if len(below) != 2 {
		t.Fatalf("descendants %+v", below)
	}
}

func TestSyncTokenPasswordsAndActivation(t *testing.T) {
	s := openStore(t)
	mustCreate(t, s, spec("siteA0001", "", "", "a"))
	if _, err := s.Authenticate("siteA0001-sync-token", ""); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("a token without passwords authenticated: %v", err)
	}
	tok, p1, err := s.GeneratePassword("siteA0001", 1)
	if err != nil || tok != "siteA0001-sync-token" || len(p1) < 40 {
		t.Fatalf("generate: %q %q %v", tok, p1, err)
	}
	_, p2, _ := s.GeneratePassword("siteA0001", 2)
	for _, p := range []string{p1, p2} {
		if owner, err := s.Authenticate(tok, p); err != nil || owner != "siteA0001" {
			t.Fatalf("authenticate: %q %v", owner, err)
		}
	}
	if _, err := s.Authenticate(tok, p1+"x"); !errors.Is(err, ErrUnauthorized) {
		t.Fatal("wrong password accepted")
	}
	if _, err := s.Authenticate("other-token", p1); !errors.Is(err, ErrUnauthorized) {
		t.Fatal("wrong token name accepted")
	}
	// Rotating slot 1 invalidates the old password 1; password 2 still works.
	_, p1b, _ := s.GeneratePassword("siteA0001", 1)
	if _, err := s.Authenticate(tok, p1); err == nil {
		t.Fatal("rotated password still accepted")
	}
	if _, err := s.Authenticate(tok, p1b); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GeneratePassword("siteA0001", 3); !errors.Is(err, ErrInvalid) {
		t.Fatal("slot 3 accepted")
	}

	if err := s.Activate("siteA0001", "instance-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate("siteA0001", "instance-1"); err != nil {
		t.Fatalf("the same instance re-activating: %v", err)
	}
	if err := s.Activate("siteA0001", "instance-2"); !errors.Is(err, ErrAlreadyActivated) {
		t.Fatalf("second instance: %v", err)
	}
	if err := s.Deactivate("siteA0001"); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate("siteA0001", "instance-2"); err != nil {
		t.Fatalf("after deactivate: %v", err)
	}
}

func TestConnectionState(t *testing.T) {
	s := openStore(t)
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	sp := spec("siteA0001", "", "", "a")
	sp.SyncSchedule = "*/10 * * * *"
	mustCreate(t, s, sp)
	if r, _ := s.Get("siteA0001"); r.ConnectionState != acrapi.StateOffline {
		t.Fatalf("inactive: %s", r.ConnectionState)
	}
	_ = s.Activate("siteA0001", "i")
	if err := s.ReportStatus("siteA0001", acrapi.NodeStatus{ConnectionState: acrapi.StateSyncing}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Get("siteA0001"); r.ConnectionState != acrapi.StateSyncing || r.ActivationStatus != "Active" {
		t.Fatalf("reported: %+v", r)
	}
	now = now.Add(19 * time.Minute) // within twice the 10-minute period
	if r, _ := s.Get("siteA0001"); r.ConnectionState != acrapi.StateSyncing {
		t.Fatalf("after 19m: %s", r.ConnectionState)
	}
	now = now.Add(2 * time.Minute)
	if r, _ := s.Get("siteA0001"); r.ConnectionState != acrapi.StateOffline {
		t.Fatalf("after 21m of silence: %s", r.ConnectionState)
	}
	// A relayed status counts from when the node itself was last active.
	if err := s.RelayStatus("siteA0001", acrapi.NodeStatus{ConnectionState: acrapi.StateOnline, LastActivityTime: now.Add(-30 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Get("siteA0001"); r.ConnectionState != acrapi.StateOffline {
		t.Fatalf("a stale relayed status revived the node: %s", r.ConnectionState)
	}
	if err := s.RelayStatus("siteA0001", acrapi.NodeStatus{ConnectionState: acrapi.StateOnline, LastActivityTime: now.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Get("siteA0001"); r.ConnectionState != acrapi.StateOnline {
		t.Fatalf("a fresh relayed status: %s", r.ConnectionState)
	}
}

func TestDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cp.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, spec("siteA0001", "", "", "a"))
	s.Close()
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Get("siteA0001"); err != nil {
		t.Fatal(err)
	}
}

func TestAdmin(t *testing.T) {
	s := openStore(t)
	if err := s.AuthenticateAdmin("admin", "anything-long"); !errors.Is(err, ErrUnauthorized) {
		t.Fatal("admin authenticated before any password was set")
	}
	gen, err := s.EnsureAdmin("")
	if err != nil || len(gen) < 30 {
		t.Fatalf("generated %q, %v", gen, err)
	}
	if again, err := s.EnsureAdmin("ignored-at-later-starts"); err != nil || again != "" {
		t.Fatalf("second start: %q %v", again, err)
	}
	if err := s.AuthenticateAdmin("admin", gen); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"admin", gen + "x"}, {"root", gen}, {"", ""}} {
		if err := s.AuthenticateAdmin(c[0], c[1]); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("accepted %q", c[0])
		}
	}
	s2 := openStore(t)
	if _, err := s2.EnsureAdmin("short"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short admin password accepted: %v", err)
	}
	if gen, err := s2.EnsureAdmin("a-long-enough-password"); err != nil || gen != "" {
		t.Fatalf("%q %v", gen, err)
	}
	if err := s2.AuthenticateAdmin("admin", "a-long-enough-password"); err != nil {
		t.Fatal(err)
	}
}
