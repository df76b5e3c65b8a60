package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var incidentMessage = regexp.MustCompile(`^internal error: incident ([a-z2-7]{12}) in this node's log$`)

// TestStorageFailureAnswersIncident breaks the store under a running registry (its directories
// turned into files) and checks that no answer names the node's files: every 500 carries an
// incident number only, and the one log line with that number holds distribution's answer,
// path and all.
func TestStorageFailureAnswersIncident(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	dataDir := t.TempDir()
	r, err := New(context.Background(), Options{DataDir: dataDir, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(func() { srv.Close(); _ = r.Close() })
	c := rawClient{t, srv}

	stored := []byte("stored before the failure")
	if a := c.pushBlob("team/app", stored, digest.FromBytes(stored)); a.status != http.StatusCreated {
		t.Fatalf("push: %d %s", a.status, a.body)
	}
	// Answers that are not 500s pass through, blob bodies whole.
	if a := c.do(http.MethodGet, "/v2/team/app/blobs/"+digest.FromBytes(stored).String(), nil); a.status != http.StatusOK || string(a.body) != string(stored) {
		t.Fatalf("GET of a stored blob: %d %q", a.status, a.body)
	}
	// Uploads still start (their directory exists); finishing one needs the blob store.
	start := c.do(http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	if start.status != http.StatusAccepted {
		t.Fatalf("starting an upload: %d %s", start.status, start.body)
	}
	root := filepath.Join(dataDir, "docker", "registry", "v2")
	for _, dir := range []string{"blobs", filepath.Join("repositories", "team", "app", "_manifests"), filepath.Join("repositories", "other")} {
		p := filepath.Join(root, dir)
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("not a directory"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	later := []byte("pushed after the failure")
	loc := strings.TrimPrefix(start.header.Get("Location"), srv.URL)
	requests := []struct{ method, path string }{
		{http.MethodPut, loc + "&digest=" + digest.FromBytes(later).String()},
		{http.MethodGet, "/v2/team/app/tags/list"},
		{http.MethodGet, "/v2/team/app/manifests/latest"},
		{http.MethodHead, "/v2/team/app/manifests/latest"},
		{http.MethodPost, "/v2/other/app/blobs/uploads/"},
	}
	for _, q := range requests {
		var a answer
		if q.method == http.MethodPut {
			a = c.do(q.method, q.path, later, "Content-Type", "application/octet-stream")
		} else {
			a = c.do(q.method, q.path, nil)
		}
		if a.status != http.StatusInternalServerError {
			t.Errorf("%s %s: %d %s, want 500", q.method, q.path, a.status, a.body)
			continue
		}
		if strings.Contains(string(a.body), dataDir) || strings.Contains(string(a.body), "directory") {
			t.Errorf("%s %s: the answer names the node's files: %s", q.method, q.path, a.body)
		}
		var incident string
		if q.method != http.MethodHead {
			var e struct {
				Errors []struct{ Code, Message, Detail string }
			}
			if err := json.Unmarshal(a.body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != "UNKNOWN" || e.Errors[0].Detail != "" {
				t.Errorf("%s %s: answer %s, want one UNKNOWN error without detail", q.method, q.path, a.body)
				continue
			}
			m := incidentMessage.FindStringSubmatch(e.Errors[0].Message)
			if m == nil {
				t.Errorf("%s %s: message %q, want an incident number", q.method, q.path, e.Errors[0].Message)
				continue
			}
			incident = m[1]
		}
		// The log line for this request: the one with its incident number or, for a HEAD,
		// whose answer has no body to carry the number, the one with its method and path.
		var lines []observer.LoggedEntry
		for _, l := range logs.FilterMessage("registry request failed").All() {
			f := l.ContextMap()
			if f["incident"] == incident || incident == "" && f["method"] == q.method && f["path"] == q.path {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 {
			t.Errorf("%s %s: %d log lines for incident %q, want 1", q.method, q.path, len(lines), incident)
			continue
		}
		if f := lines[0].ContextMap(); q.method != http.MethodHead && !strings.Contains(f["answer"].(string), dataDir) {
			t.Errorf("%s %s: the log line has not distribution's answer: %v", q.method, q.path, f)
		}
	}

}
