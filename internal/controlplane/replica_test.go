package controlplane

import (
	"errors"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// TestClientTokensTravelDown: the root resolves the client tokens attached to a registry and
// below it; a replica applying them authenticates exactly those attached to itself, and a
// change at the root (disable, removal) takes effect with the next replica it applies.
func TestClientTokensTravelDown(t *testing.T) {
	root := openStore(t)
	if _, err := root.CreateScopeMap(acrapi.ScopeMapSpec{Name: "readers", Actions: []acrapi.RepositoryActions{{Repository: "app/*", Actions: []string{acrapi.ActionContentRead}}}}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gate-reader", "line-reader"} {
		if _, err := root.CreateToken(acrapi.TokenSpec{Name: name, ScopeMap: "readers"}); err != nil {
			t.Fatal(err)
		}
	}
	gatePw, _ := root.GenerateTokenPassword("gate-reader", 1, nil)
	linePw, _ := root.GenerateTokenPassword("line-reader", 1, nil)
	soon := time.Now().Add(time.Hour)
	linePw2, _ := root.GenerateTokenPassword("line-reader", 2, &soon)
	for _, spec := range []acrapi.ConnectedRegistrySpec{
		{Name: "gatewayL1", Mode: acrapi.ModeReadWrite, Repositories: []string{"app/*"}, ClientTokens: []string{"gate-reader"}},
		{Name: "lineL2", Parent: "gatewayL1", Repositories: []string{"app/one"}, ClientTokens: []string{"line-reader", "gate-reader"}},
	} {
		if _, err := root.Create(spec); err != nil {
			t.Fatal(err)
		}
	}
	// What the root sends gatewayL1: the tokens of gatewayL1 and lineL2.
	configFor := func(t *testing.T) acrapi.ChildConfig {
		t.Helper()
		self, _ := root.Get("gatewayL1")
		below, _ := root.Descendants("gatewayL1")
		clients, err := root.ClientTokens([]string{"gatewayL1", "lineL2"})
		if err != nil {
			t.Fatal(err)
		}
		return acrapi.ChildConfig{Registry: self, Descendants: below, ClientTokens: clients}
	}
	cfg := configFor(t)
	if len(cfg.ClientTokens) != 2 || cfg.ClientTokens[0].Name != "gate-reader" || len(cfg.ClientTokens[0].Registries) != 2 ||
		cfg.ClientTokens[1].Name != "line-reader" || len(cfg.ClientTokens[1].Registries) != 1 || cfg.ClientTokens[1].Password2.Expiry == nil ||
		len(cfg.ClientTokens[0].Actions) != 1 {
		t.Fatalf("client tokens sent down: %+v", cfg.ClientTokens)
	}

	l1 := openStore(t)
	if err := l1.ApplyReplica(cfg); err != nil {
		t.Fatal(err)
	}
	gen := l1.Generation()
	if err := l1.ApplyReplica(cfg); err != nil || l1.Generation() != gen {
		t.Fatalf("an identical replica moved the generation (%v)", err)
	}
	if acts, until, err := l1.AuthenticateClientToken("gate-reader", gatePw, "gatewayL1"); err != nil || until != nil || len(acts) != 1 {
		t.Fatalf("gate-reader at gatewayL1: %v %v %v", acts, until, err)
	}
	if _, _, err := l1.AuthenticateClientToken("line-reader", linePw, "gatewayL1"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("line-reader at gatewayL1 (attached to lineL2 only): %v", err)
	}
	if _, until, err := l1.AuthenticateClientToken("line-reader", linePw2, "lineL2"); err != nil || until == nil || !until.Equal(soon.UTC()) {
		t.Fatalf("line-reader's password2 at lineL2: until %v, %v", until, err)
	}
	// gatewayL1 passes lineL2's share on from its replica.
	down, err := l1.ClientTokens([]string{"lineL2"})
	if err != nil || len(down) != 2 || down[0].Registries[0] != "lineL2" || down[1].Registries[0] != "lineL2" {
		t.Fatalf("client tokens gatewayL1 sends lineL2: %+v %v", down, err)
	}
	if spec, ok := l1.Self(); !ok || spec.Name != "gatewayL1" || spec.Mode != acrapi.ModeReadWrite {
		t.Fatalf("Self: %+v %v", spec, ok)
	}

	// Disabled at the root: refused at the edge after the next replica.
	disabled := acrapi.TokenStatusDisabled
	if _, err := root.UpdateToken("gate-reader", acrapi.TokenUpdate{Status: &disabled}); err != nil {
		t.Fatal(err)
	}
	if err := l1.ApplyReplica(configFor(t)); err != nil {
		t.Fatal(err)
	}
	if l1.Generation() == gen {
		t.Fatal("a changed replica kept the generation")
	}
	if _, _, err := l1.AuthenticateClientToken("gate-reader", gatePw, "gatewayL1"); !errors.Is(err, ErrTokenDisabled) {
		t.Fatalf("disabled gate-reader: %v", err)
	}
	// Removed from gatewayL1: unknown there after the next replica.
	if _, err := root.Update("gatewayL1", acrapi.ConnectedRegistryUpdate{RemoveClientTokens: []string{"gate-reader"}}); err != nil {
		t.Fatal(err)
	}
	if err := l1.ApplyReplica(configFor(t)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l1.AuthenticateClientToken("gate-reader", gatePw, "gatewayL1"); !errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrTokenDisabled) {
		t.Fatalf("removed gate-reader: %v", err)
	}
	// A malformed token from the parent is refused as a whole.
	bad := configFor(t)
	bad.ClientTokens = append(bad.ClientTokens, acrapi.ClientTokenHashes{Name: "x", Status: "enabled", Registries: []string{"lineL2"}})
	if err := l1.ApplyReplica(bad); err == nil {
		t.Fatal("a client token with an invalid name was applied")
	}
}
