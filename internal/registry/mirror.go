package registry

import (
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Mirror requests. containerd and K3s, using a node as a mirror of an upstream registry, send
// /v2/<repository>/...?ns=<upstream host> (GET /v2/library/alpine/manifests/3.20?ns=docker.io).
// Options.MirrorNamespaces maps the upstream host to a local repository prefix: the request is
// served as /v2/<prefix>/<repository>/... without ns. An ns that is not mapped (and every ns when
// nothing is mapped) is served as if mapped to "": the path is kept as it is.

// normalizeNamespaces lower-cases the hosts (host names are case-insensitive) and trims "/" off
// the prefixes. A nil or empty map gives nil.
func normalizeNamespaces(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for host, prefix := range m {
		out[strings.ToLower(host)] = strings.Trim(prefix, "/")
	}
	return out
}

// mirrorRewrite is how one request was rewritten.
type mirrorRewrite struct {
	ns     string // the upstream host, as the client sent it
	prefix string // the local repository prefix, without "/"; "" when names are kept
}

// rewriteMirrorRequest applies namespaces to req. It returns req itself when there is nothing to
// do (no ns, or an ns that is not mapped), else a shallow copy with the new URL and, when the
// prefix is not empty, how to undo it in Location and Link headers.
func rewriteMirrorRequest(req *http.Request, namespaces map[string]string) (*http.Request, *mirrorRewrite) {
	if len(namespaces) == 0 || req.URL.RawQuery == "" || !strings.Contains(req.URL.RawQuery, "ns=") {
		return req, nil
	}
	ns, rawQuery, found := cutNSParam(req.URL.RawQuery)
	if !found {
		return req, nil
	}
	prefix, mapped := namespaces[strings.ToLower(ns)]
	if !mapped {
		return req, nil
	}
	u := *req.URL
	u.RawQuery = rawQuery
	if prefix != "" {
		u.Path = prefixRepository(u.Path, prefix)
		if u.RawPath != "" {
			u.RawPath = prefixRepository(u.RawPath, prefix)
		}
	}
	out := req.WithContext(req.Context()) // a shallow copy
	out.URL = &u
	out.RequestURI = u.RequestURI()
	if prefix == "" {
		return out, nil
	}
	return out, &mirrorRewrite{ns: ns, prefix: prefix}
}

// cutNSParam removes every ns parameter from a raw query and returns the value of the first.
// Parameters other than ns are kept byte for byte and in order.
func cutNSParam(rawQuery string) (ns, rest string, found bool) {
	var kept []string
	for _, part := range strings.Split(rawQuery, "&") {
		key, value, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(key); err == nil && k == "ns" {
			if !found {
				if v, err := url.QueryUnescape(value); err == nil {
					ns = v
				} else {
					ns = value
				}
				found = true
			}
			continue
		}
		kept = append(kept, part)
	}
	return ns, strings.Join(kept, "&"), found
}

// prefixRepository inserts prefix before the repository of a /v2 path. The paths that name no
// repository (/v2/, /v2/_catalog) and paths outside /v2 are returned unchanged.
func prefixRepository(path, prefix string) string {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok || rest == "" || rest == "_catalog" || strings.HasPrefix(rest, "/") {
		return path
	}
	return "/v2/" + prefix + "/" + rest
}

// restore maps a URL the embedded registry produced for the rewritten request (an upload's
// Location, a tags list's Link) back to the client's view: the prefix removed and ns added, so
// that the client's next request comes back through the same rewrite.
func (m *mirrorRewrite) restore(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return raw // only the relative URLs the node sends
	}
	rest, ok := strings.CutPrefix(u.Path, "/v2/"+m.prefix+"/")
	if !ok || rest == "" {
		return raw
	}
	u.Path = "/v2/" + rest
	u.RawPath = ""
	q := "ns=" + url.QueryEscape(m.ns)
	if u.RawQuery != "" {
		q = u.RawQuery + "&" + q
	}
	u.RawQuery = q
	return u.String()
}

// restoreLink rewrites the URL inside a Link header value: <url>; rel="next".
func (m *mirrorRewrite) restoreLink(v string) string {
	start := strings.IndexByte(v, '<')
	end := strings.IndexByte(v, '>')
	if start < 0 || end < start {
		return v
	}
	return v[:start+1] + m.restore(v[start+1:end]) + v[end:]
}

// mirrorWriter applies a mirrorRewrite's restore to the Location and Link headers of a response.
type mirrorWriter struct {
	http.ResponseWriter
	m     *mirrorRewrite
	wrote bool
}

func (w *mirrorWriter) fix() {
	if w.wrote {
		return
	}
	w.wrote = true
	h := w.Header()
	if loc := h.Get("Location"); loc != "" {
		h.Set("Location", w.m.restore(loc))
	}
	if links := h.Values("Link"); len(links) > 0 {
		fixed := make([]string, len(links))
		for i, l := range links {
			fixed[i] = w.m.restoreLink(l)
		}
		h["Link"] = fixed
	}
}

func (w *mirrorWriter) WriteHeader(code int) {
	w.fix()
	w.ResponseWriter.WriteHeader(code)
}

func (w *mirrorWriter) Write(p []byte) (int, error) {
	w.fix()
	return w.ResponseWriter.Write(p)
}

// ReadFrom keeps the underlying writer's sendfile path for blob bodies.
func (w *mirrorWriter) ReadFrom(r io.Reader) (int64, error) {
	w.fix()
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(w.ResponseWriter, r)
}

func (w *mirrorWriter) Flush() {
	w.fix()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *mirrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
