package benchkit

import "net/http"

// AdminPassword is the admin password of every Outpost node a benchmark starts: Outpost asks
// every request for credentials, so the benchmarks measure it with authentication on.
const AdminPassword = "bench-admin-password-0123456789"

// OutpostEnv is ChildEnv for an Outpost node, with its admin password.
func OutpostEnv(extra ...string) []string {
	return ChildEnv(append([]string{"OUTPOST_ADMIN_PASSWORD=" + AdminPassword}, extra...)...)
}

// Credentials are the HTTP Basic credentials a node accepts: the admin's on a root or a
// mirror, a connected registry's own sync token on it.
type Credentials struct{ User, Password string }

// Admin are the credentials of every node a benchmark starts without a parent of its own.
var Admin = Credentials{User: "admin", Password: AdminPassword}

// WithAdmin makes every request through rt carry the admin's HTTP Basic credentials. A plain
// distribution registry without auth ignores them, so one client serves both systems alike.
func WithAdmin(rt http.RoundTripper) http.RoundTripper { return WithCredentials(rt, Admin) }

// WithCredentials makes every request through rt that has no Authorization carry c.
func WithCredentials(rt http.RoundTripper, c Credentials) http.RoundTripper {
	return credentialTransport{base: rt, c: c}
}

type credentialTransport struct {
	base http.RoundTripper
	c    Credentials
}

func (t credentialTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") == "" {
		req = req.Clone(req.Context())
		req.SetBasicAuth(t.c.User, t.c.Password)
	}
	return t.base.RoundTrip(req)
}
