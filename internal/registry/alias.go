package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// Content named by sha512, which OCI allows beside sha256, is stored once, under its sha256 in
// distribution's blob store, and reached by its sha512 digest through an alias: a link of
// distribution's layout (_layers/sha512/<hex>/link, _manifests/revisions/sha512/<hex>/link)
// that holds the sha256 digest. distribution follows such links when it reads, and makes the
// blob's when an upload names a sha512 digest. The rest is done here: answering with the digest
// the client named, making the alias when a blob is mounted or a manifest pushed by its sha512
// digest, deleting a manifest by all its names, and (gc.go) keeping what an alias reaches.

// aliasAlgorithm is the one algorithm besides sha256 that content is addressed by.
const aliasAlgorithm = digest.SHA512

// isAlias reports whether d is an alias; d may be empty (go-digest's Algorithm panics on it).
func isAlias(d digest.Digest) bool { return strings.HasPrefix(string(d), string(aliasAlgorithm)+":") }

// checkAlgorithm refuses a digest of an algorithm content cannot be addressed by (sha384, which
// go-digest knows and OCI does not).
func checkAlgorithm(what string, d digest.Digest) error {
	if d.Algorithm() == digest.Canonical || isAlias(d) {
		return nil
	}
	return errcode.ErrorCodeDigestInvalid.WithDetail(fmt.Sprintf("%s %s: digest algorithm %q is not supported: expected sha256 or sha512", what, d, d.Algorithm()))
}

// checkDigestAlgorithms applies checkAlgorithm to the digests a /v2 request names: in its path
// (a blob, a manifest by digest) and, for uploads, in its digest and mount parameters.
// Malformed digests are left to distribution, which refuses them.
func checkDigestAlgorithms(req *http.Request, route string) error {
	check := func(what, s string) error {
		if d, err := digest.Parse(s); err == nil {
			return checkAlgorithm(what, d)
		}
		return nil
	}
	switch route {
	case v2.RouteNameManifest:
		if _, ref, ok := splitManifest(req.URL.Path); ok {
			return check("manifest", ref)
		}
	case v2.RouteNameBlob:
		if _, d, ok := splitLast(req.URL.Path, "/blobs/"); ok {
			return check("blob", d)
		}
	case v2.RouteNameBlobUpload, v2.RouteNameBlobUploadChunk:
		q := req.URL.Query()
		if err := check("digest parameter", q.Get("digest")); err != nil {
			return err
		}
		return check("mount parameter", q.Get("mount"))
	}
	return nil
}

// readLink returns the digest a link file of distribution's layout holds.
func (r *Registry) readLink(ctx context.Context, p string) (digest.Digest, error) {
	b, err := r.driver.GetContent(ctx, p)
	if err != nil {
		return "", err
	}
	return digest.Parse(strings.TrimSpace(string(b)))
}

func layerLinkPath(repo string, d digest.Digest) string {
	return path.Join(layerLinkDir(repo, d), "link")
}

// blobAliasTarget finds the sha256 digest that alias d stands for, in whichever repository
// links it: the blob store knows blobs by sha256 only. An answer is remembered: the sync engine
// asks for the same blob in StatBlob and then in LinkBlob, and each search reads a link in
// every repository.
func (r *Registry) blobAliasTarget(ctx context.Context, d digest.Digest) (digest.Digest, bool, error) {
	if t, ok := r.aliasTargets.Load(d); ok {
		return t.(digest.Digest), true, nil
	}
	repos, err := r.allRepositories(ctx)
	if err != nil {
		return "", false, err
	}
	for _, repo := range repos {
		target, err := r.readLink(ctx, layerLinkPath(repo, d))
		if isNotFound(err) {
			continue
		}
		if err != nil {
			return "", false, err
		}
		if target.Algorithm() == digest.Canonical {
			r.aliasTargets.Store(d, target)
			return target, true, nil
		}
	}
	return "", false, nil
}

// linkManifestAlias makes manifest canonical of repo reachable by alias.
func (r *Registry) linkManifestAlias(ctx context.Context, repo string, alias, canonical digest.Digest) error {
	return r.driver.PutContent(ctx, revisionLinkPath(repo, alias), []byte(canonical))
}

// linkBlobAlias makes blob canonical reachable in repo by alias.
func (r *Registry) linkBlobAlias(ctx context.Context, repo string, alias, canonical digest.Digest) error {
	return r.driver.PutContent(ctx, layerLinkPath(repo, alias), []byte(canonical))
}

// otherManifestName returns the other name manifest d of repo has, if any: the sha256 digest
// an alias stands for, or the alias of a sha256 digest.
func (r *Registry) otherManifestName(ctx context.Context, repo string, d digest.Digest) (digest.Digest, bool, error) {
	target, err := r.readLink(ctx, revisionLinkPath(repo, d))
	if isNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if isAlias(d) {
		return target, true, nil
	}
	raw, err := r.driver.GetContent(ctx, blobDataPath(target))
	if isNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	alias := aliasAlgorithm.FromBytes(raw)
	switch t, err := r.readLink(ctx, revisionLinkPath(repo, alias)); {
	case isNotFound(err):
		return "", false, nil
	case err != nil:
		return "", false, err
	case t != target:
		return "", false, nil
	}
	return alias, true, nil
}

// answerAs makes a success name alias where distribution names the sha256 digest it stores
// the content under: in Docker-Content-Digest, and at the end of Location.
func answerAs(h http.Header, alias digest.Digest) {
	canonical := h.Get("Docker-Content-Digest")
	if canonical == "" || canonical == alias.String() {
		return
	}
	h.Set("Docker-Content-Digest", alias.String())
	if loc := h.Get("Location"); strings.HasSuffix(loc, "/"+canonical) {
		h.Set("Location", strings.TrimSuffix(loc, canonical)+alias.String())
	}
}

// aliasBlobRequest prepares a blob request that names an alias; any other it returns as it is.
// A read or a finished upload answers with the alias. A mount is made of the sha256 digest the
// alias stands for in the source repository, and the alias linked once it is done:
// distribution's mount of an alias would link the alias to itself, which reaches nothing.
func (r *Registry) aliasBlobRequest(w http.ResponseWriter, req *http.Request, route, repo string) (http.ResponseWriter, *http.Request) {
	var alias, canonical digest.Digest
	switch {
	case route == v2.RouteNameBlob && (req.Method == http.MethodGet || req.Method == http.MethodHead):
		_, s, _ := splitLast(req.URL.Path, "/blobs/")
		alias, _ = digest.Parse(s)
	case (route == v2.RouteNameBlobUpload || route == v2.RouteNameBlobUploadChunk) && (req.Method == http.MethodPut || req.Method == http.MethodPost):
		q := req.URL.Query()
		alias, _ = digest.Parse(q.Get("digest"))
		m, err := digest.Parse(q.Get("mount"))
		if _, nameErr := reference.WithName(q.Get("from")); err == nil && isAlias(m) && req.Method == http.MethodPost && nameErr == nil {
			alias = m
			if c, err := r.readLink(req.Context(), layerLinkPath(q.Get("from"), m)); err == nil && c.Algorithm() == digest.Canonical {
				canonical = c
				q.Set("mount", c.String())
				sub := req.Clone(req.Context())
				sub.URL.RawQuery = q.Encode()
				req = sub
			} // else not in the source: distribution starts an upload instead
		}
	}
	if !isAlias(alias) {
		return w, req
	}
	ctx := req.Context()
	return &hookWriter{ResponseWriter: w, before: func(status int, h http.Header) error {
		if status >= http.StatusBadRequest {
			return nil
		}
		if canonical != "" && status == http.StatusCreated {
			if err := r.linkBlobAlias(ctx, repo, alias, canonical); err != nil {
				return fmt.Errorf("mounting %s: %w", alias, err)
			}
		}
		answerAs(h, alias)
		return nil
	}}, req
}

// hookWriter calls before with a response's status and headers just before they are sent; it
// may change the headers, and an error it returns is answered instead (a 500 with its text,
// and nothing of the response it replaces).
type hookWriter struct {
	http.ResponseWriter
	before func(status int, h http.Header) error
	status int
	failed bool
}

func (w *hookWriter) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	w.status = code
	if w.before != nil {
		if err := w.before(code, w.Header()); err != nil {
			w.failed, w.status = true, http.StatusInternalServerError
			dropAnswerHeaders(w.Header())
			serveError(w.ResponseWriter, errcode.ErrorCodeUnknown.WithDetail(err.Error()))
			return
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *hookWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.failed {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

func (w *hookWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// statusOnly is the response writer of a request the registry makes to distribution's handler
// on its own behalf: only the status is kept.
type statusOnly struct {
	h      http.Header
	status int
}

func (s *statusOnly) Header() http.Header         { return s.h }
func (s *statusOnly) Write(p []byte) (int, error) { return len(p), nil }
func (s *statusOnly) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

// errAliasDelete is wrapped by the error deleteOtherName returns when distribution refuses.
var errAliasDelete = errors.New("deleting the manifest's other name")

// deleteOtherName deletes, through distribution's handler, the other name (otherManifestName)
// of manifest ref of repo that req deletes, so that deleting a manifest by either digest
// deletes it and untags it by both. Nothing is done when ref is a tag or has no other name.
func (r *Registry) deleteOtherName(req *http.Request, app http.Handler, repo, ref string) error {
	d, err := digest.Parse(ref)
	if err != nil {
		return nil
	}
	other, ok, err := r.otherManifestName(req.Context(), repo, d)
	if err != nil || !ok {
		return err
	}
	sub := req.Clone(req.Context())
	sub.URL.Path, sub.URL.RawPath = "/v2/"+repo+"/manifests/"+other.String(), ""
	sub.RequestURI, sub.Body, sub.ContentLength = "", http.NoBody, 0
	rec := &statusOnly{h: http.Header{}}
	app.ServeHTTP(rec, sub)
	if rec.status != http.StatusAccepted && rec.status != http.StatusNotFound {
		return fmt.Errorf("%w %s: status %d", errAliasDelete, other, rec.status)
	}
	return nil
}
