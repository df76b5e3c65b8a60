package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestOperationalEndpoints covers /acr, /healthz, /readyz and unknown paths.
func TestOperationalEndpoints(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	cases := []struct {
		path   string
		status int
		code   string // errors[0].code, for error bodies
		field  string // a JSON field of a status body, "key=value"
	}{
		{"/acr/anything", http.StatusNotFound, "NOT_FOUND", ""},
		{"/acr/v1/registries/x/sync", http.StatusNotFound, "NOT_FOUND", ""},
		{"/no/such/endpoint", http.StatusNotFound, "NOT_FOUND", ""},
		{"/healthz", http.StatusOK, "", "status=ok"},
		{"/readyz", http.StatusOK, "", "status=ready"},
		{"/v2/", http.StatusOK, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			r := n.do(t, http.MethodGet, tc.path, nil)
			if r.status != tc.status {
				t.Fatalf("GET %s: got %s, want %d", tc.path, r, tc.status)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("GET %s: Content-Type %q, want JSON", tc.path, ct)
			}
			if tc.code != "" {
				expectError(t, "GET "+tc.path, r, tc.status, tc.code)
			}
			if key, value, ok := strings.Cut(tc.field, "="); ok {
				var body map[string]any
				if err := json.Unmarshal(r.body, &body); err != nil || body[key] != value {
					t.Errorf("GET %s: body %s, want %s=%q", tc.path, r.body, key, value)
				}
			}
		})
	}
}

// TestMetricsAndRequestLog checks /metrics after some registry traffic, and the JSON request log.
func TestMetricsAndRequestLog(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{})
	dgst := n.pushImage(t, "obs/app:v1", randomImage(t, 2, 64<<10))
	expectStatus(t, "GET manifest", n.do(t, http.MethodGet, "/v2/obs/app/manifests/v1", nil, "Accept", mtOCIManifest), http.StatusOK)
	expectStatus(t, "GET tags", n.do(t, http.MethodGet, "/v2/obs/app/tags/list", nil), http.StatusOK)
	expectStatus(t, "GET referrers", n.do(t, http.MethodGet, "/v2/obs/app/referrers/"+dgst.String(), nil), http.StatusOK)
	n.do(t, http.MethodGet, "/acr/anything", nil)

	r := n.do(t, http.MethodGet, "/metrics", nil)
	expectStatus(t, "GET /metrics", r, http.StatusOK)
	metrics := string(r.body)

	t.Run("request counters by route", func(t *testing.T) {
		for _, route := range []string{"base", "manifest", "blob", "blob-upload", "blob-upload-chunk", "tags", "referrers", "acr"} {
			re := regexp.MustCompile(`(?m)^outpost_http_requests_total\{[^}]*route="` + regexp.QuoteMeta(route) + `"[^}]*\} [1-9]`)
			if !re.MatchString(metrics) {
				t.Errorf("/metrics has no outpost_http_requests_total sample with route=%q", route)
			}
		}
		if !regexp.MustCompile(`(?m)^outpost_http_requests_total\{code="200",method="GET",route="manifest"\} [1-9]`).MatchString(metrics) {
			t.Errorf("/metrics lacks outpost_http_requests_total{code=\"200\",method=\"GET\",route=\"manifest\"}")
		}
	})

	t.Run("collectors", func(t *testing.T) {
		for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "process_resident_memory_bytes",
			"process_open_fds", "outpost_build_info", "outpost_http_request_duration_seconds_bucket"} {
			if !regexp.MustCompile(`(?m)^` + name + `[ {]`).MatchString(metrics) {
				t.Errorf("/metrics has no %s sample", name)
			}
		}
		m := regexp.MustCompile(`(?m)^outpost_storage_used_bytes (\S+)$`).FindStringSubmatch(metrics)
		if m == nil {
			t.Fatalf("/metrics has no outpost_storage_used_bytes sample")
		}
		if v, err := strconv.ParseFloat(m[1], 64); err != nil || v < 128<<10 {
			t.Errorf("outpost_storage_used_bytes = %s, want at least the 128 KiB of pushed layers", m[1])
		}
	})

	t.Run("request log", func(t *testing.T) {
		// The log line is written after the response; give it a moment.
		var line map[string]any
		deadline := time.Now().Add(5 * time.Second)
		for line == nil && time.Now().Before(deadline) {
			line = findLogLine(n.logs(), func(l map[string]any) bool {
				return l["msg"] == "request" && l["route"] == "manifest" && l["method"] == "GET"
			})
			if line == nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if line == nil {
			t.Fatalf("no JSON request log line for GET manifest in:\n%s", n.logs())
		}
		for _, key := range []string{"method", "route", "repository", "status", "bytes_out", "duration", "ts", "level"} {
			if _, ok := line[key]; !ok {
				t.Errorf("request log line %v has no %q", line, key)
			}
		}
		if line["repository"] != "obs/app" || line["status"] != float64(200) {
			t.Errorf("request log line %v: want repository obs/app and status 200", line)
		}
		if b, _ := line["bytes_out"].(float64); b <= 0 {
			t.Errorf("request log line %v: bytes_out should count the manifest", line)
		}
	})
}

// findLogLine returns the first JSON line of log that match accepts.
func findLogLine(log string, match func(map[string]any) bool) map[string]any {
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l map[string]any
		if json.Unmarshal(sc.Bytes(), &l) == nil && match(l) {
			return l
		}
	}
	return nil
}
