package e2e

// Helpers for the hierarchy test: nodes on a chosen address, the connected-registry CLI against
// the root, bounded polling with the relevant nodes' logs in the failure message.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// member is a node of the hierarchy, with the name its failure messages use.
type member struct {
	*node
	name string
}

// startNodeAt is startNode on a given loopback address, chosen beforehand so that a child's
// connection string can name it before the node starts. An error that is not the address being
// taken (by another test since it was picked) stops the test.
func startNodeAt(t testing.TB, name, addr string, opts nodeOptions) (*member, error) {
	t.Helper()
	if opts.dataDir == "" {
		opts.dataDir = t.TempDir()
	}
	tr := &http.Transport{
		Proxy:                 nil, // loopback only, whatever the environment says
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}
	n := &node{t: t, addr: addr, dataDir: opts.dataDir, opts: opts, scheme: "http", transport: tr}
	n.client = &http.Client{Transport: n.withCredentials(tr)}
	n.defaultCredentials()
	t.Cleanup(func() {
		n.stop()
		tr.CloseIdleConnections()
		if t.Failed() && len(n.procs) > 0 {
			t.Logf("==== logs of %s ====", name)
			n.dumpLogs()
		}
	})
	if err := n.startProcess(); err != nil {
		if strings.Contains(err.Error(), "already in use") {
			return nil, err
		}
		t.Fatalf("starting %s on %s: %v", name, addr, err)
	}
	return &member{node: n, name: name}, nil
}

// startMember starts a node on a free loopback port, trying another if it is taken meanwhile.
func startMember(t testing.TB, name string, opts nodeOptions) *member {
	t.Helper()
	for attempt := 1; ; attempt++ {
		m, err := startNodeAt(t, name, freeAddr(t), opts)
		if err == nil {
			return m
		}
		if attempt == 3 {
			t.Fatalf("starting %s: %v", name, err)
		}
	}
}

// logTail is the last lines of the member's current process's log.
func (m *member) logTail(lines int) string {
	all := strings.Split(strings.TrimRight(m.logs(), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return fmt.Sprintf("\n---- last %d log lines of %s (%s) ----\n%s", len(all), m.name, m.addr, strings.Join(all, "\n"))
}

// tails are the log tails of members, for failure messages.
func tails(members ...*member) string {
	var b strings.Builder
	for _, m := range members {
		b.WriteString(m.logTail(40))
	}
	return b.String()
}

// eventually polls check every 200ms until it holds or limit passes; then it stops the test
// with what, the last detail check gave, and the tails of the members' logs.
func eventually(t testing.TB, limit time.Duration, what string, check func() (bool, string), show ...*member) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, detail := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last seen: %s%s", what, limit, detail, tails(show...))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// manifestAccept is what the tests accept when they ask for a manifest.
const manifestAccept = mtOCIManifest + ", " + mtOCIIndex +
	", application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// headDigest asks the member for repo:ref and returns the digest it answers with, or a
// description of the answer when it has none.
func (m *member) headDigest(t testing.TB, repo, ref string) (string, string) {
	t.Helper()
	r := m.do(t, http.MethodHead, "/v2/"+repo+"/manifests/"+ref, nil, "Accept", manifestAccept)
	if r.status != http.StatusOK {
		return "", r.String()
	}
	return r.header.Get("Docker-Content-Digest"), "200 " + r.header.Get("Docker-Content-Digest")
}

// waitImage waits until the member serves repo:tag with digest want.
func (m *member) waitImage(t testing.TB, limit time.Duration, repo, tag string, want v1.Hash, show ...*member) {
	t.Helper()
	eventually(t, limit, fmt.Sprintf("%s:%s (%s) at %s", repo, tag, want, m.name), func() (bool, string) {
		got, detail := m.headDigest(t, repo, tag)
		return got == want.String(), detail
	}, show...)
}

// expectServes pulls every image in want (repo:tag → image) from the member, whole, and checks
// digests and bytes.
func (m *member) expectServes(t testing.TB, want map[string]v1.Image) {
	t.Helper()
	for ref, img := range want {
		m.expectSameImage(t, m.ref(t, ref), img)
		repo, _, _ := strings.Cut(ref, ":")
		cfg, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		m.getBlob(t, repo, cfg.String())
	}
}

// admin runs `outpost connected-registry` against the root with the admin's password.
type admin struct {
	t        testing.TB
	root     *member
	password string
}

// run runs `outpost connected-registry args… --registry ROOT`, bounded by runOutpost's limit.
func (a *admin) run(args ...string) cmdResult {
	a.t.Helper()
	args = append(append([]string{"connected-registry"}, args...), "--registry", a.root.base())
	return runOutpost(a.t, []string{"OUTPOST_PASSWORD=" + a.password}, args...)
}

// must runs the command and stops the test unless it succeeds; it returns its stdout.
func (a *admin) must(args ...string) string {
	a.t.Helper()
	r := a.run(args...)
	if r.code != 0 {
		a.t.Fatalf("outpost connected-registry %s: exit %d\nstdout: %s\nstderr: %s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr, tails(a.root))
	}
	return r.stdout
}

// connectionString runs get-settings and returns the connection string it prints.
func (a *admin) connectionString(name string, extra ...string) string {
	a.t.Helper()
	out := a.must(append([]string{"get-settings", "--name", name, "--parent-protocol", "http", "--generate-password", "1"}, extra...)...)
	line := strings.TrimSpace(out)
	cs, ok := strings.CutPrefix(line, "ACR_REGISTRY_CONNECTION_STRING=")
	if !ok || strings.Contains(cs, "\n") {
		a.t.Fatalf("get-settings --name %s printed %q, want one line ACR_REGISTRY_CONNECTION_STRING=…", name, out)
	}
	if _, err := acrapi.ParseConnectionString(cs); err != nil {
		a.t.Fatalf("get-settings --name %s: the connection string does not parse: %v", name, err)
	}
	return cs
}

// show is `show --name NAME -o json`, decoded; the raw output comes along for messages.
func (a *admin) show(name string) (acrapi.ConnectedRegistry, string) {
	a.t.Helper()
	out := a.must("show", "--name", name, "-o", "json")
	var cr acrapi.ConnectedRegistry
	if err := json.Unmarshal([]byte(out), &cr); err != nil {
		a.t.Fatalf("show --name %s -o json: %v in %q", name, err, out)
	}
	return cr, strings.Join(strings.Fields(out), " ")
}
