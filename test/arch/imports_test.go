// Package arch_test enforces the import rules of docs/architecture.md: imports flow downwards.
package arch_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/outpost-registry/outpost/"

// layer orders internal packages: a package may import only packages of a lower layer.
// Packages of one layer never import each other (registry, acr and sync are wired by app).
var layer = map[string]int{
	"cmd/outpost":             7,
	"internal/cli":            6,
	"internal/app":            5,
	"internal/registry":       4,
	"internal/acr":            4,
	"internal/sync":           4,
	"internal/controlplane":   2,
	"internal/auth":           2,
	"internal/certs":          1,
	"internal/delta":          3,
	"internal/delta/recipe":   1,
	"internal/delta/tardelta": 2,
	"internal/delta/exediff":  1,
	"internal/delta/pflate":   0,
	"internal/delta/bsdiff":   0,
	"internal/config":         2,
	"internal/observe":        1,
	"internal/logging":        1,
	"internal/duration":       0,
	"internal/atomicfile":     0,
	"internal/iocount":        0,
	"internal/repopattern":    0,
	"internal/cronexpr":       0,
	"internal/version":        0,
	"pkg/acrapi":              0,
}

// layerOf finds the layer of a package path relative to the module, by its longest known prefix.
func layerOf(t *testing.T, rel string) int {
	best, n := "", -1
	for p, l := range layer {
		if (rel == p || strings.HasPrefix(rel, p+"/")) && len(p) > len(best) {
			best, n = p, l
		}
	}
	if n < 0 {
		t.Errorf("package %s has no layer: add it to the table in this test and to docs/architecture.md", rel)
	}
	return n
}

func TestImportsFlowDownwards(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, ok := strings.CutPrefix(fields[0], module)
		if !ok || strings.HasPrefix(pkg, "test/") {
			continue // test helpers may import anything
		}
		from := layerOf(t, pkg)
		for _, imp := range fields[1:] {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if strings.HasPrefix(dep, "test/") {
				t.Errorf("%s imports test code %s", pkg, dep)
				continue
			}
			if strings.HasPrefix(pkg, "pkg/") && strings.HasPrefix(dep, "internal/") {
				t.Errorf("%s imports %s: pkg/ is importable by other programs and must not depend on internal/", pkg, dep)
			}
			if to := layerOf(t, dep); to >= from {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports must flow downwards", pkg, from, dep, to)
			}
		}
	}
}
