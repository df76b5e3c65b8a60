package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/distribution/distribution/v3/manifest/schema2"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/distribution/reference"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/auth"
)

// RouteReferrers names the OCI 1.1 referrers route, beside distribution's route names.
const RouteReferrers = "referrers"

// maxManifestSize is distribution's own limit on a manifest body.
const maxManifestSize = 4 << 20

// distributionRoutes matches /v2 paths to distribution's route names without serving them.
var distributionRoutes = v2.Router()

// Route names the /v2 route of r ("manifest", "blob", "blob-upload", "tags", "catalog", "base",
// "referrers") and the repository it addresses, for logs and metrics. Unknown paths give
// route "unknown".
func Route(r *http.Request) (route, repository string) {
	p := r.URL.Path
	if repo, _, ok := splitReferrers(p); ok {
		return RouteReferrers, repo
	}
	// The hot routes without distribution's regex router, which costs 7-13 µs a request.
	if repo, ref, ok := splitManifest(p); ok {
		if named, err := reference.WithName(repo); err == nil {
			if _, err := reference.WithTag(named, ref); err == nil {
				return v2.RouteNameManifest, repo
			}
			if _, err := digest.Parse(ref); err == nil {
				return v2.RouteNameManifest, repo
			}
		}
	}
	if repo, d, ok := splitLast(p, "/blobs/"); ok { // an upload's /blobs/uploads/<id> is not ok here
		if _, err := reference.WithName(repo); err == nil {
			if _, err := digest.Parse(d); err == nil {
				return v2.RouteNameBlob, repo
			}
		}
	}
	return routeByRegexp(r)
}

// routeByRegexp names the route with distribution's own router.
func routeByRegexp(r *http.Request) (route, repository string) {
	var m mux.RouteMatch
	if distributionRoutes.Match(r, &m) && m.Route != nil {
		return m.Route.GetName(), m.Vars["name"]
	}
	return "unknown", ""
}

// splitReferrers recognises /v2/<name>/referrers/<digest>.
func splitReferrers(path string) (repo, dgst string, ok bool) {
	return splitLast(path, "/referrers/")
}

// splitManifest recognises /v2/<name>/manifests/<reference>.
func splitManifest(path string) (repo, ref string, ok bool) {
	return splitLast(path, "/manifests/")
}

// splitLast splits /v2/<name><sep><last> where last is one non-empty path segment. The last
// occurrence of sep counts, since a repository name may itself contain "referrers" or
// "manifests" as a component.
func splitLast(path, sep string) (repo, last string, ok bool) {
	rest, found := strings.CutPrefix(path, "/v2/")
	if !found {
		return "", "", false
	}
	i := strings.LastIndex(rest, sep)
	if i <= 0 {
		return "", "", false
	}
	repo, last = rest[:i], rest[i+len(sep):]
	if last == "" || strings.Contains(last, "/") {
		return "", "", false
	}
	return repo, last, true
}

func (r *Registry) wrap() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// A failure of the node's own is answered with an incident number, not its error text.
		iw := &incidentWriter{ResponseWriter: w, req: req, log: r.log}
		defer iw.finish()
		w = iw
		// A mirror request (?ns=<upstream host>) is served under its mapped repository prefix.
		if rewritten, m := rewriteMirrorRequest(req, r.mirrorNamespaces); rewritten != req {
			req = rewritten
			if m != nil {
				w = &mirrorWriter{ResponseWriter: w, m: m}
			}
		}
		route, repo := Route(req)
		// Who asks: wrong credentials get 401 before anything else is said.
		var p *auth.Principal
		if r.auth != nil {
			var ok bool
			if p, ok = r.authenticate(w, req); !ok {
				return
			}
		}
		if mutating(req.Method) {
			// A ReadOnly connected registry refuses every write, whoever asks and whatever
			// their scope map says; the message says why.
			if msg := r.readOnly.Load(); msg != nil {
				if r.auth != nil {
					r.auth.Refused(req, p, actionFor(route, req.Method), repo)
				}
				serveError(w, errcode.ErrorCodeDenied.WithMessage(*msg))
				return
			}
		}
		if r.auth != nil && !r.authorize(w, req, p, route, repo) {
			return
		}
		if mutating(req.Method) {
			// Writes wait while garbage collection runs; reads never do.
			r.maint.RLock()
			defer r.maint.RUnlock()
		}
		app := r.app.Load()
		if repo, dgst, ok := splitReferrers(req.URL.Path); ok {
			r.serveReferrers(w, req, repo, dgst)
			return
		}
		// distribution matches names by pattern only; a name over 255 characters reaches its
		// dispatcher, which answers 500 with the error body written twice. Refuse it here.
		if repo != "" {
			if _, err := reference.WithName(repo); err != nil {
				serveError(w, errcode.ErrorCodeNameInvalid.WithDetail(err.Error()))
				return
			}
		}
		if err := checkDigestAlgorithms(req, route); err != nil {
			serveError(w, err)
			return
		}
		if req.Method == http.MethodDelete {
			if repo, ref, ok := splitManifest(req.URL.Path); ok {
				r.deleteManifest(w, req, app, repo, ref)
				return
			}
		}
		if req.Method == http.MethodPut {
			if repo, ref, ok := splitManifest(req.URL.Path); ok {
				r.putManifest(w, req, app, repo, ref)
				return
			}
		}
		w, req = r.aliasBlobRequest(w, req, route, repo)
		app.ServeHTTP(w, req)
	})
}

func serveError(w http.ResponseWriter, err error) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	_ = errcode.ServeJSON(w, err)
}

func (r *Registry) serveReferrers(w http.ResponseWriter, req *http.Request, repo, dgstText string) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		serveError(w, errcode.ErrorCodeUnsupported.WithMessage("the referrers API supports GET and HEAD only"))
		return
	}
	if _, err := reference.WithName(repo); err != nil {
		serveError(w, errcode.ErrorCodeNameInvalid.WithDetail(err.Error()))
		return
	}
	subject, err := digest.Parse(dgstText)
	if err != nil {
		serveError(w, errcode.ErrorCodeDigestInvalid.WithMessage(fmt.Sprintf("invalid digest %q: %v", dgstText, err)))
		return
	}
	artifactType := req.URL.Query().Get("artifactType")
	descs, err := r.referrers.List(req.Context(), repo, subject, artifactType)
	if err != nil {
		r.log.Error("listing referrers failed", zap.String("repository", repo), zap.Stringer("subject", subject), zap.Error(err))
		serveError(w, errcode.ErrorCodeUnknown.WithDetail(err.Error()))
		return
	}
	index := v1.Index{
		Versioned: specsVersioned,
		MediaType: v1.MediaTypeImageIndex,
		Manifests: descs,
	}
	body, err := json.Marshal(index)
	if err != nil {
		serveError(w, errcode.ErrorCodeUnknown.WithDetail(err.Error()))
		return
	}
	h := w.Header()
	h.Set("Content-Type", v1.MediaTypeImageIndex)
	h.Set("Content-Length", fmt.Sprint(len(body)))
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	if artifactType != "" {
		h.Set("OCI-Filters-Applied", "artifactType")
	}
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// putManifest records a manifest's subject in the referrer index before distribution stores it,
// and answers with the OCI-Subject header once it is stored. A manifest pushed by its sha512
// digest is stored by its sha256 and linked by the alias; tags named by ?tag= parameters are
// pointed at it once it is stored, and listed in OCI-Tag headers.
func (r *Registry) putManifest(w http.ResponseWriter, req *http.Request, app http.Handler, repo, ref string) {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxManifestSize+1))
	if err != nil {
		serveError(w, errcode.ErrorCodeManifestInvalid.WithDetail("reading the manifest body: "+err.Error()))
		return
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	if len(body) > maxManifestSize {
		// Over distribution's limit: let it give its own error with the whole body.
		req.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), req.Body))
		app.ServeHTTP(w, req)
		return
	}
	if err := checkLayerURLs(body); err != nil {
		serveError(w, errcode.ErrorCodeManifestInvalid.WithDetail(err.Error()))
		return
	}
	tags := req.URL.Query()["tag"]
	for _, tag := range tags {
		if !anchoredTag.MatchString(tag) {
			serveError(w, errcode.ErrorCodeTagInvalid.WithDetail(fmt.Sprintf("tag parameter %q is not a tag: expected up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'", tag)))
			return
		}
	}
	dgst := digest.FromBytes(body)
	var alias digest.Digest
	if d, err := digest.Parse(ref); err == nil {
		dgst = d // distribution checks the body against a sha256 digest
		if isAlias(d) {
			if got := aliasAlgorithm.FromBytes(body); got != d {
				serveError(w, errcode.ErrorCodeDigestInvalid.WithDetail(fmt.Sprintf("the manifest's %s digest is %s, not %s", aliasAlgorithm, got, d)))
				return
			}
			alias = d
			canonical := digest.FromBytes(body)
			sub := req.Clone(req.Context())
			sub.URL.Path, sub.URL.RawPath = "/v2/"+repo+"/manifests/"+canonical.String(), ""
			sub.Body = io.NopCloser(bytes.NewReader(body))
			req = sub
		}
	}
	mediaType := req.Header.Get("Content-Type")
	if i := strings.IndexByte(mediaType, ';'); i >= 0 {
		mediaType = strings.TrimSpace(mediaType[:i])
	}
	var subject digest.Digest
	if s, desc, ok := parseSubject(body, mediaType, dgst); ok {
		if _, err := reference.WithName(repo); err == nil {
			if err := r.referrers.Record(repo, s, desc); err != nil {
				r.log.Error("recording a referrer failed", zap.String("repository", repo), zap.Stringer("subject", s), zap.Error(err))
				serveError(w, errcode.ErrorCodeUnknown.WithDetail("recording the referrer: "+err.Error()))
				return
			}
			subject = s
		} // else distribution reports the invalid name
	}
	rec := &hookWriter{ResponseWriter: w, before: func(status int, h http.Header) error {
		if status != http.StatusCreated {
			return nil
		}
		if subject != "" {
			h.Set("OCI-Subject", subject.String())
		}
		if alias != "" {
			canonical, err := digest.Parse(h.Get("Docker-Content-Digest"))
			if err != nil {
				return fmt.Errorf("storing manifest %s: the store named no digest", alias)
			}
			if err := r.linkManifestAlias(req.Context(), repo, alias, canonical); err != nil {
				return fmt.Errorf("storing manifest %s: %w", alias, err)
			}
			answerAs(h, alias)
		}
		if len(tags) > 0 {
			rep, err := r.repository(req.Context(), repo)
			if err != nil {
				return err
			}
			desc := v1.Descriptor{MediaType: mediaType, Digest: dgst, Size: int64(len(body))}
			for _, tag := range tags {
				if err := rep.Tags(req.Context()).Tag(req.Context(), tag, desc); err != nil {
					return fmt.Errorf("tagging %s as %s: %w", dgst, tag, err)
				}
				h.Add("OCI-Tag", tag)
			}
		}
		return nil
	}}
	app.ServeHTTP(rec, req)
	if rec.status != http.StatusCreated {
		return
	}
	hook := r.onPush.Load()
	if hook == nil {
		return
	}
	pushed := Pushed{Repository: repo, Digest: dgst, MediaType: mediaType, Referrer: subject != ""}
	if _, err := digest.Parse(ref); err != nil {
		tags = append([]string{ref}, tags...)
	}
	if len(tags) == 0 {
		(*hook)(pushed)
	}
	for _, tag := range tags {
		pushed.Tag = tag
		(*hook)(pushed)
	}
}

// anchoredTag matches a whole tag.
var anchoredTag = regexp.MustCompile(`^` + reference.TagRegexp.String() + `$`)

// urlLayerTypes are the layers whose URLs distribution checks (the non-distributable types are
// deprecated, not gone); schema2's foreign layer must have some.
var urlLayerTypes = []string{v1.MediaTypeImageLayer, v1.MediaTypeImageLayerGzip,
	"application/vnd.oci.image.layer.nondistributable.v1.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
	schema2.MediaTypeForeignLayer}

// checkLayerURLs finds the layer URLs distribution would refuse (with a 500 and no detail): a
// layer of urlLayerTypes whose URL is not http or https, or has a fragment, or a foreign layer
// with none. A body that is not a manifest is distribution's to refuse.
func checkLayerURLs(body []byte) error {
	var m struct {
		Layers []struct {
			MediaType string   `json:"mediaType"`
			URLs      []string `json:"urls"`
		} `json:"layers"`
	}
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	for i, l := range m.Layers {
		if !slices.Contains(urlLayerTypes, l.MediaType) {
			continue
		}
		if l.MediaType == schema2.MediaTypeForeignLayer && len(l.URLs) == 0 {
			return fmt.Errorf("layers[%d]: a foreign layer (%s) needs urls to fetch it from", i, l.MediaType)
		}
		for _, u := range l.URLs {
			pu, err := url.Parse(u)
			if err != nil || pu.Scheme != "http" && pu.Scheme != "https" || pu.Fragment != "" {
				return fmt.Errorf("layers[%d].urls: %q is not an http or https URL without a fragment", i, u)
			}
		}
	}
	return nil
}

// deleteManifest serves a manifest or tag DELETE and reports it once done. A manifest deleted by
// one digest is deleted by its other (otherManifestName) too.
func (r *Registry) deleteManifest(w http.ResponseWriter, req *http.Request, app http.Handler, repo, ref string) {
	if err := r.deleteOtherName(req, app, repo, ref); err != nil {
		r.log.Error("deleting a manifest's other name failed", zap.String("repository", repo), zap.String("reference", ref), zap.Error(err))
		serveError(w, errcode.ErrorCodeUnknown.WithDetail(err.Error()))
		return
	}
	rec := &hookWriter{ResponseWriter: w}
	app.ServeHTTP(rec, req)
	if rec.status != http.StatusAccepted {
		return
	}
	if hook := r.onPush.Load(); hook != nil {
		d := Pushed{Repository: repo, Deleted: true}
		if dg, err := digest.Parse(ref); err == nil {
			d.Digest = dg
		} else {
			d.Tag = ref
		}
		(*hook)(d)
	}
}

// Pushed is a change a client made through /v2 (not one the sync engine made): a manifest
// pushed, or (Deleted) a manifest or tag deleted.
type Pushed struct {
	Repository string
	Tag        string // empty when pushed or deleted by digest
	Digest     digest.Digest
	MediaType  string
	Deleted    bool
	Referrer   bool // the manifest has a subject: a signature, an SBOM
}

// OnPush calls hook after every change a client makes through /v2, once it is done: a ReadWrite
// connected registry queues pushes for its parent, and every node logs them for its children.
func (r *Registry) OnPush(hook func(Pushed)) { r.onPush.Store(&hook) }

// mutating reports whether a request with this method may change the store.
func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}
