package controlplane

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-registry/outpost/internal/repopattern"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Errors of tokens and scope maps, classified with errors.Is.
var (
	// ErrInUse refuses to delete what another definition still names.
	ErrInUse = errors.New("in use")
	// ErrTokenDisabled refuses a disabled token's right credentials; it wraps ErrUnauthorized.
	ErrTokenDisabled = fmt.Errorf("%w: token disabled", ErrUnauthorized)
)

var (
	bucketScopeMaps = []byte("scopeMaps")
	bucketTokens    = []byte("tokens")
)

// tokenRecord is a token as stored: only the hashes of its passwords.
type tokenRecord struct {
	Spec      acrapi.TokenSpec `json:"spec"`
	Password1 *storedPassword  `json:"password1,omitempty"`
	Password2 *storedPassword  `json:"password2,omitempty"`
	CreatedAt time.Time        `json:"createdAt"`
	UpdatedAt time.Time        `json:"updatedAt"`
}

type storedPassword struct {
	Hash      []byte     `json:"hash"`
	CreatedAt time.Time  `json:"createdAt"`
	Expiry    *time.Time `json:"expiry,omitempty"`
}

// dummyHash is compared against when a token or one of its passwords does not exist, so that a
// wrong name costs as much time as a wrong password: it has the cost of real hashes.
func (s *Store) dummyHash() []byte {
	s.dummyOnce.Do(func() {
		s.dummy, _ = bcrypt.GenerateFromPassword([]byte("outpost-no-such-token"), s.cost)
	})
	return s.dummy
}

// --- scope maps ---

// normalizeActions merges the entries of one repository, dedupes and orders actions
// canonically, and sorts entries by repository.
func normalizeActions(in []acrapi.RepositoryActions) []acrapi.RepositoryActions {
	byRepo := map[string][]string{}
	var repos []string
	for _, ra := range in {
		repo := strings.TrimSpace(ra.Repository)
		if _, ok := byRepo[repo]; !ok {
			repos = append(repos, repo)
		}
		for _, a := range ra.Actions {
			a = strings.ToLower(strings.TrimSpace(a))
			if a != "" && !slices.Contains(byRepo[repo], a) {
				byRepo[repo] = append(byRepo[repo], a)
			}
		}
	}
	slices.Sort(repos)
	out := make([]acrapi.RepositoryActions, 0, len(repos))
	for _, r := range repos {
		acts := byRepo[r]
		slices.SortFunc(acts, func(a, b string) int { return actionRank(a) - actionRank(b) })
		out = append(out, acrapi.RepositoryActions{Repository: r, Actions: acts})
	}
	return out
}

func actionRank(a string) int {
	if i := slices.Index(acrapi.ScopeMapActions, a); i >= 0 {
		return i
	}
	return len(acrapi.ScopeMapActions)
}

// validateName checks the name of a scope map or token: 5 to 50 letters, digits and '-'.
func validateName(kind, name string) error {
	if err := validateTokenName(name); err != nil {
		return invalid(kind+" name", "%v", err)
	}
	return nil
}

func validateScopeMap(sm acrapi.ScopeMapSpec) error {
	if err := validateName("scope map", sm.Name); err != nil {
		return err
	}
	if len(sm.Description) > 256 {
		return invalid("description", "is %d characters: at most 256", len(sm.Description))
	}
	if len(sm.Actions) == 0 {
		return invalid("actions", "are empty: a scope map grants at least one action on a repository, such as %s content/read", "app/*")
	}
	for _, ra := range sm.Actions {
		if err := repopattern.Validate(ra.Repository); err != nil {
			return invalid("repository", "%v", err)
		}
		if len(ra.Actions) == 0 {
			return invalid("actions", "of %q are empty: expected some of %s", ra.Repository, strings.Join(acrapi.ScopeMapActions, ", "))
		}
		for _, a := range ra.Actions {
			if !slices.Contains(acrapi.ScopeMapActions, a) {
				return invalid("action", "%q on %q is not an action: expected %s", a, ra.Repository, strings.Join(acrapi.ScopeMapActions, ", "))
			}
		}
	}
	return nil
}

func getJSON[T any](tx *bolt.Tx, bucket []byte, kind, name string) (*T, error) {
	v := tx.Bucket(bucket).Get([]byte(key(name)))
	if v == nil {
		return nil, fmt.Errorf("%w: %s %q", ErrNotFound, kind, name)
	}
	var out T
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, fmt.Errorf("control plane %s %s: %w", kind, name, err)
	}
	return &out, nil
}

func putJSON(tx *bolt.Tx, bucket []byte, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(key(name)), b)
}

func listJSON[T any](tx *bolt.Tx, bucket []byte, kind string) ([]T, error) {
	var out []T
	err := tx.Bucket(bucket).ForEach(func(k, v []byte) error {
		var r T
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("control plane %s %s: %w", kind, k, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// CreateScopeMap adds a scope map.
func (s *Store) CreateScopeMap(spec acrapi.ScopeMapSpec) (acrapi.ScopeMap, error) {
	spec.Name, spec.Description = strings.TrimSpace(spec.Name), strings.TrimSpace(spec.Description)
	spec.Actions = normalizeActions(spec.Actions)
	if err := validateScopeMap(spec); err != nil {
		return acrapi.ScopeMap{}, err
	}
	var out acrapi.ScopeMap
	err := s.updateAccess(func(tx *bolt.Tx) error {
		if existing, err := getJSON[acrapi.ScopeMap](tx, bucketScopeMaps, "scope map", spec.Name); err == nil {
			return fmt.Errorf("%w: scope map %s", ErrExists, existing.Name)
		}
		now := s.now().UTC()
		out = acrapi.ScopeMap{ScopeMapSpec: spec, CreatedAt: now, UpdatedAt: now}
		return putJSON(tx, bucketScopeMaps, spec.Name, out)
	})
	return out, err
}

// GetScopeMap returns one scope map.
func (s *Store) GetScopeMap(name string) (acrapi.ScopeMap, error) {
	var out acrapi.ScopeMap
	err := s.db.View(func(tx *bolt.Tx) error {
		sm, err := getJSON[acrapi.ScopeMap](tx, bucketScopeMaps, "scope map", name)
		if err == nil {
			out = *sm
		}
		return err
	})
	return out, err
}

// ListScopeMaps returns every scope map, by name.
func (s *Store) ListScopeMaps() ([]acrapi.ScopeMap, error) {
	var out []acrapi.ScopeMap
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		out, err = listJSON[acrapi.ScopeMap](tx, bucketScopeMaps, "scope map")
		return err
	})
	return out, err
}

// UpdateScopeMap applies u to a scope map.
func (s *Store) UpdateScopeMap(name string, u acrapi.ScopeMapUpdate) (acrapi.ScopeMap, error) {
	var out acrapi.ScopeMap
	err := s.updateAccess(func(tx *bolt.Tx) error {
		sm, err := getJSON[acrapi.ScopeMap](tx, bucketScopeMaps, "scope map", name)
		if err != nil {
			return err
		}
		if u.Description != nil {
			sm.Description = strings.TrimSpace(*u.Description)
		}
		actions := sm.Actions
		if u.Actions != nil {
			actions = u.Actions
		}
		actions = normalizeActions(append(slices.Clone(actions), u.AddActions...))
		for _, rm := range normalizeActions(u.RemoveActions) {
			for i := range actions {
				if actions[i].Repository == rm.Repository {
					actions[i].Actions = slices.DeleteFunc(actions[i].Actions, func(a string) bool { return slices.Contains(rm.Actions, a) })
				}
			}
		}
		sm.Actions = slices.DeleteFunc(actions, func(ra acrapi.RepositoryActions) bool { return len(ra.Actions) == 0 })
		if err := validateScopeMap(sm.ScopeMapSpec); err != nil {
			return err
		}
		sm.UpdatedAt = s.now().UTC()
		out = *sm
		return putJSON(tx, bucketScopeMaps, sm.Name, sm)
	})
	return out, err
}

// DeleteScopeMap removes a scope map that no token uses.
func (s *Store) DeleteScopeMap(name string) error {
	return s.updateAccess(func(tx *bolt.Tx) error {
		sm, err := getJSON[acrapi.ScopeMap](tx, bucketScopeMaps, "scope map", name)
		if err != nil {
			return err
		}
		tokens, err := listJSON[tokenRecord](tx, bucketTokens, "token")
		if err != nil {
			return err
		}
		var users []string
		for _, t := range tokens {
			if key(t.Spec.ScopeMap) == key(sm.Name) {
				users = append(users, t.Spec.Name)
			}
		}
		if len(users) > 0 {
			return fmt.Errorf("%w: scope map %s is used by token %s: delete the token or give it another scope map first", ErrInUse, sm.Name, joinNames(users))
		}
		return tx.Bucket(bucketScopeMaps).Delete([]byte(key(name)))
	})
}

// --- tokens ---

// normalizeStatus returns the status's canonical spelling; "" is enabled.
func normalizeStatus(status string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(status)) {
	case "", acrapi.TokenStatusEnabled:
		return acrapi.TokenStatusEnabled, nil
	case acrapi.TokenStatusDisabled:
		return acrapi.TokenStatusDisabled, nil
	}
	return "", invalid("status", "%q: expected enabled or disabled", status)
}

// scopeMapOf checks that the scope map name exists and returns its stored spelling.
func scopeMapOf(tx *bolt.Tx, name string) (string, error) {
	if strings.TrimSpace(name) == "" {
		return "", invalid("scope map", "is empty: a token needs the scope map that says what it may do")
	}
	sm, err := getJSON[acrapi.ScopeMap](tx, bucketScopeMaps, "scope map", name)
	if errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("%w: scope map %q does not exist: create it first", ErrInvalid, name)
	}
	if err != nil {
		return "", err
	}
	return sm.Name, nil
}

func tokenView(r *tokenRecord) acrapi.Token {
	t := acrapi.Token{TokenSpec: r.Spec, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
	for i, p := range []*storedPassword{r.Password1, r.Password2} {
		if p != nil {
			t.Passwords = append(t.Passwords, acrapi.TokenPassword{Name: fmt.Sprintf("password%d", i+1), CreatedAt: p.CreatedAt, Expiry: p.Expiry})
		}
	}
	return t
}

// CreateToken adds a token, without passwords (GenerateTokenPassword makes them).
func (s *Store) CreateToken(spec acrapi.TokenSpec) (acrapi.Token, error) {
	spec.Name = strings.TrimSpace(spec.Name)
	if err := validateName("token", spec.Name); err != nil {
		return acrapi.Token{}, err
	}
	status, err := normalizeStatus(spec.Status)
	if err != nil {
		return acrapi.Token{}, err
	}
	spec.Status = status
	var out acrapi.Token
	err = s.updateAccess(func(tx *bolt.Tx) error {
		if existing, err := getJSON[tokenRecord](tx, bucketTokens, "token", spec.Name); err == nil {
			return fmt.Errorf("%w: token %s", ErrExists, existing.Spec.Name)
		}
		if spec.ScopeMap, err = scopeMapOf(tx, spec.ScopeMap); err != nil {
			return err
		}
		now := s.now().UTC()
		r := &tokenRecord{Spec: spec, CreatedAt: now, UpdatedAt: now}
		out = tokenView(r)
		return putJSON(tx, bucketTokens, spec.Name, r)
	})
	return out, err
}

// GetToken returns one token, without its passwords' hashes.
func (s *Store) GetToken(name string) (acrapi.Token, error) {
	var out acrapi.Token
	err := s.db.View(func(tx *bolt.Tx) error {
		r, err := getJSON[tokenRecord](tx, bucketTokens, "token", name)
		if err == nil {
			out = tokenView(r)
		}
		return err
	})
	return out, err
}

// ListTokens returns every token, by name.
func (s *Store) ListTokens() ([]acrapi.Token, error) {
	var out []acrapi.Token
	err := s.db.View(func(tx *bolt.Tx) error {
		all, err := listJSON[tokenRecord](tx, bucketTokens, "token")
		for i := range all {
			out = append(out, tokenView(&all[i]))
		}
		return err
	})
	return out, err
}

// UpdateToken changes a token's scope map or status.
func (s *Store) UpdateToken(name string, u acrapi.TokenUpdate) (acrapi.Token, error) {
	var out acrapi.Token
	err := s.updateAccess(func(tx *bolt.Tx) error {
		r, err := getJSON[tokenRecord](tx, bucketTokens, "token", name)
		if err != nil {
			return err
		}
		if u.ScopeMap != nil {
			if r.Spec.ScopeMap, err = scopeMapOf(tx, *u.ScopeMap); err != nil {
				return err
			}
		}
		if u.Status != nil {
			if r.Spec.Status, err = normalizeStatus(*u.Status); err != nil {
				return err
			}
		}
		r.UpdatedAt = s.now().UTC()
		out = tokenView(r)
		return putJSON(tx, bucketTokens, r.Spec.Name, r)
	})
	return out, err
}

// DeleteToken removes a token that no connected registry names among its client tokens.
func (s *Store) DeleteToken(name string) error {
	return s.updateAccess(func(tx *bolt.Tx) error {
		r, err := getJSON[tokenRecord](tx, bucketTokens, "token", name)
		if err != nil {
			return err
		}
		all, err := loadAll(tx)
		if err != nil {
			return err
		}
		var users []string
		for _, cr := range treeOrder(all, "") {
			if slices.ContainsFunc(cr.Spec.ClientTokens, func(t string) bool { return key(t) == key(r.Spec.Name) }) {
				users = append(users, cr.Spec.Name)
			}
		}
		if len(users) > 0 {
			return fmt.Errorf("%w: token %s is a client token of connected registry %s: remove it there first (connected-registry update --remove-client-tokens)",
				ErrInUse, r.Spec.Name, joinNames(users))
		}
		return tx.Bucket(bucketTokens).Delete([]byte(key(name)))
	})
}

// checkClientTokens refuses client tokens that are not tokens.
func checkClientTokens(tx *bolt.Tx, names []string) error {
	for _, n := range names {
		if tx.Bucket(bucketTokens).Get([]byte(key(n))) == nil {
			return fmt.Errorf("%w: client token %q is not a token: create it first (token create)", ErrInvalid, n)
		}
	}
	return nil
}

// GenerateTokenPassword sets a new random password in slot 1 or 2 of a token, valid until
// expiry if not nil, and returns it: only its hash is stored.
func (s *Store) GenerateTokenPassword(name string, slot int, expiry *time.Time) (string, error) {
	if slot != 1 && slot != 2 {
		return "", fmt.Errorf("%w: password %d: expected 1 or 2", ErrInvalid, slot)
	}
	now := s.now().UTC()
	if expiry != nil {
		e := expiry.UTC()
		if !e.After(now) {
			return "", invalid("expiry", "%s is not in the future", e.Format(time.RFC3339))
		}
		expiry = &e
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	password := base64.RawURLEncoding.EncodeToString(raw)
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	if err != nil {
		return "", err
	}
	err = s.updateAccess(func(tx *bolt.Tx) error {
		r, err := getJSON[tokenRecord](tx, bucketTokens, "token", name)
		if err != nil {
			return err
		}
		p := &storedPassword{Hash: hash, CreatedAt: now, Expiry: expiry}
		if slot == 1 {
			r.Password1 = p
		} else {
			r.Password2 = p
		}
		r.UpdatedAt = now
		return putJSON(tx, bucketTokens, r.Spec.Name, r)
	})
	if err != nil {
		return "", err
	}
	return password, nil
}

// AuthenticateToken checks a token's credentials and returns what its scope map grants. Both
// passwords are compared whatever the outcome, and a token that does not exist costs a
// comparison too. An expired password is refused; a disabled token's right password is refused
// with ErrTokenDisabled.
func (s *Store) AuthenticateToken(name, password string) ([]acrapi.RepositoryActions, error) {
	actions, _, err := s.AuthenticateTokenUntil(name, password)
	return actions, err
}

// AuthenticateTokenUntil is AuthenticateToken that also says until when the password that
// matched is valid (nil: no expiry), so that a cached authentication ends with it.
func (s *Store) AuthenticateTokenUntil(name, password string) ([]acrapi.RepositoryActions, *time.Time, error) {
	var r *tokenRecord
	var sm *acrapi.ScopeMap
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if r, err = getJSON[tokenRecord](tx, bucketTokens, "token", name); err != nil {
			r = nil
			return nil
		}
		if sm, err = getJSON[acrapi.ScopeMap](tx, bucketScopeMaps, "scope map", r.Spec.ScopeMap); err != nil {
			sm = nil
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	var p1, p2 *storedPassword
	if r != nil {
		p1, p2 = r.Password1, r.Password2
	}
	now := s.now()
	dummy := s.dummyHash()
	ok1, expired1 := checkPassword(p1, dummy, password, now)
	ok2, expired2 := checkPassword(p2, dummy, password, now)
	exists := r != nil
	switch {
	case !exists || !(ok1 || ok2 || expired1 || expired2):
		return nil, nil, fmt.Errorf("%w: token %q or its password is wrong", ErrUnauthorized, name)
	case !(ok1 || ok2):
		return nil, nil, fmt.Errorf("%w: the password of token %q has expired: generate a new one", ErrUnauthorized, r.Spec.Name)
	case r.Spec.Status == acrapi.TokenStatusDisabled:
		return nil, nil, fmt.Errorf("%w: token %q is disabled: enable it first (token update --status enabled)", ErrTokenDisabled, r.Spec.Name)
	case sm == nil:
		return nil, nil, fmt.Errorf("%w: the scope map of token %q is missing", ErrUnauthorized, r.Spec.Name)
	}
	return sm.Actions, validUntil(ok1, p1.wire(), p2.wire()), nil
}

// checkPassword compares password with p's hash (or a dummy hash when p is nil, for the same
// cost); it reports whether it matches and is valid, or matches but has expired.
func checkPassword(p *storedPassword, dummy []byte, password string, now time.Time) (ok, expired bool) {
	return checkHash(p.wire(), dummy, password, now)
}

// validUntil is the expiry of the password that matched: the first if ok1, else the second.
func validUntil(ok1 bool, p1, p2 *acrapi.PasswordHash) *time.Time {
	if ok1 {
		return p1.Expiry
	}
	return p2.Expiry
}

// checkHash is checkPassword for a password hash in its wire form.
func checkHash(p *acrapi.PasswordHash, dummy []byte, password string, now time.Time) (ok, expired bool) {
	hash := dummy
	if p != nil && len(p.Hash) > 0 {
		hash = p.Hash
	}
	match := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil && p != nil
	if !match {
		return false, false
	}
	if p.Expiry != nil && !now.Before(*p.Expiry) {
		return false, true
	}
	return true, false
}

// Allowed reports whether actions grant action on repository repo.
func Allowed(actions []acrapi.RepositoryActions, repo, action string) bool {
	for _, ra := range actions {
		if repopattern.Match(ra.Repository, repo) && slices.Contains(ra.Actions, action) {
			return true
		}
	}
	return false
}
