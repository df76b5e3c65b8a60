// Package deploy_test checks the deployment artifacts (Dockerfile, IoT Edge manifests…) against
// what the binary really does, without a container engine.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/internal/cli"
	"github.com/outpost-registry/outpost/internal/config"
)

// repoRoot is the module's root, relative to this package.
const repoRoot = "../.."

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, …
	args string
	line int
}

// stage is the instructions from one FROM to the next.
type stage struct {
	from  instruction
	insts []instruction
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.insts {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// parseDockerfile splits a Dockerfile into global instructions (before the first FROM) and
// stages. It knows the subset the project's Dockerfile uses: comments, parser directives,
// backslash continuations.
func parseDockerfile(t *testing.T, path string) (global []instruction, stages []stage) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	var cur strings.Builder
	start, n := 0, 0
	flush := func() {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		switch {
		case in.cmd == "FROM":
			stages = append(stages, stage{from: in})
		case len(stages) == 0:
			global = append(global, in)
		default:
			stages[len(stages)-1].insts = append(stages[len(stages)-1].insts, in)
		}
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue // comments, parser directives; also between continuation lines
		}
		if cur.Len() == 0 {
			if trimmed == "" {
				continue
			}
			start = n
		}
		if s, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return global, stages
}

// argDefaults are the ARG name=default pairs in ins.
func argDefaults(ins []instruction) map[string]string {
	m := map[string]string{}
	for _, in := range ins {
		if in.cmd != "ARG" {
			continue
		}
		for _, f := range strings.Fields(in.args) {
			k, v, _ := strings.Cut(f, "=")
			m[k] = v
		}
	}
	return m
}

// keyValues parses LABEL/ENV arguments of the form k="v" k2=v2.
var kvRE = regexp.MustCompile(`([A-Za-z0-9_.\-]+)=("(?:[^"\\]|\\.)*"|\S+)`)

func keyValues(ins []instruction) map[string]string {
	m := map[string]string{}
	for _, in := range ins {
		for _, sub := range kvRE.FindAllStringSubmatch(in.args, -1) {
			m[sub[1]] = strings.Trim(sub[2], `"`)
		}
	}
	return m
}

// execForm decodes a JSON array (exec form) after the given prefix flags are removed.
func execForm(t *testing.T, what, s string) []string {
	t.Helper()
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Errorf("%s %s: not the exec (JSON array) form: %v", what, s, err)
	}
	return out
}

func TestDockerfile(t *testing.T) {
	global, stages := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a multi-stage build (build, runtime)", len(stages))
	}
	globalArgs := argDefaults(global)
	resolve := func(s string, args map[string]string) string {
		return os.Expand(s, func(k string) string { return args[k] })
	}

	// The build stage: a static, trimmed binary with the Makefile's version ldflags.
	build := stages[0]
	if !strings.Contains(build.from.args, " AS ") && !strings.Contains(build.from.args, " as ") {
		t.Errorf("line %d: the build stage is not named (FROM … AS build)", build.from.line)
	}
	if img := resolve(strings.Fields(strings.TrimPrefix(build.from.args, "--platform=${BUILDPLATFORM:-linux/amd64} "))[0], globalArgs); !strings.HasPrefix(img, "golang:1.26") {
		t.Errorf("line %d: the build stage is FROM %s, want golang:1.26 (the go.mod toolchain)", build.from.line, img)
	}
	var goBuild string
	for _, in := range build.all("RUN") {
		if strings.Contains(in.args, "go build") {
			goBuild = in.args
		}
	}
	if goBuild == "" {
		t.Fatal("the build stage has no RUN … go build")
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/outpost"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("the go build RUN lacks %s: %s", want, goBuild)
		}
	}
	makefile, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	// Every -X the Makefile sets, the image sets too, from the VERSION and COMMIT build args.
	xs := regexp.MustCompile(`-X (\S+)=\$\((\w+)\)`).FindAllStringSubmatch(string(makefile), -1)
	if len(xs) < 2 {
		t.Fatalf("Makefile: found %d -X ldflags, want the version and commit", len(xs))
	}
	buildArgs := argDefaults(build.insts)
	for _, x := range xs {
		want := "-X " + x[1] + "=${" + x[2] + "}"
		if !strings.Contains(goBuild, want) {
			t.Errorf("the go build RUN lacks %q (the Makefile sets %s)", want, x[0])
		}
		if _, ok := buildArgs[x[2]]; !ok {
			t.Errorf("the build stage does not declare ARG %s", x[2])
		}
	}

	// The runtime stage.
	rt := stages[len(stages)-1]
	if img := resolve(rt.from.args, globalArgs); img != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("line %d: the runtime base is %q, want gcr.io/distroless/static-debian12:nonroot", rt.from.line, img)
	}
	users := rt.all("USER")
	if len(users) == 0 || !slices.Contains([]string{"65532", "65532:65532"}, users[len(users)-1].args) {
		t.Errorf("the runtime stage's USER is %v, want 65532:65532 (nonroot)", users)
	}
	// One legacy deflate helper per module file of cmd/outpost-legacy-deflate: go.mod's is
	// outpost-legacy-deflate, klauspost1.15.mod's outpost-legacy-deflate-klauspost1.15.
	mods, err := filepath.Glob(filepath.Join(repoRoot, "cmd", "outpost-legacy-deflate", "*.mod"))
	if err != nil || len(mods) < 2 {
		t.Fatalf("cmd/outpost-legacy-deflate: module files %v (%v); want go.mod and at least one other", mods, err)
	}
	helpers := map[string]bool{}
	for _, m := range mods {
		name := "/outpost-legacy-deflate"
		if base := strings.TrimSuffix(filepath.Base(m), ".mod"); base != "go" {
			name += "-" + base
		}
		helpers[name] = false
	}
	var dataOwned, binCopied bool
	for _, in := range rt.all("COPY") {
		f := strings.Fields(in.args)
		if f[len(f)-1] == "/var/acr/data" && slices.Contains(f, "--chown=65532:65532") {
			dataOwned = true
		}
		if f[len(f)-1] == "/outpost" && slices.Contains(f, "--from=build") {
			binCopied = true
		}
		if _, ok := helpers[f[len(f)-1]]; ok && slices.Contains(f, "--from=build") {
			helpers[f[len(f)-1]] = true
		}
	}
	for name, copied := range helpers {
		if !copied {
			t.Errorf("no COPY --from=build … %s: the node looks for the legacy deflate helpers beside /outpost", name)
		}
	}
	if !dataOwned {
		t.Error("no COPY --chown=65532:65532 … /var/acr/data: the data directory would be root's, and the node could not write it")
	}
	if !binCopied {
		t.Error("no COPY --from=build … /outpost")
	}
	if v := rt.all("VOLUME"); len(v) != 1 || (v[0].args != "/var/acr/data" && v[0].args != `["/var/acr/data"]`) {
		t.Errorf("VOLUME: %v, want /var/acr/data", v)
	}
	if e := rt.all("EXPOSE"); len(e) != 1 || (e[0].args != "8080" && e[0].args != "8080/tcp") {
		t.Errorf("EXPOSE: %v, want 8080", e)
	}

	hc := rt.all("HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("HEALTHCHECK: %d instructions, want 1", len(hc))
	}
	_, cmd, ok := strings.Cut(hc[0].args, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %s: no CMD", hc[0].args)
	}
	if got := execForm(t, "HEALTHCHECK CMD", cmd); !slices.Equal(got, []string{"/outpost", "healthcheck"}) {
		t.Errorf("HEALTHCHECK CMD %q, want [\"/outpost\",\"healthcheck\"]", got)
	}
	if ep := rt.all("ENTRYPOINT"); len(ep) != 1 || !slices.Equal(execForm(t, "ENTRYPOINT", ep[0].args), []string{"/outpost"}) {
		t.Errorf("ENTRYPOINT: %v, want [\"/outpost\"]", ep)
	}
	if c := rt.all("CMD"); len(c) != 1 || !slices.Equal(execForm(t, "CMD", c[0].args), []string{"serve"}) {
		t.Errorf("CMD: %v, want [\"serve\"]", c)
	}

	// The binary has the command the HEALTHCHECK runs.
	var out, errOut bytes.Buffer
	if code := cli.Run(context.Background(), []string{"healthcheck", "--help"}, cli.Env{Stdout: &out, Stderr: &errOut}); code != 0 || !strings.Contains(out.String(), "--url") {
		t.Errorf("outpost healthcheck --help: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}

	// Environment: the data directory and JSON logs, through configuration keys the binary reads.
	env := keyValues(rt.all("ENV"))
	want := map[string]string{config.EnvName("dataDir"): "/var/acr/data", config.EnvName("log.format"): "json"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("ENV %s=%q, want %q", k, env[k], v)
		}
	}
	keys := map[string]bool{}
	for _, k := range config.Keys() {
		keys[config.EnvName(k)] = true
	}
	for k := range env {
		if !keys[k] {
			t.Errorf("ENV %s is not a configuration key's variable: the binary ignores it", k)
		}
	}

	// OCI labels, the build-dependent ones from build args declared in the runtime stage.
	labels := keyValues(rt.all("LABEL"))
	rtArgs := argDefaults(rt.insts)
	for k, arg := range map[string]string{
		"org.opencontainers.image.title":       "",
		"org.opencontainers.image.description": "",
		"org.opencontainers.image.source":      "SOURCE",
		"org.opencontainers.image.licenses":    "LICENSES",
		"org.opencontainers.image.version":     "VERSION",
		"org.opencontainers.image.revision":    "COMMIT",
	} {
		v, ok := labels[k]
		switch {
		case !ok || v == "":
			t.Errorf("LABEL %s is missing", k)
		case arg != "" && v != "${"+arg+"}":
			t.Errorf("LABEL %s=%q, want ${%s} (a build arg)", k, v, arg)
		case arg != "":
			if _, ok := rtArgs[arg]; !ok {
				t.Errorf("LABEL %s uses ${%s}, but the runtime stage does not declare ARG %s (it would be empty)", k, arg, arg)
			}
		}
	}
	if !strings.Contains(string(makefile), "--build-arg VERSION=$(VERSION)") || !strings.Contains(string(makefile), "--build-arg COMMIT=$(COMMIT)") {
		t.Error("make image does not pass --build-arg VERSION and COMMIT")
	}

	// The build context leaves out what the build does not need.
	if di, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore")); err != nil {
		t.Errorf(".dockerignore: %v", err)
	} else if lines := strings.Fields(string(di)); !slices.Contains(lines, ".git") || !slices.Contains(lines, "dist") {
		t.Errorf(".dockerignore does not leave out .git and dist: %q", lines)
	}
}

// TestDistCrossCompiles builds the binary for every platform `make dist` releases, as it does
// (CGO_ENABLED=0, -trimpath; without optimisation but for the host's), and checks each is a
// static ELF for that machine.
func TestDistCrossCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: cross-compiling three binaries takes minutes on a cold build cache")
	}
	makefile, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^DIST_PLATFORMS\s*:?=\s*(.+)$`).FindStringSubmatch(string(makefile))
	if m == nil {
		t.Fatal("Makefile: no DIST_PLATFORMS")
	}
	platforms := strings.Fields(m[1])
	machines := map[string]elf.Machine{"linux/amd64": elf.EM_X86_64, "linux/arm64": elf.EM_AARCH64, "linux/arm/v7": elf.EM_ARM}
	for p := range machines {
		if !slices.Contains(platforms, p) {
			t.Errorf("make dist does not build %s (DIST_PLATFORMS = %q)", p, platforms)
		}
	}
	if !strings.Contains(string(makefile), "sha256sum") {
		t.Error("make dist writes no sha256 sums")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command on PATH: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 9*time.Minute)
	defer cancel()
	dir := t.TempDir()
	for _, p := range platforms {
		parts := strings.Split(p, "/")
		out := filepath.Join(dir, strings.Join(parts, "-"))
		env := append(os.Environ(), "CGO_ENABLED=0", "GOOS="+parts[0], "GOARCH="+parts[1])
		if len(parts) == 3 {
			env = append(env, "GOARM="+strings.TrimPrefix(parts[2], "v"))
		}
		start := time.Now()
		args := []string{"build", "-trimpath", "-ldflags", "-s -w", "-o", out}
		if p != runtime.GOOS+"/"+runtime.GOARCH {
			// The host's build is the release build, and shares make build's compilation. The
			// others are compiled without optimisation, which takes a third less CPU on a
			// fresh machine (arm64: 97 CPU-seconds against 144); what breaks a platform's
			// build (build constraints, word size, assembly) breaks it the same.
			args = append(args, "-gcflags=all=-N -l")
		}
		cmd := exec.CommandContext(ctx, gobin, append(args, "./cmd/outpost")...)
		cmd.Dir = repoRoot
		cmd.Env = env
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build for %s: %v\n%s", p, err, b)
		}
		t.Logf("go build for %s: %s", p, time.Since(start).Round(time.Millisecond))
		f, err := elf.Open(out)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if want, ok := machines[p]; ok && f.Machine != want {
			t.Errorf("%s: ELF machine %v, want %v", p, f.Machine, want)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s: the binary has an ELF interpreter: it is dynamically linked, not static", p)
			}
		}
		f.Close()
	}
}
