package controlplane

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// A connected registry keeps a replica of the definitions below it, as its parent sends them,
// to serve its own children: it authenticates their sync tokens, records their activation and
// status, and relays those up. It also keeps the client tokens attached to it and to the
// registries below it, so that it enforces them while its parent is unreachable.

// bucketReplicaTokens holds the client tokens a parent sent down, by name.
var bucketReplicaTokens = []byte("replicaClientTokens")

// TokenHashes returns the sync tokens of the named registries, for their ancestor's replica.
func (s *Store) TokenHashes(names []string) ([]acrapi.SyncTokenHashes, error) {
	var out []acrapi.SyncTokenHashes
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, n := range names {
			r, err := get(tx, n)
			if err != nil {
				return err
			}
			out = append(out, acrapi.SyncTokenHashes{Registry: r.Spec.Name, Name: r.Token.Name, Hash1: r.Token.Hash1, Hash2: r.Token.Hash2})
		}
		return nil
	})
	return out, err
}

// ClientTokens returns the client tokens attached to the named registries, for the first of
// them to enforce and pass on to the others below it. On the root they come from its tokens and
// scope maps; on a connected registry from the replica its parent sent.
func (s *Store) ClientTokens(names []string) ([]acrapi.ClientTokenHashes, error) {
	var out []acrapi.ClientTokenHashes
	err := s.db.View(func(tx *bolt.Tx) error {
		byName := map[string]int{}
		for _, n := range names {
			r, err := get(tx, n)
			if err != nil {
				return err
			}
			for _, tn := range r.Spec.ClientTokens {
				i, seen := byName[key(tn)]
				if !seen {
					t, ok, err := clientToken(tx, tn)
					if err != nil {
						return err
					}
					if !ok {
						continue // removed since; the definition is updated with it
					}
					t.Registries = nil
					i = len(out)
					byName[key(tn)] = i
					out = append(out, t)
				}
				out[i].Registries = append(out[i].Registries, r.Spec.Name)
			}
		}
		return nil
	})
	return out, err
}

// clientToken finds a token among the root's own (resolving its scope map) or in the replica.
func clientToken(tx *bolt.Tx, name string) (acrapi.ClientTokenHashes, bool, error) {
	if tr, err := getJSON[tokenRecord](tx, bucketTokens, "token", name); err == nil {
		t := acrapi.ClientTokenHashes{Name: tr.Spec.Name, Status: tr.Spec.Status, Password1: tr.Password1.wire(), Password2: tr.Password2.wire()}
		sm, err := getJSON[acrapi.ScopeMap](tx, bucketScopeMaps, "scope map", tr.Spec.ScopeMap)
		if err != nil {
			return t, false, err
		}
		t.Actions = sm.Actions
		return t, true, nil
	}
	t, err := getJSON[acrapi.ClientTokenHashes](tx, bucketReplicaTokens, "client token", name)
	if err != nil {
		return acrapi.ClientTokenHashes{}, false, nil
	}
	return *t, true, nil
}

func (p *storedPassword) wire() *acrapi.PasswordHash {
	if p == nil {
		return nil
	}
	return &acrapi.PasswordHash{Hash: p.Hash, Expiry: p.Expiry}
}

// ApplyReplica makes the store hold exactly the definitions below this node and the client
// tokens of this node and below, as its parent sent them, keeping what is known locally of each
// registry: activation and the latest status. A replica identical to the last one applied
// changes nothing (and keeps cached authentications valid).
func (s *Store) ApplyReplica(cfg acrapi.ChildConfig) error {
	below, tokens, clients := cfg.Descendants, cfg.SyncTokens, cfg.ClientTokens
	raw, err := json.Marshal([]any{cfg.Registry.ConnectedRegistrySpec, below, tokens, clients})
	if err != nil {
		return err
	}
	sum := sha256.Sum256(raw)
	if last := s.replicaSum.Load(); last != nil && *last == sum {
		return nil
	}
	for _, t := range clients {
		if err := validateReplicaToken(t); err != nil {
			return err
		}
	}
	byRegistry := map[string]acrapi.SyncTokenHashes{}
	for _, t := range tokens {
		byRegistry[key(t.Registry)] = t
	}
	err = s.updateAccess(func(tx *bolt.Tx) error {
		all, err := loadAll(tx)
		if err != nil {
			return err
		}
		keep := map[string]bool{}
		for _, d := range below {
			if err := validateSpec(d.ConnectedRegistrySpec); err != nil {
				return fmt.Errorf("definition %s from the parent: %w", d.Name, err)
			}
			r, ok := all[key(d.Name)]
			if !ok {
				r = &record{CreatedAt: d.CreatedAt}
			}
			r.Spec, r.UpdatedAt = d.ConnectedRegistrySpec, d.UpdatedAt
			if t, ok := byRegistry[key(d.Name)]; ok {
				r.Token = syncToken{Name: t.Name, Hash1: t.Hash1, Hash2: t.Hash2}
			}
			keep[key(d.Name)] = true
			if err := put(tx, r); err != nil {
				return err
			}
		}
		for k := range all {
			if !keep[k] {
				if err := tx.Bucket(bucketRegistries).Delete([]byte(k)); err != nil {
					return err
				}
			}
		}
		self, err := json.Marshal(cfg.Registry.ConnectedRegistrySpec)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketSettings).Put(keySelf, self); err != nil {
			return err
		}
		// Client tokens: exactly those sent, so a removed or deleted token stops working here.
		if err := tx.DeleteBucket(bucketReplicaTokens); err != nil {
			return err
		}
		b, err := tx.CreateBucket(bucketReplicaTokens)
		if err != nil {
			return err
		}
		for _, t := range clients {
			v, err := json.Marshal(t)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(key(t.Name)), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.replicaSum.Store(&sum)
	}
	return err
}

// validateReplicaToken checks a client token from the parent before it is trusted.
func validateReplicaToken(t acrapi.ClientTokenHashes) error {
	if err := validateName("client token", t.Name); err != nil {
		return fmt.Errorf("client token from the parent: %w", err)
	}
	if _, err := normalizeStatus(t.Status); err != nil {
		return fmt.Errorf("client token %s from the parent: %w", t.Name, err)
	}
	if len(t.Registries) == 0 {
		return fmt.Errorf("client token %s from the parent: %w", t.Name, invalid("registries", "are empty: a client token is attached to a connected registry"))
	}
	if len(t.Actions) > 0 {
		if err := validateScopeMap(acrapi.ScopeMapSpec{Name: "replica", Actions: t.Actions}); err != nil {
			return fmt.Errorf("client token %s from the parent: %w", t.Name, err)
		}
	}
	return nil
}

// AuthenticateClientToken checks the credentials of a client token the parent sent down, on
// the connected registry named registry: the token must be attached to it. Both passwords are
// compared whatever the outcome, and an unknown token costs a comparison too.
func (s *Store) AuthenticateClientToken(name, password, registry string) ([]acrapi.RepositoryActions, *time.Time, error) {
	var t *acrapi.ClientTokenHashes
	_ = s.db.View(func(tx *bolt.Tx) error {
		var err error
		if t, err = getJSON[acrapi.ClientTokenHashes](tx, bucketReplicaTokens, "client token", name); err != nil {
			t = nil
		}
		return nil
	})
	var p1, p2 *acrapi.PasswordHash
	if t != nil {
		p1, p2 = t.Password1, t.Password2
	}
	now, dummy := s.now(), s.dummyHash()
	ok1, expired1 := checkHash(p1, dummy, password, now)
	ok2, expired2 := checkHash(p2, dummy, password, now)
	attached := t != nil && slices.ContainsFunc(t.Registries, func(r string) bool { return strings.EqualFold(r, registry) })
	switch {
	case !attached || !(ok1 || ok2 || expired1 || expired2):
		return nil, nil, fmt.Errorf("%w: token %q or its password is wrong", ErrUnauthorized, name)
	case !(ok1 || ok2):
		return nil, nil, fmt.Errorf("%w: the password of token %q has expired: generate a new one", ErrUnauthorized, t.Name)
	case t.Status == acrapi.TokenStatusDisabled:
		return nil, nil, fmt.Errorf("%w: token %q is disabled", ErrTokenDisabled, t.Name)
	}
	return t.Actions, validUntil(ok1, t.Password1, t.Password2), nil
}

// keySelf holds this connected registry's own definition, as its parent last sent it.
var keySelf = []byte("self")

// Self returns this connected registry's own definition as its parent last sent it; false
// before the first configuration arrived (and on the root).
func (s *Store) Self() (acrapi.ConnectedRegistrySpec, bool) {
	var spec acrapi.ConnectedRegistrySpec
	found := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketSettings).Get(keySelf); v != nil {
			found = json.Unmarshal(v, &spec) == nil
		}
		return nil
	})
	return spec, found
}

// IsSyncToken reports whether name is the sync token of a registry this store knows.
func (s *Store) IsSyncToken(name string) bool {
	found := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRegistries).ForEach(func(_, v []byte) error {
			var r record
			if json.Unmarshal(v, &r) == nil && strings.EqualFold(r.Token.Name, name) {
				found = true
			}
			return nil
		})
	})
	return found
}

// Statuses returns the latest status of every registry that reported one, as last seen, for
// relaying up.
func (s *Store) Statuses() (map[string]acrapi.NodeStatus, error) {
	out := map[string]acrapi.NodeStatus{}
	err := s.db.View(func(tx *bolt.Tx) error {
		all, err := loadAll(tx)
		if err != nil {
			return err
		}
		for _, r := range all {
			if r.Status != nil && r.LastSeen != nil && r.Active {
				st := *r.Status
				st.LastActivityTime = r.LastSeen.UTC()
				out[r.Spec.Name] = st
			}
		}
		return nil
	})
	return out, err
}
