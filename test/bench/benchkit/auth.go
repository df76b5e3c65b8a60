package benchkit

import "net/http"

// AdminPassword is the admin password of every Outpost node a benchmark starts: Outpost asks
// every request for credentials, so the benchmarks measure it with authentication on.
const AdminPassword = "bench-admin-password-0123456789"

// OutpostEnv is ChildEnv for an Outpost node, with its admin password.
func OutpostEnv(extra ...string) []string {
	return ChildEnv(append([]string{"OUTPOST_ADMIN_PASSWORD=" + AdminPassword}, extra...)...)
}

// WithAdmin makes every request through rt carry the admin's HTTP Basic credentials. A plain
// distribution registry without auth ignores them, so one client serves both systems alike.
func WithAdmin(rt http.RoundTripper) http.RoundTripper { return adminTransport{rt} }

type adminTransport struct{ base http.RoundTripper }

func (a adminTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") == "" {
		req = req.Clone(req.Context())
		req.SetBasicAuth("admin", AdminPassword)
	}
	return a.base.RoundTrip(req)
}
