package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// TestHierarchy runs a root and two nested connected registries as three real processes on
// loopback, defined with the real CLI: root → gatewayL1 (ReadWrite, team/**) → lineL2
// (ReadOnly, team/app, later team/web too). Content flows down with identical digests and
// bytes, configuration changes at the root reach L2 through L1, a push to L1 goes up to the
// root and down to L2, L2 refuses pushes, statuses are relayed up to the root, the nodes
// below serve everything while the root is down, a silent L1 turns Offline, and a second
// instance or a malformed connection string is refused.
func TestHierarchy(t *testing.T) {
	t.Parallel()
	start := time.Now()
	step := func(s string) { t.Logf("%5.1fs  %s", time.Since(start).Seconds(), s) }
	const (
		adminPassword = "hierarchy-admin-password-0123"
		propagate     = 60 * time.Second // content or configuration crossing one or two links
		l1Period      = 5 * time.Second  // gatewayL1's "@every 5s"
	)

	// 1. The root and the definitions, with the real CLI.
	step("1. root, definitions, connection strings")
	root := startMember(t, "root", nodeOptions{env: []string{"OUTPOST_ADMIN_PASSWORD=" + adminPassword}})
	cli := &admin{t: t, root: root, password: adminPassword}
	cli.must("create", "--name", "gatewayL1", "--mode", "ReadWrite", "--repository", "team/**", "--sync-schedule", "@every 5s")
	cli.must("create", "--name", "lineL2", "--parent", "gatewayL1", "--mode", "ReadOnly", "--repository", "team/app", "--sync-schedule", "@every 5s")
	cs1 := cli.connectionString("gatewayL1")
	if c, _ := acrapi.ParseConnectionString(cs1); c.URL() != root.base() {
		t.Fatalf("gatewayL1's connection string names parent %s, want the root %s", c.URL(), root.base())
	}

	// 2. L1 from the environment, L2 from the flag. L1's address is picked first, for lineL2's
	// connection string (again if another test takes it meanwhile).
	step("2. start gatewayL1 and lineL2")
	var l1 *member
	var cs2 string
	for attempt := 1; l1 == nil; attempt++ {
		l1Addr := freeAddr(t)
		cs2 = cli.connectionString("lineL2", "--parent-endpoint", l1Addr)
		if c, _ := acrapi.ParseConnectionString(cs2); c.URL() != "http://"+l1Addr {
			t.Fatalf("lineL2's connection string names parent %s, want gatewayL1 at http://%s", c.URL(), l1Addr)
		}
		var err error
		if l1, err = startNodeAt(t, "gatewayL1", l1Addr, nodeOptions{env: []string{"ACR_REGISTRY_CONNECTION_STRING=" + cs1}}); err != nil && attempt == 3 {
			t.Fatalf("starting gatewayL1: %v", err)
		}
	}
	// L2 starts at once: until L1 has received lineL2's definition from the root, L1 answers
	// 401 to lineL2's token, and L2 tries again at its next sync instead of giving up.
	l2 := startMember(t, "lineL2", nodeOptions{args: []string{"--connection-string", cs2}})
	all := []*member{root, l1, l2}

	// 3. A push to the root reaches L2 through L1, byte for byte.
	step("3. push team/app:v1 to the root; wait for it at lineL2")
	appV1 := randomImage(t, 2, 1200<<10) // layers over one 1 MiB chunk
	appV1Digest := root.pushImage(t, "team/app:v1", appV1)
	l2.waitImage(t, propagate, "team/app", "v1", appV1Digest, all...)
	l2.expectServes(t, map[string]v1.Image{"team/app:v1": appV1})
	for _, m := range []*member{l1, l2} {
		if !strings.Contains(m.logs(), "speaking HTTP/2 without TLS (h2c) to the parent") {
			t.Errorf("%s does not say it speaks h2c to its plain-HTTP parent", m.name)
		}
	}

	// 4. Configuration changes at the root reach L2 through L1.
	step("4. repo add team/web and schedule @every 4s for lineL2; push team/web:v1")
	cli.must("repo", "add", "--name", "lineL2", "--repository", "team/web")
	cli.must("update", "--name", "lineL2", "--sync-schedule", "@every 4s")
	webV1 := randomImage(t, 1, 64<<10)
	webV1Digest := root.pushImage(t, "team/web:v1", webV1)
	l2.waitImage(t, propagate, "team/web", "v1", webV1Digest, all...)
	l2.expectServes(t, map[string]v1.Image{"team/web:v1": webV1})
	eventually(t, propagate, "lineL2 applies the schedule @every 4s from its parent", func() (bool, string) {
		return strings.Contains(l2.logs(), `"schedule":"@every 4s"`), "no log line with the new schedule"
	}, l2)

	// 5. A push to ReadWrite L1 goes up to the root, and down to L2.
	step("5. push team/app:fromL1 to gatewayL1; wait for it at the root, then at lineL2")
	fromL1 := randomImage(t, 2, 200<<10)
	fromL1Digest := l1.pushImage(t, "team/app:fromL1", fromL1)
	root.waitImage(t, propagate, "team/app", "fromL1", fromL1Digest, root, l1)
	root.expectServes(t, map[string]v1.Image{"team/app:fromL1": fromL1})
	l2.waitImage(t, propagate, "team/app", "fromL1", fromL1Digest, all...)
	l2.expectServes(t, map[string]v1.Image{"team/app:fromL1": fromL1})

	// 6. ReadOnly L2 denies pushes.
	step("6. a push to lineL2 is denied")
	r := l2.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	if r.status != http.StatusForbidden || errorCode(r) != "DENIED" || !strings.Contains(string(r.body), "ReadOnly") {
		t.Errorf("POST an upload to lineL2: got %s, want 403 DENIED saying it is ReadOnly", r)
	}
	err := remote.Write(l2.ref(t, "team/app:pushed"), randomImage(t, 1, 1024), l2.remote(t)...)
	if err == nil || !strings.Contains(err.Error(), "DENIED") || !strings.Contains(err.Error(), "ReadOnly") {
		t.Errorf("pushing an image to lineL2: %v, want DENIED saying it is ReadOnly", err)
	}
	if got, detail := l2.headDigest(t, "team/app", "pushed"); got != "" {
		t.Errorf("lineL2 stored the denied push: %s", detail)
	}

	// 7. The tree and the statuses at the root.
	step("7. list and show at the root")
	eventually(t, propagate, "connected-registry list shows lineL2 under gatewayL1, both Active and Online", func() (bool, string) {
		out := cli.must("list")
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") {
			return false, out
		}
		l1Fields, l2Fields := strings.Fields(lines[1]), strings.Fields(lines[2])
		ok := strings.HasPrefix(lines[1], "gatewayL1 ") && strings.HasPrefix(lines[2], "  lineL2 ") &&
			len(l1Fields) == 5 && l1Fields[1] == "ReadWrite" && l1Fields[2] == "Online" && l1Fields[3] == "Active" &&
			len(l2Fields) == 5 && l2Fields[1] == "ReadOnly" && l2Fields[2] == "Online" && l2Fields[3] == "Active"
		return ok, out
	}, all...)
	eventually(t, propagate, "show --name lineL2 at the root: Active, Online, a relayed status with images", func() (bool, string) {
		cr, raw := cli.show("lineL2")
		ok := cr.ActivationStatus == acrapi.ActivationActive && cr.ConnectionState == acrapi.StateOnline &&
			cr.Status != nil && cr.Status.ConnectionState == acrapi.StateOnline && cr.Status.ImagesHeld > 0 &&
			cr.LastActivityTime != nil && cr.SyncSchedule == "@every 4s" && strings.Join(cr.Repositories, ",") == "team/app,team/web"
		return ok, raw
	}, all...)

	// 7b. Client tokens: defined at the root, attached to lineL2, sent down through gatewayL1
	// and enforced at lineL2; rotation and disabling reach it at its next sync.
	step("7b. a client token for lineL2: attach, rotate, disable, enable")
	outpost := func(args ...string) string {
		t.Helper()
		r := runOutpost(t, []string{"OUTPOST_PASSWORD=" + adminPassword}, append(args, "--registry", root.base())...)
		if r.code != 0 {
			t.Fatalf("outpost %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
		}
		return r.stdout
	}
	var reader acrapi.Token
	if err := json.Unmarshal([]byte(outpost("token", "create", "--name", "line-reader", "--repository", "team/app", "content/read", "metadata/read", "-o", "json")), &reader); err != nil || len(reader.Passwords) != 1 {
		t.Fatalf("token create: %v %+v", err, reader)
	}
	p1 := reader.Passwords[0].Value
	cli.must("update", "--name", "lineL2", "--add-client-tokens", "line-reader")
	var cred acrapi.TokenCredentials
	if err := json.Unmarshal([]byte(outpost("token", "credential", "generate", "--name", "line-reader", "--password2", "-o", "json")), &cred); err != nil || len(cred.Passwords) != 1 {
		t.Fatalf("token credential generate: %v %+v", err, cred)
	}
	p2 := cred.Passwords[0].Value
	pull := func(m *member, password, repo string) int {
		req := m.do(t, http.MethodHead, "/v2/"+repo+"/manifests/v1", nil, "Authorization", basicAuth("line-reader", password), "Accept", mtOCIManifest)
		return req.status
	}
	eventually(t, propagate, "lineL2 accepts both passwords of line-reader for team/app", func() (bool, string) {
		a, b := pull(l2, p1, "team/app"), pull(l2, p2, "team/app")
		return a == http.StatusOK && b == http.StatusOK, fmt.Sprintf("password1: %d, password2: %d", a, b)
	}, all...)
	if got := pull(l2, p1, "team/web"); got != http.StatusForbidden {
		t.Errorf("line-reader on team/web (outside its scope map) at lineL2: %d, want 403", got)
	}
	if got := pull(l1, p1, "team/app"); got != http.StatusUnauthorized {
		t.Errorf("line-reader at gatewayL1, which it is not attached to: %d, want 401", got)
	}
	outpost("token", "update", "--name", "line-reader", "--status", "disabled")
	eventually(t, propagate, "lineL2 refuses the disabled line-reader", func() (bool, string) {
		got := pull(l2, p1, "team/app")
		return got == http.StatusUnauthorized, fmt.Sprint(got)
	}, all...)
	outpost("token", "update", "--name", "line-reader", "--status", "enabled")
	eventually(t, propagate, "lineL2 accepts the re-enabled line-reader", func() (bool, string) {
		got := pull(l2, p1, "team/app")
		return got == http.StatusOK, fmt.Sprint(got)
	}, all...)

	// 9. A second instance of L1 is refused while the first is active.
	step("9. a second gatewayL1 instance is refused")
	second := runOutpost(t, []string{"ACR_REGISTRY_CONNECTION_STRING=" + cs1},
		"serve", "--addr", freeAddr(t), "--data", t.TempDir(), "--log-format", "json", "--log-level", "error")
	var errLines []string
	for line := range strings.SplitSeq(strings.TrimRight(second.stderr, "\n"), "\n") {
		if !strings.HasPrefix(line, "{") { // the structured log is JSON; the error is one plain line
			errLines = append(errLines, line)
		}
	}
	if second.code != 1 || len(errLines) != 1 || !strings.Contains(errLines[0], "ALREADY_ACTIVATED") {
		t.Errorf("a second instance of gatewayL1: exit %d, stderr:\n%s\nwant exit 1 and one line with ALREADY_ACTIVATED%s", second.code, second.stderr, tails(root))
	} else {
		t.Logf("second instance: exit 1, %s", errLines[0])
	}
	if cr, raw := cli.show("gatewayL1"); cr.ActivationStatus != acrapi.ActivationActive {
		t.Errorf("after the refused second instance, gatewayL1 at the root: %s", raw)
	}

	// 8. The root goes away: L1 and L2 serve everything; the root comes back; L1 stops.
	step("8. kill the root; lineL2 and gatewayL1 serve everything")
	root.kill()
	everything := map[string]v1.Image{"team/app:v1": appV1, "team/web:v1": webV1, "team/app:fromL1": fromL1}
	l2.expectServes(t, everything)
	l1.expectServes(t, everything)
	if got := pull(l2, p1, "team/app"); got != http.StatusOK {
		t.Errorf("line-reader at lineL2 with the root down: %d, want 200", got)
	}

	step("8. restart the root; gatewayL1 reconnects")
	restarted := time.Now()
	root.restart()
	eventually(t, propagate, "gatewayL1 reconnects to the restarted root (lastActivityTime advances)", func() (bool, string) {
		cr, raw := cli.show("gatewayL1")
		return cr.LastActivityTime != nil && cr.LastActivityTime.After(restarted) && cr.ConnectionState == acrapi.StateOnline, raw
	}, root, l1)

	step("8. stop gatewayL1; the root shows it Offline")
	l1.signal(syscall.SIGTERM)
	if code, ok := l1.waitExit(35 * time.Second); !ok || code != 0 {
		t.Fatalf("gatewayL1 after SIGTERM: exited %v, code %d%s", ok, code, tails(l1))
	}
	stopped := time.Now()
	eventually(t, 2*l1Period+15*time.Second, "the root shows the stopped gatewayL1 Offline", func() (bool, string) {
		cr, raw := cli.show("gatewayL1")
		return cr.ConnectionState == acrapi.StateOffline, raw
	}, root)
	if cr, raw := cli.show("gatewayL1"); cr.LastActivityTime == nil || time.Since(*cr.LastActivityTime) < 2*l1Period {
		t.Errorf("gatewayL1 Offline after less than twice its period of silence: %s", raw)
	}
	t.Logf("gatewayL1 Offline %.1fs after SIGTERM", time.Since(stopped).Seconds())
	l2.expectServes(t, everything)
	if a, b := pull(l2, p2, "team/app"), pull(l2, "wrong-password", "team/app"); a != http.StatusOK || b != http.StatusUnauthorized {
		t.Errorf("line-reader at lineL2 with its parent gatewayL1 down: right password %d (want 200), wrong one %d (want 401)", a, b)
	}

	// 10. A malformed connection string stops serve with one line naming the field.
	step("10. a malformed connection string")
	const secret = "not-to-be-echoed-3f9c1e"
	bad := "ConnectedRegistryName=lineL9;SyncTokenName=lineL9-sync-token;SyncTokenPassword=" + secret +
		";ParentGatewayEndpoint=" + l1.addr + ";ParentEndpointProtocol=ftp"
	for _, how := range []struct {
		what string
		env  []string
		args []string
	}{
		{"--connection-string", nil, []string{"--connection-string", bad}},
		{"ACR_REGISTRY_CONNECTION_STRING", []string{"ACR_REGISTRY_CONNECTION_STRING=" + bad}, nil},
	} {
		res := runOutpost(t, how.env, append([]string{"serve", "--addr", freeAddr(t), "--data", t.TempDir()}, how.args...)...)
		lines := strings.Split(strings.TrimRight(res.stderr, "\n"), "\n")
		if res.code != 2 || len(lines) != 1 || !strings.Contains(lines[0], "ParentEndpointProtocol") || strings.Contains(res.stderr+res.stdout, secret) {
			t.Errorf("serve with ParentEndpointProtocol=ftp in %s: exit %d, stdout %q, stderr %q; want exit 2 and one stderr line naming ParentEndpointProtocol, without the password",
				how.what, res.code, res.stdout, res.stderr)
		} else {
			t.Logf("malformed (%s): exit 2, %s", how.what, lines[0])
		}
	}
	step("done")
}

// basicAuth is an Authorization header value for HTTP Basic.
func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}
