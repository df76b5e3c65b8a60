package sync

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	stdsync "sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/version"
)

// ParentOptions configure the connection to the parent registry.
type ParentOptions struct {
	URL                string
	Username, Password string
	CAFile             string
	InsecureSkipVerify bool
	// Scopes are requested up front when the parent uses bearer tokens; scopes a challenge asks
	// for later are added as needed.
	Scopes []string
	// Retry bounds the retries of one request.
	Retry RetryPolicy
	// Log, if set, is told which HTTP version a plain-HTTP parent answers in.
	Log *zap.Logger
}

// RetryPolicy is capped exponential backoff with full jitter.
type RetryPolicy struct {
	Attempts int           // tries in all, at least 1
	Base     time.Duration // first backoff
	Max      time.Duration // cap of one backoff (a Retry-After is honoured up to maxRetryAfter)
}

// DefaultRetry retries a failed request up to 12 times, at most 2 s apart: a satellite link back
// after a few seconds' outage is used within a second or two (probing a down link costs no
// bytes: the connection is refused), and a longer outage fails the pass after about 20 s, to
// be tried again at the next firing. A parent's Retry-After is honoured as it says.
var DefaultRetry = RetryPolicy{Attempts: 12, Base: 250 * time.Millisecond, Max: 2 * time.Second}

// maxRetryAfter bounds how long a parent's Retry-After can hold a request.
const maxRetryAfter = 5 * time.Minute

// Backoff is the wait before retry number n (1-based), honouring the parent's Retry-After.
func (p RetryPolicy) Backoff(n int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, maxRetryAfter)
	}
	d := p.Base << min(n-1, 20)
	if d <= 0 || d > p.Max {
		d = p.Max
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// Parent is a client of the parent registry's /v2 API. All its traffic goes through the link
// (gate, bandwidth cap, meter); authentication (Basic, or Docker bearer tokens with caching and
// refresh) is go-containerregistry's transport on top.
type Parent struct {
	opts ParentOptions
	reg  name.Registry
	base *url.URL
	auth authn.Authenticator
	link http.RoundTripper

	mu     stdsync.Mutex
	authed http.RoundTripper // created on first use: it needs the parent reachable
}

// NewParent prepares a client; it sends nothing until used.
func NewParent(opts ParentOptions, link *linkTransport) (*Parent, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("parent url %q: expected http(s)://host[:port]", opts.URL)
	}
	var nopts []name.Option
	if u.Scheme == "http" {
		nopts = append(nopts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, nopts...)
	if err != nil {
		return nil, fmt.Errorf("parent url %q: %w", opts.URL, err)
	}
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS12, InsecureSkipVerify: opts.InsecureSkipVerify, //nolint:gosec // operator's explicit choice
		// Resuming a session skips the certificate chain, a few KiB on every reconnection of a
		// link that drops.
		ClientSessionCache: tls.NewLRUClientSessionCache(8),
	}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("parent CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("parent CA file %s holds no PEM certificate", opts.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	base := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           link.conns.dialer((&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext),
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   16,
		ForceAttemptHTTP2:     true,
	}
	// A connection whose path died without a reset must be given up: over HTTP/2 every request
	// shares it, so the retries after a stall would stall on it again. A ping after half the
	// stall timeout of silence, unanswered for as long again, closes it.
	ping := 30 * time.Second
	if link.stall > 0 {
		ping = min(ping, max(link.stall/2, 50*time.Millisecond))
	}
	base.HTTP2 = &http.HTTP2Config{SendPingTimeout: ping, PingTimeout: ping}
	if link.inner == nil {
		log := opts.Log
		if log == nil {
			log = zap.NewNop()
		}
		link.inner = newProtocolTransport(base, u, func(m protocolMode, cause error) {
			if cause != nil {
				log.Info("the parent does not speak HTTP/2 without TLS (h2c): using HTTP/1.1", zap.String("parent", u.Redacted()), zap.Error(cause))
				return
			}
			log.Info("speaking HTTP/2 without TLS (h2c) to the parent", zap.String("parent", u.Redacted()))
		})
	}
	auth := authn.Anonymous
	if opts.Username != "" {
		auth = authn.FromConfig(authn.AuthConfig{Username: opts.Username, Password: opts.Password})
	}
	if opts.Retry.Attempts < 1 {
		opts.Retry = DefaultRetry
	}
	return &Parent{opts: opts, reg: reg, base: u, auth: auth, link: transport.NewUserAgent(link, version.UserAgent())}, nil
}

// transport returns the authenticated transport, doing the auth handshake on first use.
func (p *Parent) transport(ctx context.Context) (http.RoundTripper, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.authed != nil {
		return p.authed, nil
	}
	t, err := transport.NewWithContext(ctx, p.reg, p.auth, p.link, p.opts.Scopes)
	if err != nil {
		return nil, err
	}
	p.authed = t
	return t, nil
}

// resetTransport forgets the auth handshake, so that the next request repeats it.
func (p *Parent) resetTransport() {
	p.mu.Lock()
	p.authed = nil
	p.mu.Unlock()
}

// ParentError is a response from the parent that is not a success.
type ParentError struct {
	Method, Path string
	Status       int
	Code         string // the OCI error code, if the body had one
	Message      string
	RetryAfter   time.Duration
}

func (e *ParentError) Error() string {
	msg := fmt.Sprintf("parent answered %s %s with %d", e.Method, e.Path, e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Temporary reports whether the same request may succeed later.
func (e *ParentError) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout || e.Status >= 500
}

// IsNotFound reports whether err is the parent's 404.
func IsNotFound(err error) bool {
	var pe *ParentError
	return errors.As(err, &pe) && pe.Status == http.StatusNotFound
}

// retryable reports whether a failed request should be tried again.
func retryable(err error) bool {
	if errors.Is(err, ErrWindowClosed) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *ParentError
	if errors.As(err, &pe) {
		return pe.Temporary()
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.Temporary()
	}
	return true // network errors: resets, refused connections, timeouts
}

// Do sends a request to path (below the parent's base, such as /v2/alpine/tags/list) and returns
// a response with a 2xx status (or 304); any other status is a *ParentError. Failures that may
// pass are retried with backoff, honouring Retry-After. The caller closes the body.
func (p *Parent) Do(ctx context.Context, method, path string, header http.Header) (*http.Response, error) {
	var lastErr error
	for attempt := 1; attempt <= p.opts.Retry.Attempts; attempt++ {
		resp, err := p.once(ctx, method, path, header, nil)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		if !retryable(err) || attempt == p.opts.Retry.Attempts {
			break
		}
		var retryAfter time.Duration
		var pe *ParentError
		if errors.As(err, &pe) {
			retryAfter = pe.RetryAfter
		} else {
			// A network failure may have been a reset during the auth handshake: redo it.
			p.resetTransport()
		}
		if err := sleep(ctx, p.opts.Retry.Backoff(attempt, retryAfter)); err != nil {
			return nil, err
		}
	}
	return nil, lastErr
}

// Send sends one request with body to target — a path below the parent's base, or an absolute
// URL on the parent as an upload's Location may be — and returns a 2xx response, or a
// *ParentError. It is not retried: an upload's state must be asked for before a chunk is sent
// again.
func (p *Parent) Send(ctx context.Context, method, target string, header http.Header, body []byte) (*http.Response, error) {
	return p.once(ctx, method, target, header, body)
}

func (p *Parent) once(ctx context.Context, method, path string, header http.Header, payload []byte) (*http.Response, error) {
	t, err := p.transport(ctx)
	if err != nil {
		return nil, err
	}
	u := *p.base
	if abs, err := url.Parse(path); err == nil && abs.IsAbs() {
		if abs.Host != p.base.Host {
			return nil, fmt.Errorf("the parent sent a location on another host: %s", abs.Host)
		}
		u = *abs
	} else {
		u.Path, u.RawQuery, _ = strings.Cut(path, "?")
	}
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := t.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusNotModified {
		return resp, nil
	}
	defer resp.Body.Close()
	pe := &ParentError{Method: method, Path: u.Path, Status: resp.StatusCode}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if secs, err := strconv.Atoi(s); err == nil && secs >= 0 {
			pe.RetryAfter = time.Duration(secs) * time.Second
		} else if at, err := http.ParseTime(s); err == nil {
			pe.RetryAfter = time.Until(at)
		}
	}
	var body struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10)); err == nil && json.Unmarshal(b, &body) == nil && len(body.Errors) > 0 {
		pe.Code, pe.Message = body.Errors[0].Code, body.Errors[0].Message
	}
	return nil, pe
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// maxManifestSize bounds a manifest read from the parent, as distribution bounds pushes.
const maxManifestSize = 4 << 20

// Manifest is a manifest as the parent stores it: the exact bytes, their digest and media type.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Raw       []byte
}

// acceptManifests lists every manifest type Outpost mirrors.
var acceptManifests = strings.Join([]string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// HeadManifest returns the digest the parent has for repo:ref, without its body.
func (p *Parent) HeadManifest(ctx context.Context, repo, ref string) (digest.Digest, error) {
	resp, err := p.Do(ctx, http.MethodHead, "/v2/"+repo+"/manifests/"+ref, http.Header{"Accept": {acceptManifests}})
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		return "", fmt.Errorf("parent sent no valid Docker-Content-Digest for %s:%s", repo, ref)
	}
	return d, nil
}

// GetManifest fetches repo@ref. When ref is a digest, or the parent names one, the bytes are
// checked against it: a parent that sends other bytes is refused.
func (p *Parent) GetManifest(ctx context.Context, repo, ref string) (Manifest, error) {
	var m Manifest
	err := p.getBody(ctx, "/v2/"+repo+"/manifests/"+ref, http.Header{"Accept": {acceptManifests}}, maxManifestSize+1, func(resp *http.Response, raw []byte) error {
		if len(raw) > maxManifestSize {
			return fmt.Errorf("manifest %s:%s is larger than %d bytes", repo, ref, maxManifestSize)
		}
		want, err := digest.Parse(ref)
		if err != nil {
			want, _ = digest.Parse(resp.Header.Get("Docker-Content-Digest"))
		}
		alg := digest.Canonical
		if want != "" {
			alg = want.Algorithm()
		}
		got := alg.FromBytes(raw)
		if want != "" && got != want {
			return fmt.Errorf("%w: manifest %s:%s is %s, expected %s", ErrCorrupt, repo, ref, got, want)
		}
		mt := resp.Header.Get("Content-Type")
		if i := strings.IndexByte(mt, ';'); i >= 0 {
			mt = strings.TrimSpace(mt[:i])
		}
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(raw, &probe) == nil && probe.MediaType != "" {
			mt = probe.MediaType
		}
		m = Manifest{Digest: got, MediaType: mt, Raw: raw}
		return nil
	})
	if err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// getBody GETs path, reads its body (at most limit bytes) and hands it to use. A body that
// breaks off, or that use finds corrupt (ErrCorrupt), is fetched again within the retry policy,
// as a failed request is: on a flaky link a drop mid-body is as likely as one before the headers.
func (p *Parent) getBody(ctx context.Context, path string, header http.Header, limit int64, use func(*http.Response, []byte) error) error {
	for attempt := 1; ; attempt++ {
		resp, err := p.Do(ctx, http.MethodGet, path, header)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
		resp.Body.Close()
		if err != nil {
			if !retryable(err) {
				return err
			}
			err = fmt.Errorf("reading %s: %w", path, err)
		} else if err = use(resp, body); err == nil || !errors.Is(err, ErrCorrupt) {
			return err
		}
		if attempt >= p.opts.Retry.Attempts {
			return err
		}
		if serr := sleep(ctx, p.opts.Retry.Backoff(attempt, 0)); serr != nil {
			return serr
		}
	}
}

// ErrCorrupt marks content from the parent whose bytes do not match their digest.
var ErrCorrupt = errors.New("content from the parent does not match its digest")

// Tags lists every tag of repo, following pagination.
func (p *Parent) Tags(ctx context.Context, repo string) ([]string, error) {
	var all []string
	err := p.paginate(ctx, "/v2/"+repo+"/tags/list?n=1000", func(body []byte) error {
		var page struct {
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return fmt.Errorf("tag list of %s: %w", repo, err)
		}
		all = append(all, page.Tags...)
		return nil
	})
	return all, err
}

// Catalog lists every repository the parent's catalog shows this node.
func (p *Parent) Catalog(ctx context.Context) ([]string, error) {
	var all []string
	err := p.paginate(ctx, "/v2/_catalog?n=100", func(body []byte) error {
		var page struct {
			Repositories []string `json:"repositories"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return fmt.Errorf("catalog: %w", err)
		}
		all = append(all, page.Repositories...)
		return nil
	})
	return all, err
}

// paginate GETs path and follows rel="next" Link headers, at most 10000 pages.
func (p *Parent) paginate(ctx context.Context, path string, page func([]byte) error) error {
	for i := 0; path != "" && i < 10000; i++ {
		var next string
		err := p.getBody(ctx, path, nil, 16<<20, func(resp *http.Response, body []byte) error {
			next = nextLink(resp.Header.Get("Link"))
			return page(body)
		})
		if err != nil {
			return err
		}
		path = next
	}
	return nil
}

// nextLink extracts the target of `<...>; rel="next"`.
func nextLink(h string) string {
	for _, part := range strings.Split(h, ",") {
		target, params, ok := strings.Cut(part, ";")
		if !ok || !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
			continue
		}
		target = strings.Trim(strings.TrimSpace(target), "<>")
		if u, err := url.Parse(target); err == nil {
			if u.RawQuery != "" {
				return u.Path + "?" + u.RawQuery
			}
			return u.Path
		}
	}
	return ""
}

// Referrers lists the manifests whose subject is dgst in repo. A parent without the referrers
// API gives an empty list.
func (p *Parent) Referrers(ctx context.Context, repo string, dgst digest.Digest) ([]Descriptor, error) {
	var index struct {
		Manifests []Descriptor `json:"manifests"`
	}
	err := p.getBody(ctx, "/v2/"+repo+"/referrers/"+dgst.String(), http.Header{"Accept": {"application/vnd.oci.image.index.v1+json"}}, maxManifestSize, func(_ *http.Response, body []byte) error {
		if err := json.Unmarshal(body, &index); err != nil {
			return fmt.Errorf("referrers of %s@%s: %w", repo, dgst, err)
		}
		return nil
	})
	if err != nil {
		var pe *ParentError
		if errors.As(err, &pe) && (pe.Status == http.StatusNotFound || pe.Status == http.StatusMethodNotAllowed || pe.Status == http.StatusBadRequest) {
			return nil, nil
		}
		return nil, err
	}
	return index.Manifests, nil
}

// BlobRange fetches bytes [offset, offset+length) of a blob. The parent may answer 206 with that
// range, or 200 with the whole blob when it ignores Range (whole is then true); skip is how many
// leading bytes of the body the caller must discard to reach offset.
func (p *Parent) BlobRange(ctx context.Context, repo string, dgst digest.Digest, offset, length int64) (body io.ReadCloser, skip int64, whole bool, err error) {
	h := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", offset, offset+length-1)}}
	resp, err := p.Do(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+dgst.String(), h)
	if err != nil {
		return nil, 0, false, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, err := contentRangeStart(resp.Header.Get("Content-Range"))
		if err != nil || start != offset {
			resp.Body.Close()
			// Nothing was written: ask again rather than discard the bytes stored so far.
			return nil, 0, false, fmt.Errorf("parent answered range %d- with Content-Range %q", offset, resp.Header.Get("Content-Range"))
		}
		return resp.Body, 0, false, nil
	case http.StatusOK:
		return resp.Body, offset, true, nil
	default:
		resp.Body.Close()
		return nil, 0, false, fmt.Errorf("parent answered a blob range request with %d", resp.StatusCode)
	}
}

func contentRangeStart(h string) (int64, error) {
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, fmt.Errorf("bad Content-Range %q", h)
	}
	start, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, fmt.Errorf("bad Content-Range %q", h)
	}
	return strconv.ParseInt(start, 10, 64)
}
