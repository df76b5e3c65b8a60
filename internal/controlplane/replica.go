package controlplane

import (
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// A connected registry keeps a replica of the definitions below it, as its parent sends them,
// to serve its own children: it authenticates their sync tokens, records their activation and
// status, and relays those up.

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

// ApplyReplica makes the store hold exactly the definitions below this node, as its parent sent
// them, keeping what is known locally of each: activation and the latest status.
func (s *Store) ApplyReplica(below []acrapi.ConnectedRegistry, tokens []acrapi.SyncTokenHashes) error {
	byRegistry := map[string]acrapi.SyncTokenHashes{}
	for _, t := range tokens {
		byRegistry[key(t.Registry)] = t
	}
	return s.db.Update(func(tx *bolt.Tx) error {
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
		return nil
	})
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
