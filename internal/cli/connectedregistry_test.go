package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"golang.org/x/crypto/bcrypt"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/internal/acr"
	"github.com/outpost-registry/outpost/internal/controlplane"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// The admin API checks the admin password with bcrypt at its default cost on every call, so
// these tests keep their calls to the root few.

const testAdminPassword = "test-admin-password"

// crRoot is a root's admin API served in-process.
type crRoot struct {
	url   string
	host  string // host:port
	srv   *httptest.Server
	store *controlplane.Store
}

func startCRRoot(t *testing.T, tlsServer bool) *crRoot {
	t.Helper()
	store, err := controlplane.Open(filepath.Join(t.TempDir(), "controlplane.db"), controlplane.WithPasswordCost(bcrypt.MinCost))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.EnsureAdmin(testAdminPassword); err != nil {
		t.Fatal(err)
	}
	h := acr.Handler(acr.Options{ControlPlane: store})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS handshakes refused on purpose
	if tlsServer {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return &crRoot{url: srv.URL, host: u.Host, srv: srv, store: store}
}

// env is the environment that points the CLI at r with the right admin password.
func (r *crRoot) env() []string {
	return []string{envRegistry + "=" + r.url, envPassword + "=" + testAdminPassword}
}

// crRun runs `outpost connected-registry args…` with environ, and checks that the admin password
// shows nowhere.
func crRun(t *testing.T, environ []string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := Run(ctx, append([]string{"connected-registry"}, args...), Env{Stdout: &out, Stderr: &errOut, Environ: environ})
	r := result{code, out.String(), errOut.String()}
	if strings.Contains(r.stdout+r.stderr, testAdminPassword) {
		t.Errorf("%v: the admin password is printed: stdout %q stderr %q", args, r.stdout, r.stderr)
	}
	return r
}

// ok runs a command that must succeed.
func (r *crRoot) ok(t *testing.T, args ...string) string {
	t.Helper()
	res := crRun(t, r.env(), args...)
	if res.code != ExitOK || res.stderr != "" {
		t.Fatalf("%v: exit %d, stderr %q", args, res.code, res.stderr)
	}
	return res.stdout
}

// fails runs a command that must fail at run time (exit 1) with one error line holding want.
func (r *crRoot) fails(t *testing.T, args []string, want ...string) {
	t.Helper()
	res := crRun(t, r.env(), args...)
	if res.code != ExitError {
		t.Errorf("%v: exit %d, want %d; stderr %q", args, res.code, ExitError, res.stderr)
	}
	oneErrorLine(t, res, want...)
	if res.stdout != "" {
		t.Errorf("%v: stdout %q, want none", args, res.stdout)
	}
}

func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, s)
	}
	return v
}

// The three tests below each drive a root of their own, in parallel: bcrypt dominates their
// time, the race detector's most of all.

func TestConnectedRegistryTree(t *testing.T) {
	t.Parallel()
	root := startCRRoot(t, false)
	root.clientTokens(t, "pullers1", "pushers1")

	// create: repeated flags, commas and a quoted space-separated list all add repositories.
	site := decodeJSON[acrapi.ConnectedRegistry](t, root.ok(t, "create", "--name", "factory1", "--repository", "app/*",
		"--repository", "base,tools", "--repository", "app/web lib", "--mode", "readwrite", "--sync-window", "PT3H",
		"--sync-schedule", "0 */6 * * *", "--log-level", "debug", "--client-tokens", "pullers1,pushers1", "-o", "json"))
	if want := []string{"app/*", "app/web", "base", "lib", "tools"}; !slices.Equal(site.Repositories, want) {
		t.Errorf("repositories %v, want %v", site.Repositories, want)
	}
	if site.Mode != acrapi.ModeReadWrite || site.SyncWindow != "PT3H" || site.SyncSchedule != "0 */6 * * *" || site.LogLevel != "Debug" ||
		!slices.Equal(site.ClientTokens, []string{"pullers1", "pushers1"}) || site.Parent != "" {
		t.Errorf("created %+v", site.ConnectedRegistrySpec)
	}
	out := root.ok(t, "create", "--name", "line1", "--parent", "factory1", "--repository", "app/web")
	for _, want := range []string{"line1", "factory1", "ReadOnly", "app/web", "line1-sync-token", "Inactive", "Offline"} {
		if !strings.Contains(out, want) {
			t.Errorf("create's text output lacks %q:\n%s", want, out)
		}
	}
	root.ok(t, "create", "--name", "depot1", "--repository", "base")

	// list: the tree, each node below its parent, siblings by name.
	out = root.ok(t, "list")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("list:\n%s", out)
	}
	for i, want := range []struct{ indent, name, mode string }{{"", "depot1", "ReadOnly"}, {"", "factory1", "ReadWrite"}, {"  ", "line1", "ReadOnly"}} {
		line := lines[i+1]
		if !strings.HasPrefix(line, want.indent+want.name+" ") || !slices.Equal(strings.Fields(line), []string{want.name, want.mode, "Offline", "Inactive", "-"}) {
			t.Errorf("list line %d %q, want %s%s %s Offline Inactive -", i+1, line, want.indent, want.name, want.mode)
		}
	}
	all := decodeJSON[[]acrapi.ConnectedRegistry](t, root.ok(t, "list", "-o", "json"))
	if len(all) != 3 || all[2].Name != "line1" || all[2].Parent != "factory1" {
		t.Errorf("list -o json: %+v", all)
	}

	line := decodeJSON[acrapi.ConnectedRegistry](t, root.ok(t, "show", "--name", "line1", "-o", "json"))
	if line.Name != "line1" || line.Parent != "factory1" || line.SyncTokenName != "line1-sync-token" || line.ActivationStatus != acrapi.ActivationInactive {
		t.Errorf("show: %+v", line)
	}

	// delete: refused while registries are below, unless --cascade.
	root.fails(t, []string{"delete", "--name", "factory1"}, "line1", "--cascade", "(HAS_CHILDREN)")
	if out = root.ok(t, "delete", "--name", "depot1", "--yes"); out != "deleted depot1\n" {
		t.Errorf("delete: %q", out)
	}
	deleted := decodeJSON[map[string][]string](t, root.ok(t, "delete", "--name", "factory1", "--cascade", "-o", "json"))
	if !slices.Equal(deleted["deleted"], []string{"line1", "factory1"}) {
		t.Errorf("delete --cascade: %v", deleted)
	}
	if out = root.ok(t, "list"); out != "no connected registries\n" {
		t.Errorf("list of none: %q", out)
	}
}

func TestConnectedRegistryUpdate(t *testing.T) {
	t.Parallel()
	root := startCRRoot(t, false)
	root.clientTokens(t, "pullers1", "pushers1", "readers1")
	root.ok(t, "create", "--name", "factory1", "--repository", "app/*,base,tools", "--sync-window", "PT3H", "--client-tokens", "pullers1,pushers1")
	root.ok(t, "create", "--name", "line1", "--parent", "factory1", "--repository", "app/web")

	site := decodeJSON[acrapi.ConnectedRegistry](t, root.ok(t, "update", "--name", "factory1", "--sync-schedule", "*/5 * * * *",
		"--sync-window", "", "--sync-message-ttl", "P3D", "--log-level", "warning", "--add-client-tokens", "readers1",
		"--remove-client-tokens", "pushers1", "--add-notifications", "app/web:*:push", "-o", "json"))
	if site.SyncSchedule != "*/5 * * * *" || site.SyncWindow != "" || site.SyncMessageTTL != "P3D" || site.LogLevel != "Warning" ||
		!slices.Equal(site.ClientTokens, []string{"pullers1", "readers1"}) || !slices.Equal(site.Notifications, []string{"app/web:*:push"}) {
		t.Errorf("updated %+v", site.ConnectedRegistrySpec)
	}

	// repo add / remove, and az's repo --add/--remove
	line := decodeJSON[acrapi.ConnectedRegistry](t, root.ok(t, "repo", "add", "--name", "line1", "--repository", "app/api,base", "-o", "json"))
	if !slices.Equal(line.Repositories, []string{"app/api", "app/web", "base"}) {
		t.Errorf("after repo add: %v", line.Repositories)
	}
	line = decodeJSON[acrapi.ConnectedRegistry](t, root.ok(t, "repo", "remove", "--name", "line1", "--repository", "app/web", "-o", "json"))
	if !slices.Equal(line.Repositories, []string{"app/api", "base"}) {
		t.Errorf("after repo remove: %v", line.Repositories)
	}
	out := root.ok(t, "repo", "--name", "line1", "--add", "tools", "--remove", "base")
	if !strings.Contains(out, "app/api, tools") {
		t.Errorf("after repo --add --remove:\n%s", out)
	}
	root.fails(t, []string{"repo", "add", "--name", "line1", "--repository", "other"}, `"other" is not within the repositories of parent factory1`, "(INVALID)")
	root.fails(t, []string{"repo", "remove", "--name", "factory1", "--repository", "tools"}, "child line1", "(INVALID)")
	root.fails(t, []string{"update", "--name", "nosuchsite", "--log-level", "Error"}, `connected registry "nosuchsite" not found (NOT_FOUND)`)
}

func TestConnectedRegistrySettings(t *testing.T) {
	t.Parallel()
	root := startCRRoot(t, false)
	root.ok(t, "create", "--name", "line1", "--repository", "app/web")

	// get-settings: one line that an env file or an IoT Edge manifest takes as is.
	out := root.ok(t, "get-settings", "--name", "line1", "--parent-protocol", "http", "--generate-password", "1")
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "ACR_REGISTRY_CONNECTION_STRING=") {
		t.Fatalf("get-settings: %q", out)
	}
	cs, err := acrapi.ParseConnectionString(strings.TrimPrefix(strings.TrimSuffix(out, "\n"), "ACR_REGISTRY_CONNECTION_STRING="))
	if err != nil {
		t.Fatal(err)
	}
	if cs.ConnectedRegistryName != "line1" || cs.SyncTokenName != "line1-sync-token" || cs.ParentGatewayEndpoint != root.host || cs.ParentEndpointProtocol != "http" {
		t.Errorf("connection string %+v", cs)
	}
	if owner, err := root.store.Authenticate(cs.SyncTokenName, cs.SyncTokenPassword); err != nil || owner != "line1" {
		t.Errorf("the connection string's password: %q, %v", owner, err)
	}
	settings := decodeJSON[acrapi.Settings](t, root.ok(t, "get-settings", "-n", "line1", "--parent-protocol", "HTTPS",
		"--generate-password", "2", "--parent-endpoint", "gateway.factory1.example:8443", "-o", "json"))
	if cs, err = acrapi.ParseConnectionString(settings.ConnectionString); err != nil {
		t.Fatal(err)
	}
	if cs.ConnectedRegistryName != "line1" || cs.ParentGatewayEndpoint != "gateway.factory1.example:8443" || cs.ParentEndpointProtocol != "https" {
		t.Errorf("connection string %+v", cs)
	}
	root.fails(t, []string{"get-settings", "--name", "nosuchsite", "--parent-protocol", "http", "--generate-password", "1"},
		`connected registry "nosuchsite" not found (NOT_FOUND)`)

	// deactivate
	if err := root.store.Activate("line1", "edge-device-1"); err != nil {
		t.Fatal(err)
	}
	if out = root.ok(t, "deactivate", "--name", "line1"); out != "deactivated line1: another instance may activate it now\n" {
		t.Errorf("deactivate: %q", out)
	}
	if cr, err := root.store.Get("line1"); err != nil || cr.ActivationStatus != acrapi.ActivationInactive {
		t.Errorf("after deactivate: %s, %v", cr.ActivationStatus, err)
	}
	root.fails(t, []string{"deactivate", "--name", "nosuchsite"}, `connected registry "nosuchsite" not found (NOT_FOUND)`)
	root.fails(t, []string{"create", "--name", "line1", "--repository", "base"}, "line1", "(ALREADY_EXISTS)")
	root.fails(t, []string{"create", "--name", "line2", "--parent", "nosuchsite", "--repository", "base"}, `parent "nosuchsite"`, "(INVALID)")
}

func TestConnectedRegistryCredentials(t *testing.T) {
	t.Parallel()
	root := startCRRoot(t, false)
	hint := []string{"--username/--password", "OUTPOST_USERNAME/OUTPOST_PASSWORD", "(UNAUTHORIZED)"}

	wrong := []string{envRegistry + "=" + root.url, envPassword + "=wrong-password-1"}
	r := crRun(t, wrong, "list")
	if r.code != ExitError || r.stdout != "" {
		t.Errorf("wrong password: exit %d, stdout %q", r.code, r.stdout)
	}
	oneErrorLine(t, r, hint...)
	if strings.Contains(r.stderr, "wrong-password-1") {
		t.Errorf("the password is printed: %q", r.stderr)
	}

	// A flag wins over its environment variable.
	if r := crRun(t, wrong, "list", "--password", testAdminPassword); r.code != ExitOK {
		t.Errorf("--password over %s: exit %d, stderr %q", envPassword, r.code, r.stderr)
	}
	r = crRun(t, append(root.env(), envUsername+"=root"), "list")
	if r.code != ExitError {
		t.Errorf("wrong user: exit %d", r.code)
	}
	oneErrorLine(t, r, append(hint, `"root"`)...)
	if r := crRun(t, append(root.env(), envUsername+"=root"), "list", "--username", "admin"); r.code != ExitOK {
		t.Errorf("--username over %s: exit %d, stderr %q", envUsername, r.code, r.stderr)
	}
}

func TestConnectedRegistryReachingTheRoot(t *testing.T) {
	t.Parallel()
	root := startCRRoot(t, true)
	env := root.env()

	// A root with a private CA: refused until --ca-file names it.
	r := crRun(t, env, "list")
	if r.code != ExitError {
		t.Errorf("unknown CA: exit %d", r.code)
	}
	oneErrorLine(t, r, "unknown authority", "--ca-file")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.srv.Certificate().Raw})
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := crRun(t, env, "list", "--ca-file", caFile); r.code != ExitOK || r.stdout != "no connected registries\n" {
		t.Errorf("with --ca-file: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// Nothing listening.
	r = crRun(t, []string{envPassword + "=" + testAdminPassword}, "list", "--registry", "http://127.0.0.1:1")
	if r.code != ExitError {
		t.Errorf("nothing listening: exit %d", r.code)
	}
	oneErrorLine(t, r, "cannot reach the root at http://127.0.0.1:1")

	// A node without a control plane, and a server that is no node.
	notRoot := httptest.NewServer(acr.Handler(acr.Options{}))
	defer notRoot.Close()
	r = crRun(t, []string{envPassword + "=" + testAdminPassword}, "show", "--name", "line1", "--registry", notRoot.URL)
	if r.code != ExitError {
		t.Errorf("not a root: exit %d", r.code)
	}
	oneErrorLine(t, r, "no connected-registry admin API", "--registry")
	other := httptest.NewServer(nil)
	defer other.Close()
	r = crRun(t, []string{envPassword + "=" + testAdminPassword}, "list", "--registry", other.URL)
	if r.code != ExitError {
		t.Errorf("not a node: exit %d", r.code)
	}
	oneErrorLine(t, r, "404 Not Found", "--registry")
}

func TestConnectedRegistryBadInput(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Nothing answers there: a case that got past local validation would exit 1, not 2.
	env := []string{envRegistry + "=http://127.0.0.1:1", envPassword + "=" + testAdminPassword}
	for _, tc := range []struct {
		env  []string
		args []string
		want []string
	}{
		{env, []string{"create", "--repository", "app"}, []string{"--name", "required"}},
		{env, []string{"create", "--name", "x", "--repository", "app"}, []string{"--name", `"x"`, "5 to 40"}},
		{env, []string{"create", "--name", "line1", "--parent", "p", "--repository", "app"}, []string{"--parent", `"p"`}},
		{env, []string{"create", "--name", "line1"}, []string{"--repository", "required"}},
		{env, []string{"create", "--name", "line1", "--repository", "App"}, []string{"--repository", `"App"`}},
		{env, []string{"create", "--name", "line1", "--repository", "a", "b"}, []string{`unexpected argument "b"`, "--repository a,b"}},
		{env, []string{"create", "--name", "line1", "--repository", "app", "--mode", "Mirror"}, []string{"--mode", `"Mirror"`, "ReadOnly or ReadWrite"}},
		{env, []string{"create", "--name", "line1", "--repository", "app", "--sync-schedule", "hourly"}, []string{"--sync-schedule", "cron"}},
		{env, []string{"create", "--name", "line1", "--repository", "app", "--sync-window", "PT3X"}, []string{"--sync-window", "PT3X"}},
		{env, []string{"create", "--name", "line1", "--repository", "app", "--sync-message-ttl", "two days"}, []string{"--sync-message-ttl"}},
		{env, []string{"create", "--name", "line1", "--repository", "app", "--log-level", "loud"}, []string{"--log-level", `"loud"`, "Information"}},
		{env, []string{"update", "--sync-window", "PT1H"}, []string{"--name", "required"}},
		{env, []string{"update", "--name", "line1"}, []string{"nothing to update", "--sync-schedule"}},
		{env, []string{"update", "--name", "line1", "--sync-message-ttl", ""}, []string{"--sync-message-ttl", "empty"}},
		{env, []string{"update", "--name", "line1", "--log-level", "verbose"}, []string{"--log-level", `"verbose"`}},
		{env, []string{"create", "--name", "line1", "--repository", "app", "--delta-sync", "maybe"}, []string{"--delta-sync", `"maybe"`, "Enabled or Disabled"}},
		{env, []string{"update", "--name", "line1", "--delta-sync", "off"}, []string{"--delta-sync", `"off"`, "Enabled or Disabled"}},
		{env, []string{"show"}, []string{"--name", "required"}},
		{env, []string{"show", "line1"}, []string{`unexpected argument "line1"`, "--name"}},
		{env, []string{"deactivate"}, []string{"--name", "required"}},
		{env, []string{"delete", "--yes"}, []string{"--name", "required"}},
		{env, []string{"get-settings", "--name", "line1", "--parent-protocol", "https"}, []string{"--generate-password", "hashed", "1 or 2"}},
		{env, []string{"get-settings", "--name", "line1", "--parent-protocol", "https", "--generate-password", "3"}, []string{"--generate-password", `"3"`, "1 or 2"}},
		{env, []string{"get-settings", "--name", "line1", "--generate-password", "1"}, []string{"--parent-protocol", "required", "http or https"}},
		{env, []string{"get-settings", "--name", "line1", "--parent-protocol", "ftp", "--generate-password", "1"}, []string{"--parent-protocol", `"ftp"`}},
		{env, []string{"get-settings", "--name", "line1", "--parent-protocol", "https", "--generate-password", "1", "--parent-endpoint", "https://gw:443"}, []string{"--parent-endpoint", "host:port"}},
		{env, []string{"get-settings", "--parent-protocol", "https", "--generate-password", "1"}, []string{"--name", "required"}},
		{env, []string{"repo", "add", "--name", "line1"}, []string{"--repository", "required"}},
		{env, []string{"repo", "remove", "--repository", "app"}, []string{"--name", "required"}},
		{env, []string{"repo", "--name", "line1"}, []string{"--add or --remove"}},
		{env, []string{"repo", "--name", "line1", "--add", "a b*"}, []string{"--add", `"b*"`}},
		{env, []string{"list", "-o", "yaml"}, []string{"--output", `"yaml"`}},
		{env, []string{"list", "--no-such-flag"}, []string{"--no-such-flag"}},
		{env, []string{"bogus"}, []string{"bogus"}},
		{env, []string{"list", "--ca-file", filepath.Join(dir, "missing.pem")}, []string{"--ca-file", "missing.pem", "no such file"}},
		{env, []string{"list", "--ca-file", notPEM}, []string{"--ca-file", "no PEM certificate"}},
		{[]string{envPassword + "=x"}, []string{"list"}, []string{"--registry", envRegistry, "not set"}},
		{[]string{envPassword + "=x"}, []string{"list", "--registry", "127.0.0.1:8080"}, []string{"flag --registry", "http://host:port"}},
		{[]string{envPassword + "=x", envRegistry + "=ftp://root"}, []string{"list"}, []string{envRegistry, `"ftp://root"`}},
		{[]string{envPassword + "=x"}, []string{"list", "--registry", "http://admin:s3cret@root:8080"}, []string{"--registry", "credentials"}},
		{[]string{envRegistry + "=http://root:8080"}, []string{"list"}, []string{"--password", envPassword, "not set"}},
		{[]string{envRegistry + "=http://root:8080", envPassword + "=x"}, []string{"list", "--username", ""}, []string{"--username", "empty"}},
	} {
		r := crRun(t, tc.env, tc.args...)
		if r.code != ExitUsage {
			t.Errorf("%v: exit %d, want %d; stderr %q", tc.args, r.code, ExitUsage, r.stderr)
		}
		oneErrorLine(t, r, tc.want...)
		if r.stdout != "" {
			t.Errorf("%v: stdout %q, want none", tc.args, r.stdout)
		}
		if strings.Contains(r.stderr, "s3cret") {
			t.Errorf("%v: the password is printed: %q", tc.args, r.stderr)
		}
	}
}

func TestListValues(t *testing.T) {
	got := listValues([]string{"a,b", " c  d ", "", ",,", "a", "e"})
	if want := []string{"a", "b", "c", "d", "e"}; !slices.Equal(got, want) {
		t.Errorf("listValues: %v, want %v", got, want)
	}
}

func TestPrintTreeKeepsEveryNode(t *testing.T) {
	var b bytes.Buffer
	// Parents listed after children, names in other cases, and a cycle the root never stores.
	err := printTree(&b, []acrapi.ConnectedRegistry{
		{ConnectedRegistrySpec: acrapi.ConnectedRegistrySpec{Name: "leaf1", Parent: "MIDDLE1", Mode: "ReadOnly"}},
		{ConnectedRegistrySpec: acrapi.ConnectedRegistrySpec{Name: "middle1", Parent: "top01", Mode: "ReadOnly"}},
		{ConnectedRegistrySpec: acrapi.ConnectedRegistrySpec{Name: "top01", Mode: "ReadWrite"}},
		{ConnectedRegistrySpec: acrapi.ConnectedRegistrySpec{Name: "loopa", Parent: "loopb"}},
		{ConnectedRegistrySpec: acrapi.ConnectedRegistrySpec{Name: "loopb", Parent: "loopa"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"NAME       MODE       STATE  ACTIVATION  LAST SYNC",
		"top01      ReadWrite                     -",
		"  middle1  ReadOnly                      -",
		"    leaf1  ReadOnly                      -",
		"loopa                                    -",
		"  loopb                                  -",
	}
	if got := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n"); !slices.Equal(got, want) {
		t.Errorf("tree:\n%s\nwant:\n%s", b.String(), strings.Join(want, "\n"))
	}
}
