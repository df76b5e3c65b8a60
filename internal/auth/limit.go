package auth

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// failureLimiter counts failed logins per client address in a token bucket: burst failures are
// allowed at once, then one per refill. An address with no failure left is refused before its
// credentials are checked, so guessing passwords costs the guesser time, not the node CPU.
type failureLimiter struct {
	burst  float64
	refill time.Duration
	now    func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxTracked bounds the addresses tracked; beyond it, recovered addresses are forgotten first.
const maxTracked = 65536

func newFailureLimiter(burst int, refill time.Duration, now func() time.Time) *failureLimiter {
	return &failureLimiter{burst: float64(burst), refill: refill, now: now, buckets: map[string]*bucket{}}
}

// level returns b's tokens now.
func (l *failureLimiter) level(b *bucket, now time.Time) float64 {
	t := b.tokens + float64(now.Sub(b.at))/float64(l.refill)
	return min(t, l.burst)
}

// blocked returns how long addr must wait before its credentials are checked again; 0 if not.
func (l *failureLimiter) blocked(addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[addr]
	if !ok {
		return 0
	}
	t := l.level(b, l.now())
	if t >= 1 {
		return 0
	}
	return time.Duration((1 - t) * float64(l.refill))
}

// fail records a failed login from addr.
func (l *failureLimiter) fail(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[addr]
	if !ok {
		if len(l.buckets) >= maxTracked {
			l.forgetRecovered(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[addr] = b
	}
	b.tokens, b.at = max(l.level(b, now)-1, 0), now
}

// forgetRecovered drops the addresses whose bucket is full again; if none is, all of them.
func (l *failureLimiter) forgetRecovered(now time.Time) {
	for a, b := range l.buckets {
		if l.level(b, now) >= l.burst {
			delete(l.buckets, a)
		}
	}
	if len(l.buckets) >= maxTracked {
		clear(l.buckets)
	}
}

// proxyList is the set of reverse proxies whose X-Forwarded-For is believed.
type proxyList struct {
	prefixes []netip.Prefix
}

// parseProxies reads addresses and CIDR prefixes ("127.0.0.1", "10.0.0.0/8", "::1").
func parseProxies(list []string) (*proxyList, error) {
	pl := &proxyList{}
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			pl.prefixes = append(pl.prefixes, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("auth: trusted proxy %q: expected an IP address or CIDR prefix such as 10.0.0.0/8", s)
		}
		pl.prefixes = append(pl.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return pl, nil
}

func (pl *proxyList) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range pl.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the address a request comes from: its peer, or, when the peer is a trusted
// proxy, the last address in X-Forwarded-For that is not itself a trusted proxy.
func (pl *proxyList) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !pl.trusted(peer) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // unparsable: stop at what is known
		}
		if !pl.trusted(a) {
			return a.Unmap().String()
		}
	}
	return peer.Unmap().String()
}
