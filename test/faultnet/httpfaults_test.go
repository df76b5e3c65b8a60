package faultnet

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"
)

func faultServer(t *testing.T, body []byte) (*HTTPFaults, string, *http.Client) {
	t.Helper()
	f := NewHTTPFaults(blobHandler(body))
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL, newClient(t)
}

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/`)

func TestHTTPStatusQueue(t *testing.T) {
	t.Parallel()
	body := randBytes(10<<10, 20)
	f, url, c := faultServer(t, body)
	r503 := f.Add(Rule{Path: blobPath, Times: 1, Action: Status(http.StatusServiceUnavailable)})
	r429 := f.Add(Rule{Path: blobPath, Times: 1, Action: RetryAfter(http.StatusTooManyRequests, 1500*time.Millisecond)})
	r500 := f.Add(Rule{Path: blobPath, Times: 1, Action: Status(http.StatusInternalServerError)})

	blob := url + "/v2/lib/app/blobs/sha256:abc"
	for i, want := range []int{503, 429, 500, 200} {
		resp, got, err := get(c, blob)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != want {
			t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, want)
		}
		if want == 429 && resp.Header.Get("Retry-After") != "2" {
			t.Errorf("Retry-After %q, want 2 (1.5 s rounded up)", resp.Header.Get("Retry-After"))
		}
		if want == 200 && !bytes.Equal(got, body) {
			t.Error("body differs after the faults ran out")
		}
	}
	// Another path is never touched.
	mustGet(t, c, url+"/v2/lib/app/manifests/latest", body)

	for _, tc := range []struct {
		name          string
		h             *RuleHandle
		seen, applied int
	}{{"503", r503, 4, 1}, {"429", r429, 3, 1}, {"500", r500, 2, 1}} {
		if tc.h.Seen() != tc.seen || tc.h.Applied() != tc.applied {
			t.Errorf("rule %s: seen %d applied %d, want %d and %d",
				tc.name, tc.h.Seen(), tc.h.Applied(), tc.seen, tc.applied)
		}
	}
	if n := f.Requests(); n != 5 {
		t.Errorf("Requests %d, want 5", n)
	}
}

func TestHTTPMethodSkipRemove(t *testing.T) {
	t.Parallel()
	f, url, c := faultServer(t, []byte("data"))
	h := f.Add(Rule{Method: http.MethodHead, Skip: 1, Times: 1, Action: Status(http.StatusNotFound)})
	head := func() int {
		resp, err := c.Head(url + "/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	mustGet(t, c, url+"/x", []byte("data")) // wrong method: not seen
	for i, want := range []int{200, 404, 200} {
		if got := head(); got != want {
			t.Errorf("HEAD %d: status %d, want %d", i, got, want)
		}
	}
	if h.Seen() != 3 || h.Applied() != 1 {
		t.Errorf("seen %d applied %d, want 3 and 1", h.Seen(), h.Applied())
	}

	always := f.Add(Rule{Action: Status(http.StatusBadGateway)})
	if got := head(); got != http.StatusBadGateway {
		t.Errorf("status %d with an unlimited rule", got)
	}
	always.Remove()
	if got := head(); got != http.StatusOK {
		t.Errorf("status %d after Remove", got)
	}
	count := f.Add(Rule{}) // nil Action: counts only
	mustGet(t, c, url+"/x", []byte("data"))
	f.Clear()
	mustGet(t, c, url+"/x", []byte("data"))
	if count.Applied() != 1 {
		t.Errorf("counting rule applied %d times, want 1", count.Applied())
	}
}

func TestHTTPCorruptBody(t *testing.T) {
	t.Parallel()
	body := randBytes(10<<10, 21)
	f, url, c := faultServer(t, body)
	f.Add(Rule{Times: 1, Action: CorruptBody(0, 5000)})

	_, got, err := get(c, url+"/blob")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(body) || sha256.Sum256(got) == sha256.Sum256(body) {
		t.Fatalf("got %d bytes, sha256 match %v", len(got), sha256.Sum256(got) == sha256.Sum256(body))
	}
	if diffCount(got, body) != 2 || got[0] == body[0] || got[5000] == body[5000] {
		t.Error("wrong bytes corrupted")
	}
	mustGet(t, c, url+"/blob", body)
}

func TestHTTPTruncate(t *testing.T) {
	t.Parallel()
	body := randBytes(10<<10, 22)
	f, url, c := faultServer(t, body)
	f.Add(Rule{Times: 1, Action: Truncate(4096)})

	resp, got, err := get(c, url+"/blob")
	if err == nil {
		t.Fatal("truncated body read without error")
	}
	if resp.ContentLength != int64(len(body)) {
		t.Errorf("Content-Length %d, want the real %d", resp.ContentLength, len(body))
	}
	if len(got) != 4096 || !bytes.Equal(got, body[:4096]) {
		t.Errorf("read %d bytes, want the first 4096", len(got))
	}
	mustGet(t, c, url+"/blob", body)
}

func TestHTTPLieLength(t *testing.T) {
	t.Parallel()
	body := randBytes(10<<10, 23)
	f, url, c := faultServer(t, body)

	f.Add(Rule{Times: 1, Action: LieLength(-10)})
	resp, got, err := get(c, url+"/blob")
	if err != nil {
		t.Fatalf("short Content-Length: %v", err)
	}
	if resp.ContentLength != int64(len(body)-10) || !bytes.Equal(got, body[:len(body)-10]) {
		t.Errorf("Content-Length %d, %d bytes: want a clean response 10 bytes short",
			resp.ContentLength, len(got))
	}

	f.Add(Rule{Times: 1, Action: LieLength(10)})
	resp, got, err = get(c, url+"/blob")
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("long Content-Length: error %v, want unexpected EOF", err)
	}
	if resp.ContentLength != int64(len(body)+10) || !bytes.Equal(got, body) {
		t.Errorf("Content-Length %d, %d bytes: want the whole body under a longer length",
			resp.ContentLength, len(got))
	}
}

func TestHTTPIgnoreRange(t *testing.T) {
	t.Parallel()
	body := randBytes(10<<10, 24)
	f, url, c := faultServer(t, body)

	resp, got, err := get(c, url+"/blob", "Range", "bytes=100-199")
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, body[100:200]) {
		t.Fatalf("without the fault: %v, status %d, %d bytes", err, resp.StatusCode, len(got))
	}
	f.Add(Rule{Action: IgnoreRange()})
	resp, got, err = get(c, url+"/blob", "Range", "bytes=100-199")
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Errorf("with the fault: %v, status %d, %d bytes; want 200 and the whole body",
			err, resp.StatusCode, len(got))
	}
}

func TestHTTPDelay(t *testing.T) {
	t.Parallel()
	f, url, c := faultServer(t, []byte("ok"))
	f.Add(Rule{Times: 1, Action: Delay(200 * time.Millisecond)})
	f.Add(Rule{Times: 1, Action: Chain(Delay(100*time.Millisecond), Status(http.StatusServiceUnavailable))})

	start := time.Now()
	mustGet(t, c, url+"/x", []byte("ok"))
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("delayed request took %v", d)
	}
	start = time.Now()
	resp, _, err := get(c, url+"/x")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("chained fault: %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("delayed 503 took %v", d)
	}
}

func TestHTTPAbort(t *testing.T) {
	t.Parallel()
	f, url, c := faultServer(t, []byte("ok"))
	f.Add(Rule{Times: 1, Action: Abort()})

	if resp, _, err := get(c, url+"/x"); err == nil {
		t.Fatalf("aborted request got status %d", resp.StatusCode)
	}
	mustGet(t, c, url+"/x", []byte("ok"))
}

// TestHTTPFaultsBehindProxy runs both layers together, as sync tests will: HTTP faults at the
// parent, a shaped link in front of it.
func TestHTTPFaultsBehindProxy(t *testing.T) {
	t.Parallel()
	body := randBytes(64<<10, 25)
	f := NewHTTPFaults(blobHandler(body))
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	p := newProxy(t, srv.Listener.Addr().String(), WithLatency(Both, 20*time.Millisecond))
	c := newClient(t)
	h := f.Add(Rule{Path: blobPath, Times: 1, Action: RetryAfter(http.StatusServiceUnavailable, time.Second)})

	resp, _, err := get(c, p.URL()+"/v2/a/blobs/sha256:x")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("first request: %v", err)
	}
	mustGet(t, c, p.URL()+"/v2/a/blobs/sha256:x", body)
	if h.Seen() != 2 || p.Stats().Conns != 2 {
		t.Errorf("rule saw %d requests, proxy %d connections; want 2 and 2", h.Seen(), p.Stats().Conns)
	}
}
