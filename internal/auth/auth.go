// Package auth decides who a request comes from and what it may do, for /v2 and /acr alike:
// HTTP Basic credentials checked by the node's Verifier, a cache of verified credentials, and a
// per-address limit on failed logins.
package auth

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/observe"
	"github.com/outpost-registry/outpost/internal/repopattern"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Kind says what sort of identity a principal is.
type Kind string

// Kinds of principal.
const (
	// KindAnonymous is a request without credentials: it may do what the anonymous-pull
	// patterns allow, nothing else.
	KindAnonymous Kind = "anonymous"
	// KindAdmin is the admin user of a node without an Outpost parent: every right.
	KindAdmin Kind = "admin"
	// KindToken is a token with a scope map: at the root any of its tokens, at a connected
	// registry the client tokens its parent sent for it.
	KindToken Kind = "token"
	// KindSyncToken is the sync token of a connected registry directly below this node.
	KindSyncToken Kind = "sync-token"
	// KindSelf is a connected registry's own sync token, used on the registry itself.
	KindSelf Kind = "self"
)

// Principal is who a request comes from and what it may do.
type Principal struct {
	Kind Kind
	// Name is the user name: admin, a token's name, a sync token's name; empty for anonymous.
	Name string
	// Registry is the connected registry a sync token belongs to.
	Registry string
	// All grants every action on every repository.
	All bool
	// Grants are the actions allowed on the repositories each pattern matches.
	Grants []acrapi.RepositoryActions
	// Expires, when set, is when the credentials stop being valid: a cached authentication
	// ends then.
	Expires time.Time
	// label is String's answer, worked out once before the principal is shared: every request
	// names its caller in its log line.
	label string
}

// Can reports whether p may do action on repository repo.
func (p *Principal) Can(repo, action string) bool {
	if p == nil {
		return false
	}
	if p.All {
		return true
	}
	for _, g := range p.Grants {
		if slices.Contains(g.Actions, action) && repopattern.Match(g.Repository, repo) {
			return true
		}
	}
	return false
}

// CanAny reports whether p may do any of actions on repo.
func (p *Principal) CanAny(repo string, actions ...string) bool {
	for _, a := range actions {
		if p.Can(repo, a) {
			return true
		}
	}
	return false
}

// Anonymous reports whether p came without credentials.
func (p *Principal) Anonymous() bool { return p == nil || p.Kind == KindAnonymous }

// String names p for messages and logs: "token ci-pull", "admin", "anonymous".
func (p *Principal) String() string {
	if p != nil && p.label != "" {
		return p.label
	}
	switch {
	case p == nil || p.Kind == KindAnonymous:
		return "anonymous"
	case p.Kind == KindAdmin:
		return "admin"
	case p.Kind == KindSyncToken:
		return fmt.Sprintf("sync token %s of %s", p.Name, p.Registry)
	case p.Kind == KindSelf:
		return "sync token " + p.Name + " (this registry's own)"
	default:
		return string(p.Kind) + " " + p.Name
	}
}

// Errors of Authenticate.
var (
	// ErrUnauthorized refuses wrong or unusable credentials.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrTooManyFailures refuses a client address after too many failed logins; the error is
	// a *LimitedError that says when to retry.
	ErrTooManyFailures = errors.New("too many failed logins")
)

// LimitedError refuses a client address that failed to log in too often.
type LimitedError struct {
	Addr       string
	RetryAfter time.Duration
}

func (e *LimitedError) Error() string {
	return fmt.Sprintf("too many failed logins from %s: retry in %s", e.Addr, e.RetryAfter.Round(time.Second))
}

func (e *LimitedError) Unwrap() error { return ErrTooManyFailures }

// RetryAfterHeader is the Retry-After value for the refusal: whole seconds, rounded up.
func (e *LimitedError) RetryAfterHeader() string {
	return strconv.Itoa(int(e.RetryAfter.Seconds()) + 1)
}

// Reason is an authentication error's message without the sentinel's own word, for answers
// that say UNAUTHORIZED already.
func Reason(err error) string {
	msg, _ := strings.CutPrefix(err.Error(), ErrUnauthorized.Error()+": ")
	return msg
}

// Verifier checks a user name and password against the node's credentials.
type Verifier interface {
	// Verify returns who user is, or an error wrapping ErrUnauthorized-like causes; its
	// message may name the user, never the password.
	Verify(user, password string) (*Principal, error)
	// Generation changes whenever credentials or grants may have changed.
	Generation() uint64
}

// Options configure an Authenticator.
type Options struct {
	Verifier Verifier
	// Anonymous are the repository patterns anyone may pull (content/read, metadata/read)
	// without credentials. Empty: every request needs credentials.
	Anonymous []string
	// TrustedProxies are the addresses whose X-Forwarded-For is believed when the limit on
	// failed logins looks for the client's address.
	TrustedProxies []string
	// FailureBurst failed logins are allowed from one address at once, then one more each
	// FailureRefill. Defaults: 10, 6 s.
	FailureBurst  int
	FailureRefill time.Duration
	// CacheTTL is how long a verified credential is trusted without checking its hash again, if
	// nothing changed meanwhile. Default 1 min.
	CacheTTL time.Duration
	// Audit receives failed logins and refused requests.
	Audit *zap.Logger
	Now   func() time.Time
}

// Authenticator authenticates requests. It is safe for concurrent use.
type Authenticator struct {
	verifier  Verifier
	anonymous *Principal
	proxies   *proxyList
	limiter   *failureLimiter
	cacheTTL  time.Duration
	audit     *zap.Logger
	now       func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]cached
}

type cached struct {
	p          *Principal
	generation uint64
	until      time.Time
}

// maxCached bounds the verified-credentials cache; when full it starts over.
const maxCached = 4096

// New builds an Authenticator. Patterns and proxy addresses must be valid (config checks them).
func New(opts Options) (*Authenticator, error) {
	if opts.Verifier == nil {
		return nil, errors.New("auth: no verifier")
	}
	if opts.Audit == nil {
		opts.Audit = zap.NewNop()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FailureBurst <= 0 {
		opts.FailureBurst = 10
	}
	if opts.FailureRefill <= 0 {
		opts.FailureRefill = 6 * time.Second
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = time.Minute
	}
	proxies, err := parseProxies(opts.TrustedProxies)
	if err != nil {
		return nil, err
	}
	anon := &Principal{Kind: KindAnonymous, label: "anonymous"}
	for _, pat := range opts.Anonymous {
		if err := repopattern.Validate(pat); err != nil {
			return nil, fmt.Errorf("auth: anonymous pull pattern: %w", err)
		}
		anon.Grants = append(anon.Grants, acrapi.RepositoryActions{Repository: pat, Actions: []string{acrapi.ActionContentRead, acrapi.ActionMetadataRead}})
	}
	return &Authenticator{
		verifier:  opts.Verifier,
		anonymous: anon,
		proxies:   proxies,
		limiter:   newFailureLimiter(opts.FailureBurst, opts.FailureRefill, opts.Now),
		cacheTTL:  opts.CacheTTL,
		audit:     opts.Audit,
		now:       opts.Now,
		cache:     map[[32]byte]cached{},
	}, nil
}

// AnonymousAllowed reports whether some repositories may be pulled without credentials.
func (a *Authenticator) AnonymousAllowed() bool { return len(a.anonymous.Grants) > 0 }

// Authenticate returns who r comes from: the anonymous principal without credentials, or the
// verified holder of its HTTP Basic credentials. Wrong credentials give an error wrapping
// ErrUnauthorized; an address that failed too often a *LimitedError, before any hash is
// compared. The request's log line names the principal.
func (a *Authenticator) Authenticate(r *http.Request) (*Principal, error) {
	p, err := a.authenticate(r)
	if err == nil {
		observe.SetUser(r.Context(), p.String())
	}
	return p, err
}

func (a *Authenticator) authenticate(r *http.Request) (*Principal, error) {
	header := r.Header.Get("Authorization")
	if header == "" {
		return a.anonymous, nil
	}
	user, password, ok := r.BasicAuth()
	if !ok {
		scheme, _, _ := strings.Cut(header, " ")
		return nil, fmt.Errorf("%w: the Authorization header must carry HTTP Basic credentials (user:password), not %q", ErrUnauthorized, clip(scheme, 20))
	}
	key := sha256.Sum256([]byte(user + "\x00" + password))
	gen := a.verifier.Generation()
	now := a.now()
	a.mu.Lock()
	c, hit := a.cache[key]
	a.mu.Unlock()
	if hit && c.generation == gen && now.Before(c.until) {
		return c.p, nil
	}
	addr := a.proxies.clientAddr(r)
	if wait := a.limiter.blocked(addr); wait > 0 {
		a.audit.Warn("login refused: too many failures", zap.String("user", clip(user, 64)), zap.String("client", addr))
		return nil, &LimitedError{Addr: addr, RetryAfter: wait}
	}
	p, err := a.verifier.Verify(user, password)
	if err != nil {
		a.limiter.fail(addr)
		a.audit.Warn("login failed", zap.String("user", clip(user, 64)), zap.String("client", addr), zap.String("reason", err.Error()))
		if !errors.Is(err, ErrUnauthorized) {
			err = fmt.Errorf("%w: %v", ErrUnauthorized, err)
		}
		return nil, err
	}
	a.mu.Lock()
	if len(a.cache) >= maxCached {
		clear(a.cache)
	}
	p.label = p.String() // before the cache shares it
	until := now.Add(a.cacheTTL)
	if !p.Expires.IsZero() && p.Expires.Before(until) {
		until = p.Expires
	}
	a.cache[key] = cached{p: p, generation: gen, until: until}
	a.mu.Unlock()
	return p, nil
}

// Refused writes the audit line of a request that p may not make.
func (a *Authenticator) Refused(r *http.Request, p *Principal, action, repo string) {
	a.audit.Warn("request refused", zap.String("principal", p.String()), zap.String("action", action),
		zap.String("repository", repo), zap.String("method", r.Method), zap.String("path", clip(r.URL.Path, 256)),
		zap.String("client", a.proxies.clientAddr(r)))
}

// Audit is the audit log, for changes to credentials made through the admin API.
func (a *Authenticator) Audit() *zap.Logger { return a.audit }

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
