package observe

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestMiddlewareLogsAndCounts(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	m := NewHTTPMetrics()
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	route := func(r *http.Request) (string, string) {
		if r.URL.Path == "/healthz" {
			return "healthz", ""
		}
		return "blob", "library/alpine"
	}
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			return // no explicit status: 200
		}
		n, _ := io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.Copy(w, strings.NewReader(strings.Repeat("x", int(n)*2)))
	}), route, m, zap.New(core), "healthz")
	srv := httptest.NewServer(h)
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/v2/library/alpine/blobs/uploads/", "application/octet-stream", strings.NewReader("12345"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp, err := http.Get(srv.URL + "/healthz"); err == nil {
		resp.Body.Close()
	}

	entries := logs.FilterMessage("request").All()
	if len(entries) != 2 {
		t.Fatalf("%d request lines, want 2", len(entries))
	}
	f := entries[0].ContextMap()
	if entries[0].Level != zapcore.InfoLevel || f["method"] != "POST" || f["route"] != "blob" || f["repository"] != "library/alpine" ||
		f["status"] != int64(201) || f["bytes_in"] != int64(5) || f["bytes_out"] != int64(10) {
		t.Fatalf("request line: %v %v", entries[0].Level, f)
	}
	if _, ok := f["duration"]; !ok {
		t.Fatal("no duration")
	}
	if entries[1].Level != zapcore.DebugLevel {
		t.Fatalf("a health probe logged at %v, want debug", entries[1].Level)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("blob", "POST", "201")); got != 1 {
		t.Fatalf("requests_total = %v", got)
	}
	if got := testutil.ToFloat64(m.bytesIn.WithLabelValues("blob")); got != 5 {
		t.Fatalf("request_bytes_total = %v", got)
	}
	if got := testutil.ToFloat64(m.bytesOut.WithLabelValues("blob")); got != 10 {
		t.Fatalf("response_bytes_total = %v", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("healthz", "GET", "200")); got != 1 {
		t.Fatalf("healthz requests_total = %v", got)
	}
}

func TestStorageCollector(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	c := NewStorageCollector(dir, time.Hour)
	if b, f := c.Used(); b != 100 || f != 1 {
		t.Fatalf("used %d bytes in %d files", b, f)
	}
	// Within maxAge the last walk is reused.
	_ = os.WriteFile(filepath.Join(dir, "b"), make([]byte, 50), 0o600)
	if b, _ := c.Used(); b != 100 {
		t.Fatalf("walked again within maxAge: %d", b)
	}
	c = NewStorageCollector(dir, 0)
	if n := testutil.CollectAndCount(c); n != 2 {
		t.Fatalf("%d metrics", n)
	}
	if b, f := c.Used(); b != 150 || f != 2 {
		t.Fatalf("used %d bytes in %d files", b, f)
	}
}
