// Package repopattern reads repository patterns — exact names, "ns/*" (one level below ns),
// "ns/**" (any depth below ns), "*" and "**" (everything) — and decides matching and containment.
package repopattern

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// Validate checks an exact repository name or a pattern.
func Validate(p string) error {
	if p == "*" || p == "**" {
		return nil
	}
	base, _ := split(p)
	if strings.Contains(base, "*") {
		return fmt.Errorf("%q is not a repository pattern: a wildcard may only end it, as ns/* (one level) or ns/** (any depth)", p)
	}
	if _, err := reference.WithName(base); err != nil {
		return fmt.Errorf("%q is not a repository name: lower-case letters, digits and . _ - separators, components joined by /", p)
	}
	return nil
}

// kind of pattern.
const (
	exact = iota
	oneLevel
	anyDepth
	all
)

// split returns the pattern's base (the namespace, or the name itself) and its kind.
func split(p string) (string, int) {
	switch {
	case p == "*" || p == "**":
		return "", all
	case strings.HasSuffix(p, "/**"):
		return strings.TrimSuffix(p, "/**"), anyDepth
	case strings.HasSuffix(p, "/*"):
		return strings.TrimSuffix(p, "/*"), oneLevel
	default:
		return p, exact
	}
}

// Match reports whether repository name matches pattern.
func Match(pattern, name string) bool {
	base, kind := split(pattern)
	switch kind {
	case all:
		return true
	case anyDepth:
		return strings.HasPrefix(name, base+"/")
	case oneLevel:
		rest, ok := strings.CutPrefix(name, base+"/")
		return ok && rest != "" && !strings.Contains(rest, "/")
	default:
		return pattern == name
	}
}

// MatchAny reports whether name matches one of patterns.
func MatchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if Match(p, name) {
			return true
		}
	}
	return false
}

// Covers reports whether every repository that inner matches is matched by outer.
func Covers(outer, inner string) bool {
	ob, ok := split(outer)
	ib, ik := split(inner)
	switch {
	case ok == all:
		return true
	case ik == all:
		return false
	case ik == exact:
		return Match(outer, inner)
	case ok == exact:
		return false
	case ok == oneLevel:
		return ik == oneLevel && ib == ob
	default: // outer is ns/**: any pattern rooted at or below ns
		return ib == ob && ik != exact || strings.HasPrefix(ib, ob+"/")
	}
}

// CoveredBy reports whether inner is covered by one of outers, and returns inner when not.
func CoveredBy(outers []string, inner string) bool {
	for _, o := range outers {
		if Covers(o, inner) {
			return true
		}
	}
	return false
}
