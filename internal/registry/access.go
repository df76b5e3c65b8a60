package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/auth"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// challenge is the answer's WWW-Authenticate on 401: Docker and containerd then send HTTP Basic
// credentials (docker login).
const challenge = `Basic realm="outpost"`

// actionFor is the scope-map action a /v2 request needs on its repository.
func actionFor(route, method string) string {
	switch route {
	case v2.RouteNameTags:
		return acrapi.ActionMetadataRead
	case v2.RouteNameBlobUpload, v2.RouteNameBlobUploadChunk:
		return acrapi.ActionContentWrite
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		return acrapi.ActionContentRead
	case http.MethodDelete:
		return acrapi.ActionContentDelete
	default:
		return acrapi.ActionContentWrite
	}
}

// authenticate finds who req comes from; it answers the request itself, and returns false,
// when the credentials are wrong or the client address is blocked.
func (r *Registry) authenticate(w http.ResponseWriter, req *http.Request) (*auth.Principal, bool) {
	p, err := r.auth.Authenticate(req)
	var limited *auth.LimitedError
	switch {
	case errors.As(err, &limited):
		w.Header().Set("Retry-After", limited.RetryAfterHeader())
		serveError(w, errcode.ErrorCodeTooManyRequests.WithMessage(limited.Error()))
		return nil, false
	case err != nil:
		w.Header().Set("WWW-Authenticate", challenge)
		serveError(w, errcode.ErrorCodeUnauthorized.WithMessage(auth.Reason(err)))
		return nil, false
	}
	return p, true
}

// authorize decides whether p may make req. It answers the request itself when p may not, or
// when it serves it (a catalog filtered to what p may see), and then returns false.
func (r *Registry) authorize(w http.ResponseWriter, req *http.Request, p *auth.Principal, route, repo string) bool {
	switch {
	case route == v2.RouteNameBase:
		if p.Anonymous() && !r.auth.AnonymousAllowed() {
			return r.refuse(w, req, p, "", "")
		}
		return true
	case route == v2.RouteNameCatalog:
		if p.All {
			return true
		}
		if p.Anonymous() && !r.auth.AnonymousAllowed() {
			return r.refuse(w, req, p, "", "")
		}
		r.serveCatalog(w, req, func(repo string) bool {
			return p.CanAny(repo, acrapi.ActionContentRead, acrapi.ActionMetadataRead)
		})
		return false
	case repo == "":
		// Not an API route: distribution answers 404, which tells nothing.
		return true
	}
	action := actionFor(route, req.Method)
	if !p.Can(repo, action) {
		return r.refuse(w, req, p, action, repo)
	}
	if route == v2.RouteNameBlobUpload {
		// A cross-repository mount reads from another repository: without that right the
		// registry starts a plain upload instead, as the distribution spec allows.
		q := req.URL.Query()
		if from := q.Get("from"); q.Has("mount") && !p.Can(from, acrapi.ActionContentRead) {
			q.Del("mount")
			q.Del("from")
			req.URL.RawQuery = q.Encode()
		}
	}
	return true
}

// refuse answers a request p may not make: 401 with the Basic challenge without credentials
// (the client then offers some), DENIED with credentials that do not reach this far.
func (r *Registry) refuse(w http.ResponseWriter, req *http.Request, p *auth.Principal, action, repo string) bool {
	r.auth.Refused(req, p, action, repo)
	what := fmt.Sprintf("%s on repository %s", action, repo)
	if action == "" {
		what = "this registry"
	}
	if p.Anonymous() {
		w.Header().Set("WWW-Authenticate", challenge)
		serveError(w, errcode.ErrorCodeUnauthorized.WithMessage("authentication required for "+what+": log in with a token (docker login)"))
		return false
	}
	serveError(w, errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf("%s may not %s", p, what)))
	return false
}

// serveCatalog answers GET /v2/_catalog with only the repositories keep accepts, paginated as
// distribution does (n, last, and a Link header to the next page).
func (r *Registry) serveCatalog(w http.ResponseWriter, req *http.Request, keep func(string) bool) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET")
		serveError(w, errcode.ErrorCodeUnsupported.WithMessage("the catalog supports GET only"))
		return
	}
	q := req.URL.Query()
	n := defaultCatalogEntries
	if s := q.Get("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > maxCatalogEntries {
			serveError(w, errcode.ErrorCodePaginationNumberInvalid.WithDetail(map[string]string{"n": s}))
			return
		}
		n = v
	}
	last := q.Get("last")
	var out []string
	more := false
	page := make([]string, 256)
	for n > 0 {
		filled, err := r.namespace.Repositories(req.Context(), page, last)
		var notFound storagedriver.PathNotFoundError
		if err != nil && err != io.EOF && !errors.As(err, &notFound) {
			r.log.Error("listing repositories failed", zap.Error(err))
			serveError(w, errcode.ErrorCodeUnknown.WithDetail(err.Error()))
			return
		}
		for _, repo := range page[:filled] {
			last = repo
			if !keep(repo) {
				continue
			}
			if len(out) == n {
				more = true
				break
			}
			out = append(out, repo)
		}
		if more || err != nil || filled == 0 {
			break
		}
	}
	if out == nil {
		out = []string{}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	if more {
		v := url.Values{"n": {strconv.Itoa(n)}, "last": {out[len(out)-1]}}
		next := url.URL{Path: req.URL.Path, RawQuery: v.Encode()}
		h.Set("Link", fmt.Sprintf("<%s>; rel=\"next\"", next.String()))
	}
	body, _ := json.Marshal(map[string][]string{"repositories": out})
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		_, _ = w.Write(append(body, '\n'))
	}
}

// The catalog's page sizes, as distribution's (Catalog.MaxEntries is set to the same maximum).
const (
	defaultCatalogEntries = 100
	maxCatalogEntries     = 1000
)
