package cli

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/internal/controlplane"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// clientTokens creates tokens names on r's store, with a scope map of their own, so that
// connected registries may name them as client tokens.
func (r *crRoot) clientTokens(t *testing.T, names ...string) {
	t.Helper()
	if _, err := r.store.CreateScopeMap(acrapi.ScopeMapSpec{Name: "client-tokens",
		Actions: []acrapi.RepositoryActions{{Repository: "*", Actions: []string{acrapi.ActionContentRead}}}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := r.store.CreateToken(acrapi.TokenSpec{Name: n, ScopeMap: "client-tokens"}); err != nil {
			t.Fatal(err)
		}
	}
}

// cliRun runs `outpost args…` against r; the admin password must show nowhere.
func (r *crRoot) cliRun(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := Run(ctx, args, Env{Stdout: &out, Stderr: &errOut, Environ: r.env()})
	res := result{code, out.String(), errOut.String()}
	if strings.Contains(res.stdout+res.stderr, testAdminPassword) {
		t.Errorf("%v: the admin password is printed: stdout %q stderr %q", args, res.stdout, res.stderr)
	}
	return res
}

func (r *crRoot) cliOK(t *testing.T, args ...string) string {
	t.Helper()
	res := r.cliRun(t, args...)
	if res.code != ExitOK || res.stderr != "" {
		t.Fatalf("%v: exit %d, stderr %q", args, res.code, res.stderr)
	}
	return res.stdout
}

// cliFails runs a command that must exit with code and one error line holding want.
func (r *crRoot) cliFails(t *testing.T, code int, args []string, want ...string) {
	t.Helper()
	res := r.cliRun(t, args...)
	if res.code != code {
		t.Errorf("%v: exit %d, want %d; stderr %q", args, res.code, code, res.stderr)
	}
	oneErrorLine(t, res, want...)
	if res.stdout != "" {
		t.Errorf("%v: stdout %q, want none", args, res.stdout)
	}
}

// TestTokenCreateRepositoryOrScopeMap: a token has one scope map, named or made from
// --repository; both, or neither, is a usage error naming the flags.
func TestTokenCreateRepositoryOrScopeMap(t *testing.T) {
	env := []string{"OUTPOST_REGISTRY=http://127.0.0.1:1", "OUTPOST_PASSWORD=x"}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "create", "--name", "puller1", "--scope-map", "readers", "--repository", "app", "content/read"}, "flags --scope-map and --repository: pass one"},
		{[]string{"token", "create", "--name", "puller1"}, "--scope-map"},
		{[]string{"token", "create", "--name", "puller1", "--repository", "app", "content/reed"}, `unexpected argument "content/reed"`},
	} {
		r := runEnv(t, env, tt.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
}

func TestJoinScopeMapActions(t *testing.T) {
	for _, tt := range []struct{ in, want []string }{
		{[]string{"scope-map", "create", "--repository", "app/*", "content/read", "Content/Write", "--name", "x"},
			[]string{"scope-map", "create", "--repository", "app/* content/read,Content/Write", "--name", "x"}},
		{[]string{"scope-map", "update", "--add-repository=base", "metadata/read", "--remove-repository", "a", "content/read"},
			[]string{"scope-map", "update", "--add-repository", "base metadata/read", "--remove-repository", "a content/read"}},
		{[]string{"scope-map", "create", "--repository", "a=content/read", "extra"},
			[]string{"scope-map", "create", "--repository", "a=content/read", "extra"}},
		{[]string{"token", "create", "--repository", "a", "content/read"}, []string{"token", "create", "--repository", "a content/read"}},
		{[]string{"token", "update", "--repository", "a", "content/read"}, []string{"token", "update", "--repository", "a", "content/read"}},
		{[]string{"scope-map", "create", "--repository"}, []string{"scope-map", "create", "--repository"}},
	} {
		if got := joinScopeMapActions(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("joinScopeMapActions(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestScopeMapCLI(t *testing.T) {
	t.Parallel()
	root := startCRRoot(t, false)

	// The three forms of --repository: az's words, one spaced value, repo=actions.
	sm := decodeJSON[acrapi.ScopeMap](t, root.cliOK(t, "scope-map", "create", "--name", "pullers", "--repository", "app/*", "content/read", "metadata/read",
		"--repository", "base content/read", "--repository", "tools/**=content/read,content/write", "--description", "pull only", "-o", "json"))
	want := []acrapi.RepositoryActions{{Repository: "app/*", Actions: []string{"content/read", "metadata/read"}},
		{Repository: "base", Actions: []string{"content/read"}}, {Repository: "tools/**", Actions: []string{"content/read", "content/write"}}}
	if sm.Name != "pullers" || sm.Description != "pull only" || len(sm.Actions) != 3 {
		t.Fatalf("created %+v", sm)
	}
	for i := range want {
		if sm.Actions[i].Repository != want[i].Repository || !slices.Equal(sm.Actions[i].Actions, want[i].Actions) {
			t.Errorf("action %d: %+v, want %+v", i, sm.Actions[i], want[i])
		}
	}
	out := root.cliOK(t, "scope-map", "show", "--name", "pullers")
	for _, w := range []string{"pullers", "pull only", "app/* content/read, metadata/read", "tools/** content/read, content/write"} {
		if !strings.Contains(out, w) {
			t.Errorf("show lacks %q:\n%s", w, out)
		}
	}

	sm = decodeJSON[acrapi.ScopeMap](t, root.cliOK(t, "scope-map", "update", "--name", "pullers", "--add-repository", "base", "content/delete",
		"--remove-repository", "tools/** content/write", "--remove-repository", "app/*=metadata/read,content/read", "-o", "json"))
	if len(sm.Actions) != 2 || !slices.Equal(sm.Actions[0].Actions, []string{"content/read", "content/delete"}) || !slices.Equal(sm.Actions[1].Actions, []string{"content/read"}) {
		t.Errorf("updated %+v", sm.Actions)
	}
	sm = decodeJSON[acrapi.ScopeMap](t, root.cliOK(t, "scope-map", "update", "--name", "pullers", "--repository", "*", "content/read", "--description", "", "-o", "json"))
	if len(sm.Actions) != 1 || sm.Actions[0].Repository != "*" || sm.Description != "" {
		t.Errorf("replaced %+v", sm)
	}
	root.cliOK(t, "scope-map", "create", "--name", "pushers", "--repository", "app/** content/write")
	out = root.cliOK(t, "scope-map", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "pullers") || !strings.Contains(lines[2], "app/**: content/write") {
		t.Errorf("list:\n%s", out)
	}
	if all := decodeJSON[[]acrapi.ScopeMap](t, root.cliOK(t, "scope-map", "list", "-o", "json")); len(all) != 2 {
		t.Errorf("list -o json: %+v", all)
	}

	// Bad input: exit 2, before any call.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"scope-map", "create", "--name", "x1234"}, "flag --repository: required"},
		{[]string{"scope-map", "create", "--name", "x1", "--repository", "a content/read"}, "is not a scope map name"},
		{[]string{"scope-map", "create", "--repository", "a content/read"}, "flag --name: required"},
		{[]string{"scope-map", "create", "--name", "x1234", "--repository", "app/*"}, `"app/*" has no actions`},
		{[]string{"scope-map", "create", "--name", "x1234", "--repository", "app content/push"}, `"content/push" on "app" is not an action`},
		{[]string{"scope-map", "create", "--name", "x1234", "--repository", "a*b content/read"}, "not a repository pattern"},
		{[]string{"scope-map", "create", "--name", "x1234", "--repository", "app", "content/read", "stray"}, `unexpected argument "stray"`},
		{[]string{"scope-map", "update", "--name", "pullers"}, "nothing to update"},
		{[]string{"scope-map", "show"}, "flag --name: required"},
		{[]string{"scope-map", "list", "-o", "yaml"}, "not an output format"},
	} {
		root.cliFails(t, ExitUsage, tt.args, tt.want)
	}
	// Refusals of the root: exit 1.
	root.cliFails(t, ExitError, []string{"scope-map", "create", "--name", "pushers", "--repository", "a content/read"}, "scope map pushers", "(ALREADY_EXISTS)")
	root.cliFails(t, ExitError, []string{"scope-map", "show", "--name", "nobody"}, `scope map "nobody" not found (NOT_FOUND)`)
	root.cliFails(t, ExitError, []string{"scope-map", "update", "--name", "pushers", "--remove-repository", "app/** content/write"}, "actions are empty", "(INVALID)")
	root.cliOK(t, "token", "create", "--name", "ci-pusher", "--scope-map", "pushers", "--no-passwords")
	root.cliFails(t, ExitError, []string{"scope-map", "delete", "--name", "pushers"}, "used by token ci-pusher", "(IN_USE)")
	if out := root.cliOK(t, "scope-map", "delete", "--name", "pullers", "--yes"); out != "deleted pullers\n" {
		t.Errorf("delete: %q", out)
	}
	root.cliFails(t, ExitError, []string{"scope-map", "delete", "--name", "pullers"}, `scope map "pullers" not found`)
}

func TestTokenCLI(t *testing.T) {
	t.Parallel()
	root := startCRRoot(t, false)
	root.cliOK(t, "scope-map", "create", "--name", "pushers", "--repository", "app/**", "content/read", "content/write")

	// create: password1, shown once, works.
	tok := decodeJSON[acrapi.Token](t, root.cliOK(t, "token", "create", "--name", "ci-pusher", "--scope-map", "pushers", "-o", "json"))
	if tok.Name != "ci-pusher" || tok.ScopeMap != "pushers" || tok.Status != "enabled" || len(tok.Passwords) != 1 || tok.Passwords[0].Name != "password1" || tok.Passwords[0].Value == "" {
		t.Fatalf("created %+v", tok)
	}
	p1 := tok.Passwords[0].Value
	acts, err := root.store.AuthenticateToken("ci-pusher", p1)
	if err != nil || !controlplane.Allowed(acts, "app/web", acrapi.ActionContentWrite) {
		t.Fatalf("authenticate: %v %v", acts, err)
	}
	out := root.cliOK(t, "token", "show", "--name", "ci-pusher")
	if strings.Contains(out, p1) || !strings.Contains(out, "password1 created") || !strings.Contains(out, "pushers") {
		t.Errorf("show:\n%s", out)
	}
	out = root.cliOK(t, "token", "create", "--name", "kiosk-001", "--scope-map", "pushers", "--status", "Disabled")
	if !strings.Contains(out, "disabled") || !strings.Contains(out, "shown this once") {
		t.Errorf("create text:\n%s", out)
	}

	// credential generate: password2 with an expiry, then both.
	cred := decodeJSON[acrapi.TokenCredentials](t, root.cliOK(t, "token", "credential", "generate", "--name", "ci-pusher", "--password2",
		"--expiration", "2099-01-31", "-o", "json"))
	if cred.Username != "ci-pusher" || len(cred.Passwords) != 1 || cred.Passwords[0].Name != "password2" || cred.Passwords[0].Value == "" ||
		cred.Passwords[0].Expiry == nil || !cred.Passwords[0].Expiry.Equal(time.Date(2099, 1, 31, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("credential generate: %+v", cred)
	}
	if _, err := root.store.AuthenticateToken("ci-pusher", cred.Passwords[0].Value); err != nil {
		t.Errorf("password2: %v", err)
	}
	out = root.cliOK(t, "token", "credential", "generate", "--name", "ci-pusher", "--password1", "--password2", "--expiration-in-days", "30")
	if !strings.Contains(out, "password1:") || !strings.Contains(out, "password2:") || !strings.Contains(out, "username:") {
		t.Errorf("credential generate text:\n%s", out)
	}
	if _, err := root.store.AuthenticateToken("ci-pusher", p1); !errors.Is(err, controlplane.ErrUnauthorized) {
		t.Errorf("the replaced password1 still works: %v", err)
	}

	// update and list.
	tok = decodeJSON[acrapi.Token](t, root.cliOK(t, "token", "update", "--name", "kiosk-001", "--status", "enabled", "-o", "json"))
	if tok.Status != "enabled" {
		t.Errorf("updated %+v", tok)
	}
	out = root.cliOK(t, "token", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !slices.Equal(strings.Fields(lines[1]), []string{"ci-pusher", "pushers", "enabled", "password1,password2"}) {
		t.Errorf("list:\n%s", out)
	}
	if all := decodeJSON[[]acrapi.Token](t, root.cliOK(t, "token", "list", "-o", "json")); len(all) != 2 {
		t.Errorf("list -o json: %+v", all)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "create", "--name", "ci-x1"}, "flag --scope-map: required"},
		{[]string{"token", "create", "--name", "ci", "--scope-map", "pushers"}, "is not a token name"},
		{[]string{"token", "create", "--name", "ci-x1", "--scope-map", "pushers", "--status", "off"}, `flag --status: "off"`},
		{[]string{"token", "update", "--name", "ci-pusher"}, "nothing to update"},
		{[]string{"token", "credential", "generate", "--name", "ci-pusher"}, "--password1 or --password2: required"},
		{[]string{"token", "credential", "generate", "--name", "ci-pusher", "--password1", "--expiration", "tomorrow"}, "not a date and time"},
		{[]string{"token", "credential", "generate", "--name", "ci-pusher", "--password1", "--expiration", "2001-01-01T00:00:00Z"}, "not in the future"},
		{[]string{"token", "credential", "generate", "--name", "ci-pusher", "--password1", "--expiration-in-days", "0"}, "expected 1 or more"},
		{[]string{"token", "show", "extra"}, `unexpected argument "extra"`},
	} {
		root.cliFails(t, ExitUsage, tt.args, tt.want)
	}
	root.cliFails(t, ExitError, []string{"token", "create", "--name", "ci-x1", "--scope-map", "nothere"}, `scope map "nothere" does not exist`, "(INVALID)")
	root.cliFails(t, ExitError, []string{"token", "show", "--name", "nobody"}, `token "nobody" not found (NOT_FOUND)`)
	root.cliFails(t, ExitError, []string{"token", "credential", "generate", "--name", "nobody", "--password1"}, `token "nobody" not found`)

	// A client token of a connected registry: must exist, cannot be deleted.
	root.cliFails(t, ExitError, []string{"connected-registry", "create", "--name", "gateway1", "--repository", "app/**", "--client-tokens", "ghost-token"},
		`client token "ghost-token" is not a token`, "(INVALID)")
	root.cliOK(t, "connected-registry", "create", "--name", "gateway1", "--repository", "app/**", "--client-tokens", "ci-pusher")
	root.cliFails(t, ExitError, []string{"token", "delete", "--name", "ci-pusher"}, "client token of connected registry gateway1", "(IN_USE)")
	if out := root.cliOK(t, "token", "delete", "--name", "kiosk-001", "-o", "json"); !strings.Contains(out, `"kiosk-001"`) {
		t.Errorf("delete -o json: %q", out)
	}
	root.cliFails(t, ExitError, []string{"token", "delete", "--name", "kiosk-001"}, `token "kiosk-001" not found`)
}
