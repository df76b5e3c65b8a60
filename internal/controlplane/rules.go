package controlplane

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/outpost-registry/outpost/internal/cronexpr"
	"github.com/outpost-registry/outpost/internal/duration"
	"github.com/outpost-registry/outpost/internal/repopattern"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Errors of the control plane, classified with errors.Is.
var (
	ErrNotFound         = errors.New("not found")
	ErrExists           = errors.New("already exists")
	ErrInvalid          = errors.New("invalid")
	ErrHasChildren      = errors.New("has children")
	ErrAlreadyActivated = errors.New("already activated")
	ErrUnauthorized     = errors.New("unauthorized")
)

// Defaults of a new definition.
const (
	DefaultSchedule = "* * * * *"
	DefaultTTL      = "P2D"
	DefaultLogLevel = "Information"
)

// Bounds of the definition's durations.
const (
	minWindow = time.Minute
	maxWindow = 7 * 24 * time.Hour
	minTTL    = 24 * time.Hour
	maxTTL    = 90 * 24 * time.Hour
)

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

// normalize fills defaults and sorts lists, so that equal definitions compare equal.
func normalize(s *acrapi.ConnectedRegistrySpec) {
	if s.Mode == "" {
		s.Mode = acrapi.ModeReadOnly
	}
	if s.SyncSchedule == "" {
		s.SyncSchedule = DefaultSchedule
	}
	if s.SyncMessageTTL == "" {
		s.SyncMessageTTL = DefaultTTL
	}
	if s.LogLevel == "" {
		s.LogLevel = DefaultLogLevel
	}
	if s.DeltaSync == "" {
		s.DeltaSync = acrapi.DeltaEnabled
	}
	for _, l := range []*[]string{&s.Repositories, &s.ClientTokens, &s.Notifications} {
		*l = dedupe(*l)
	}
}

func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	for _, v := range in {
		if v = strings.TrimSpace(v); v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// validateSpec checks the fields of one definition on their own.
func validateSpec(s acrapi.ConnectedRegistrySpec) error {
	if err := acrapi.ValidateRegistryName(s.Name); err != nil {
		return fmt.Errorf("%w: name %v", ErrInvalid, err)
	}
	if s.Mode != acrapi.ModeReadOnly && s.Mode != acrapi.ModeReadWrite {
		return invalid("mode", "%q: expected ReadOnly or ReadWrite", s.Mode)
	}
	if len(s.Repositories) == 0 {
		return invalid("repositories", "are empty: a connected registry syncs at least one repository (exact name, ns/* or ns/**)")
	}
	for _, r := range s.Repositories {
		if err := repopattern.Validate(r); err != nil {
			return invalid("repository", "%v", err)
		}
	}
	if _, err := cronexpr.Parse(s.SyncSchedule); err != nil {
		return invalid("syncSchedule", "%v", err)
	}
	if s.SyncWindow != "" {
		w, err := duration.Parse(s.SyncWindow)
		if err != nil {
			return invalid("syncWindow", "%v", err)
		}
		if w.Std() < minWindow || w.Std() > maxWindow {
			return invalid("syncWindow", "%s is out of range: expected PT1M to P7D, or none", w)
		}
	}
	ttl, err := duration.Parse(s.SyncMessageTTL)
	if err != nil {
		return invalid("syncMessageTtl", "%v", err)
	}
	if ttl.Std() < minTTL || ttl.Std() > maxTTL {
		return invalid("syncMessageTtl", "%s is out of range: expected P1D to P90D", ttl)
	}
	if !slices.Contains(acrapi.LogLevels, s.LogLevel) {
		return invalid("logLevel", "%q: expected one of %s", s.LogLevel, strings.Join(acrapi.LogLevels, ", "))
	}
	// Empty is Enabled: definitions stored or sent before the setting existed.
	if s.DeltaSync != "" && s.DeltaSync != acrapi.DeltaEnabled && s.DeltaSync != acrapi.DeltaDisabled {
		return invalid("deltaSync", "%q: expected Enabled or Disabled", s.DeltaSync)
	}
	for _, t := range s.ClientTokens {
		if err := validateTokenName(t); err != nil {
			return invalid("client token", "%v", err)
		}
	}
	return nil
}

func validateTokenName(t string) error {
	if len(t) < 5 || len(t) > 50 {
		return fmt.Errorf("%q must be 5 to 50 characters", t)
	}
	for _, r := range t {
		if !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return fmt.Errorf("%q may contain only letters, digits and '-'", t)
		}
	}
	return nil
}

// validateInTree checks a definition against the others: its parent exists, a ReadOnly parent
// has no ReadWrite child, its repositories lie within its parent's, and its children's lie
// within its own.
func validateInTree(s acrapi.ConnectedRegistrySpec, all map[string]*record) error {
	if s.Parent != "" {
		p, ok := all[key(s.Parent)]
		if !ok {
			return fmt.Errorf("%w: parent %q is not a connected registry (leave it empty for the root)", ErrInvalid, s.Parent)
		}
		if key(s.Parent) == key(s.Name) {
			return invalid("parent", "%q is the registry itself", s.Parent)
		}
		if p.Spec.Mode == acrapi.ModeReadOnly && s.Mode == acrapi.ModeReadWrite {
			return invalid("mode", "ReadWrite is not allowed under %s, which is ReadOnly: its children can only be ReadOnly", p.Spec.Name)
		}
		for _, r := range s.Repositories {
			if !repopattern.CoveredBy(p.Spec.Repositories, r) {
				return invalid("repository", "%q is not within the repositories of parent %s (%s)", r, p.Spec.Name, strings.Join(p.Spec.Repositories, ", "))
			}
		}
	}
	for _, c := range all {
		if key(c.Spec.Parent) != key(s.Name) || key(c.Spec.Name) == key(s.Name) {
			continue
		}
		for _, r := range c.Spec.Repositories {
			if !repopattern.CoveredBy(s.Repositories, r) {
				return invalid("repositories", "would no longer include %q, which child %s syncs: remove it from %s first", r, c.Spec.Name, c.Spec.Name)
			}
		}
	}
	return nil
}

// key is the case-insensitive identity of a registry name.
func key(name string) string { return strings.ToLower(name) }
