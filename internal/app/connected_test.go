package app

import (
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-registry/outpost/internal/config"
	"github.com/outpost-registry/outpost/internal/controlplane"
	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

func TestLogLevelFromParent(t *testing.T) {
	var got []zapcore.Level
	n := &Node{log: zap.NewNop(), src: config.Sources{}}
	n.applyLogLevel("Debug") // nothing to set it with yet: ignored
	n.OnLogLevel(func(l zapcore.Level) { got = append(got, l) })
	for _, l := range []string{"Debug", "Debug", "Warning", "None", "Loud"} {
		n.applyLogLevel(l)
	}
	want := []zapcore.Level{zapcore.DebugLevel, zapcore.WarnLevel, zapcore.FatalLevel}
	if len(got) != len(want) {
		t.Fatalf("levels set %v, want %v (once per change, unknown ignored)", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("levels set %v, want %v", got, want)
		}
	}
	// The operator's own log.level wins.
	n2 := &Node{log: zap.NewNop(), src: config.Sources{"log.level": "flag --log-level"}}
	n2.OnLogLevel(func(l zapcore.Level) { t.Fatalf("set %v despite --log-level", l) })
	n2.applyLogLevel("Error")
}

// TestDeltaChild: deltas are prepared for a connected registry only while it is defined here,
// active (activated, not deactivated since), syncs the repository, and has delta sync on.
func TestDeltaChild(t *testing.T) {
	cp, err := controlplane.Open(filepath.Join(t.TempDir(), "cp.db"), controlplane.WithPasswordCost(bcrypt.MinCost))
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if (&Node{control: cp}).deltaChild("team/app") != nil {
		t.Error("a node that defines no connected registry would prepare deltas")
	}
	for _, spec := range []acrapi.ConnectedRegistrySpec{
		{Name: "siteOne", Repositories: []string{"team/**"}},
		{Name: "siteTwo", Repositories: []string{"other/app"}},
		{Name: "siteOff", Repositories: []string{"team/app"}, DeltaSync: acrapi.DeltaDisabled},
		{Name: "siteDeactivated", Repositories: []string{"team/app"}},
	} {
		spec.Mode, spec.SyncSchedule, spec.SyncMessageTTL, spec.LogLevel = acrapi.ModeReadOnly, "* * * * *", "P1D", "Information"
		if _, err := cp.Create(spec); err != nil {
			t.Fatalf("creating %s: %v", spec.Name, err)
		}
	}
	for _, name := range []string{"siteOne", "siteTwo", "siteOff", "siteDeactivated"} {
		if err := cp.Activate(name, "instance-"+name); err != nil {
			t.Fatal(err)
		}
	}
	if err := cp.Deactivate("siteDeactivated"); err != nil {
		t.Fatal(err)
	}
	child := (&Node{control: cp}).deltaChild("team/app")
	for name, want := range map[string]bool{"siteone": true, "siteOne": true, "sitetwo": false, "siteoff": false,
		"sitedeactivated": false, "sitegone": false} {
		if got := child(name); got != want {
			t.Errorf("deltaChild(team/app)(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestDefinitionsDropDeletedInventories: a node below the root, told by its parent's
// definitions that a connected registry below it was deleted, drops the inventory of layers
// that registry reported (the root drops it when the admin deletes it).
func TestDefinitionsDropDeletedInventories(t *testing.T) {
	open := func(name string) *controlplane.Store {
		cp, err := controlplane.Open(filepath.Join(t.TempDir(), name), controlplane.WithPasswordCost(bcrypt.MinCost))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cp.Close() })
		return cp
	}
	root := open("root.db")
	for _, spec := range []acrapi.ConnectedRegistrySpec{
		{Name: "gatewayL1", Repositories: []string{"team/**"}},
		{Name: "lineKept", Parent: "gatewayL1", Repositories: []string{"team/app"}},
		{Name: "lineDeleted", Parent: "gatewayL1", Repositories: []string{"team/app"}},
	} {
		spec.Mode, spec.SyncSchedule, spec.SyncMessageTTL, spec.LogLevel = acrapi.ModeReadOnly, "* * * * *", "P1D", "Information"
		if _, err := root.Create(spec); err != nil {
			t.Fatalf("creating %s: %v", spec.Name, err)
		}
	}
	definitions := func() acrapi.ChildConfig {
		self, err := root.Get("gatewayL1")
		if err != nil {
			t.Fatal(err)
		}
		below, err := root.Descendants("gatewayL1")
		if err != nil {
			t.Fatal(err)
		}
		return acrapi.ChildConfig{Registry: self, Descendants: below}
	}
	deltas, err := delta.NewService(t.TempDir(), nil, zap.NewNop(), delta.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{control: open("l1.db"), deltas: deltas, log: zap.NewNop()}
	n.applyDefinitions(definitions())
	inv := []acrapi.HeldLayer{{Digest: digest.FromString("layer").String(), Repository: "team/app"}}
	for _, name := range []string{"lineKept", "lineDeleted"} {
		if err := deltas.SetInventory(name, acrapi.InventoryHash(inv), inv); err != nil {
			t.Fatal(err)
		}
	}
	n.applyDefinitions(definitions()) // the same definitions: both stay
	if _, err := root.Delete("lineDeleted", false); err != nil {
		t.Fatal(err)
	}
	n.applyDefinitions(definitions())
	for name, want := range map[string]bool{"lineKept": true, "lineDeleted": false} {
		if _, _, ok := deltas.Inventory(name); ok != want {
			t.Errorf("after lineDeleted's deletion at the root, gatewayL1 holds the inventory of %s: %v, want %v", name, ok, want)
		}
	}
}
