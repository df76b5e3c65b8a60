package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// countingVerifier accepts user "u" with password "right" and counts the checks it makes.
type countingVerifier struct {
	checks     atomic.Int32
	generation atomic.Uint64
	expires    time.Time
}

func (v *countingVerifier) Verify(user, password string) (*Principal, error) {
	v.checks.Add(1)
	if user != "u" || password != "right" {
		return nil, errors.New("wrong")
	}
	return &Principal{Kind: KindToken, Name: "u", Expires: v.expires,
		Grants: []acrapi.RepositoryActions{{Repository: "app/*", Actions: []string{acrapi.ActionContentRead}}}}, nil
}

func (v *countingVerifier) Generation() uint64 { return v.generation.Load() }

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func request(user, password, remote string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
	r.RemoteAddr = remote
	if user != "" {
		r.SetBasicAuth(user, password)
	}
	return r
}

func TestCacheFollowsGenerationTTLAndExpiry(t *testing.T) {
	v := &countingVerifier{}
	c := &clock{t: time.Unix(1e9, 0)}
	a, err := New(Options{Verifier: v, Now: c.now, CacheTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	check := func(wantChecks int32) {
		t.Helper()
		p, err := a.Authenticate(request("u", "right", "10.0.0.1:1"))
		if err != nil || !p.Can("app/x", acrapi.ActionContentRead) || p.Can("app/x", acrapi.ActionContentWrite) || p.Can("other", acrapi.ActionContentRead) {
			t.Fatalf("Authenticate: %v %+v", err, p)
		}
		if got := v.checks.Load(); got != wantChecks {
			t.Fatalf("verifier checks %d, want %d", got, wantChecks)
		}
	}
	check(1)
	check(1) // cached
	v.generation.Add(1)
	check(2) // credentials changed somewhere: checked again
	c.t = c.t.Add(61 * time.Second)
	check(3) // TTL passed
	v.expires = c.t.Add(10 * time.Second)
	v.generation.Add(1)
	check(4)
	c.t = c.t.Add(11 * time.Second)
	check(5) // the password's expiry ends the cached entry before the TTL
	// A wrong password is never served from the cache of the right one.
	if _, err := a.Authenticate(request("u", "wrong", "10.0.0.1:1")); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestAnonymousAndSchemes(t *testing.T) {
	a, _ := New(Options{Verifier: &countingVerifier{}, Anonymous: []string{"public/*"}})
	p, err := a.Authenticate(request("", "", "10.0.0.1:1"))
	if err != nil || !p.Anonymous() || !p.Can("public/app", acrapi.ActionContentRead) || p.Can("public/app", acrapi.ActionContentWrite) || p.Can("private/app", acrapi.ActionContentRead) {
		t.Fatalf("anonymous: %v %+v", err, p)
	}
	r := request("", "", "10.0.0.1:1")
	r.Header.Set("Authorization", "Bearer abc")
	if _, err := a.Authenticate(r); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("a bearer token: %v", err)
	}
	if _, err := New(Options{Verifier: &countingVerifier{}, Anonymous: []string{"Bad Pattern"}}); err == nil {
		t.Fatal("an invalid anonymous pattern was accepted")
	}
}

func TestFailureLimitRefills(t *testing.T) {
	v := &countingVerifier{}
	c := &clock{t: time.Unix(1e9, 0)}
	a, _ := New(Options{Verifier: v, Now: c.now, FailureBurst: 3, FailureRefill: 10 * time.Second})
	for range 3 {
		if _, err := a.Authenticate(request("u", "bad", "10.0.0.1:1")); !errors.Is(err, ErrUnauthorized) {
			t.Fatal(err)
		}
	}
	_, err := a.Authenticate(request("u", "right", "10.0.0.1:1"))
	var limited *LimitedError
	if !errors.As(err, &limited) || limited.RetryAfter != 10*time.Second || !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("4th attempt: %v", err)
	}
	if v.checks.Load() != 3 {
		t.Fatalf("a blocked attempt was checked: %d checks", v.checks.Load())
	}
	if _, err := a.Authenticate(request("u", "right", "10.0.0.2:1")); err != nil {
		t.Fatalf("another address: %v", err)
	}
	c.t = c.t.Add(10 * time.Second)
	if _, err := a.Authenticate(request("u", "right", "10.0.0.1:1")); err != nil {
		t.Fatalf("after one refill: %v", err)
	}
}

func TestClientAddr(t *testing.T) {
	pl, err := parseProxies([]string{"127.0.0.0/8", "::1", "10.1.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ remote, xff, want string }{
		{"192.0.2.1:5", "", "192.0.2.1"},
		{"192.0.2.1:5", "198.51.100.1", "192.0.2.1"}, // not a trusted proxy: its header is ignored
		{"127.0.0.1:5", "198.51.100.1", "198.51.100.1"},
		{"127.0.0.1:5", "203.0.113.9, 198.51.100.1, 10.1.2.3", "198.51.100.1"}, // the last untrusted hop
		{"127.0.0.1:5", "garbage", "127.0.0.1"},
		{"[::1]:5", "2001:db8::1", "2001:db8::1"},
		{"127.0.0.1:5", "", "127.0.0.1"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = tt.remote
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		if got := pl.clientAddr(r); got != tt.want {
			t.Errorf("clientAddr(%s, XFF %q) = %s, want %s", tt.remote, tt.xff, got, tt.want)
		}
	}
	if _, err := parseProxies([]string{"not-an-ip"}); err == nil {
		t.Error("an invalid proxy was accepted")
	}
}

// FuzzAuthenticate: whatever the Authorization and X-Forwarded-For headers and the peer
// address, Authenticate answers without panicking, and only "u:right" authenticates.
func FuzzAuthenticate(f *testing.F) {
	f.Add("Basic dTpyaWdodA==", "198.51.100.1", "127.0.0.1:1")
	f.Add("Basic !!!", "", "192.0.2.1:5")
	f.Add("Bearer x", "a, b, ::1", "[::1]:1")
	f.Add("basic dTp3cm9uZw==", "10.0.0.1,,", "garbage")
	a, _ := New(Options{Verifier: &countingVerifier{}, TrustedProxies: []string{"127.0.0.0/8", "::1"}, FailureBurst: 1 << 20})
	f.Fuzz(func(t *testing.T, authz, xff, remote string) {
		r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
		r.RemoteAddr = remote
		r.Header.Set("Authorization", authz)
		r.Header.Set("X-Forwarded-For", xff)
		p, err := a.Authenticate(r)
		if err == nil && !p.Anonymous() {
			if u, pw, ok := r.BasicAuth(); !ok || u != "u" || pw != "right" {
				t.Fatalf("authenticated %q as %v", authz, p)
			}
		}
		_ = a.proxies.clientAddr(r)
	})
}

// BenchmarkAuthenticateCached is the cost every request with already-verified credentials pays.
func BenchmarkAuthenticateCached(b *testing.B) {
	a, _ := New(Options{Verifier: &countingVerifier{}})
	r := request("u", "right", "10.0.0.1:1")
	if _, err := a.Authenticate(r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
}
