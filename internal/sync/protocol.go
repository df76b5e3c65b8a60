package sync

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	stdsync "sync"
	"time"
)

// protocolTransport speaks HTTP/2 to a plain-HTTP parent (h2c, with prior knowledge) and falls
// back to HTTP/1.1 when the parent, or a proxy in front of it, does not, or stops doing so.
//
// Over a metered link a sync pass is mostly small requests: tag lists, manifest HEADs, referrers,
// delta plans. In HTTP/1.1 every one of them repeats its Host, User-Agent, Authorization and Accept
// headers and the response its digest, ETag and content-type headers: about 600 bytes a request,
// more than the bodies. HTTP/2's header compression sends each repeated header once per
// connection. Over TLS the transport below negotiates HTTP/2 by ALPN on its own; this type covers
// the plain-HTTP parents (a parent on the same site network, or a link already encrypted below
// HTTP).
type protocolTransport struct {
	base       http.RoundTripper // for other schemes: go-containerregistry tries https first
	h2c, http1 http.RoundTripper

	mu       stdsync.Mutex
	mode     protocolMode
	settled  protocolMode // the last mode settled, which onChange was told
	retryAt  time.Time    // when mode is modeHTTP1: try h2c again from then on
	now      func() time.Time
	onChange func(protocolMode, error) // told when the mode is settled or falls back; may be nil
}

type protocolMode int

const (
	modeUnknown protocolMode = iota // no request has completed yet
	modeH2C                         // the parent answered over h2c
	modeHTTP1                       // the parent answered HTTP/1.1 where h2c failed
)

func (m protocolMode) String() string {
	switch m {
	case modeH2C:
		return "HTTP/2 (h2c)"
	case modeHTTP1:
		return "HTTP/1.1"
	}
	return "unknown"
}

// h2cRetryInterval is how long a child keeps to HTTP/1.1 before trying h2c again, so that a parent
// upgraded in place (or a proxy reconfigured) is noticed without restarting the child.
const h2cRetryInterval = time.Hour

// newProtocolTransport returns the transport for the parent at u: base itself for https, for a
// parent reached through an HTTP proxy (h2c does not pass through one) and for any other scheme;
// otherwise a protocolTransport over two transports cloned from base.
func newProtocolTransport(base *http.Transport, u *url.URL, onChange func(protocolMode, error)) http.RoundTripper {
	if u.Scheme != "http" || usesProxy(base, u) {
		return base
	}
	h2c := base.Clone()
	h2c.Protocols = new(http.Protocols)
	h2c.Protocols.SetUnencryptedHTTP2(true)
	http1 := base.Clone()
	http1.Protocols = new(http.Protocols)
	http1.Protocols.SetHTTP1(true)
	return &protocolTransport{base: base, h2c: h2c, http1: http1, now: time.Now, onChange: onChange}
}

// usesProxy reports whether base sends requests for u through an HTTP proxy.
func usesProxy(base *http.Transport, u *url.URL) bool {
	if base.Proxy == nil {
		return false
	}
	p, err := base.Proxy(&http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}})
	return err != nil || p != nil
}

func (t *protocolTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		return t.base.RoundTrip(req)
	}
	t.mu.Lock()
	mode := t.mode
	if mode == modeHTTP1 && !t.now().Before(t.retryAt) {
		mode = modeUnknown
	}
	t.mu.Unlock()
	switch mode {
	case modeH2C:
		resp, err := t.h2c.RoundTrip(req)
		if err != nil && mayBeProtocol(req.Context(), err) {
			// A dropped link, a restarting parent, or one that no longer speaks h2c (replaced,
			// or put behind an HTTP/1.1 proxy, which answers and hangs up): this request fails
			// (the caller retries it), and the next one decides again, h2c first. Only HTTP/1.1
			// answering at once where h2c just failed keeps the child on HTTP/1.1.
			t.mu.Lock()
			if t.mode == modeH2C {
				t.mode = modeUnknown
			}
			t.mu.Unlock()
		}
		return resp, err
	case modeHTTP1:
		return t.http1.RoundTrip(req)
	}

	// Not known yet: try h2c. Over a replayable request, so that a failure can be retried.
	retry := req
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			// A body that cannot be sent twice goes over HTTP/1.1, which every parent speaks.
			return t.http1.RoundTrip(req)
		}
		retry = req.Clone(req.Context())
	}
	resp, err := t.h2c.RoundTrip(req)
	if err == nil {
		t.settle(modeH2C, nil)
		return resp, nil
	}
	if !mayBeProtocol(req.Context(), err) {
		return nil, err
	}
	if retry != req {
		body, gerr := req.GetBody()
		if gerr != nil {
			return nil, err
		}
		retry.Body = body
	}
	resp, err2 := t.http1.RoundTrip(retry)
	if err2 != nil {
		// Neither answered: most likely the link, not the protocol. Decide on a later request.
		return nil, err
	}
	t.settle(modeHTTP1, err)
	return resp, nil
}

// settle records the mode the parent answered in.
func (t *protocolTransport) settle(mode protocolMode, cause error) {
	t.mu.Lock()
	changed := t.settled != mode
	t.mode, t.settled = mode, mode
	if mode == modeHTTP1 {
		t.retryAt = t.now().Add(h2cRetryInterval)
	}
	t.mu.Unlock()
	if changed && t.onChange != nil {
		t.onChange(mode, cause)
	}
}

// mayBeProtocol reports whether err, from an h2c attempt, may mean that the other end does not
// speak h2c: it is not the request's own cancellation, and the connection was made.
func mayBeProtocol(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	var dns *net.DNSError
	return !errors.As(err, &dns)
}
