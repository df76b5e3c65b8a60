// Package controlplane holds the definitions of connected registries — the tree of sites below
// a root, their sync tokens and their reported status — in a durable embedded database.
package controlplane

import (
	"cmp"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-registry/outpost/internal/cronexpr"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

var bucketRegistries = []byte("connectedRegistries")

// record is a definition as stored.
type record struct {
	Spec        acrapi.ConnectedRegistrySpec `json:"spec"`
	Token       syncToken                    `json:"syncToken"`
	Active      bool                         `json:"active"`
	InstanceID  string                       `json:"instanceId,omitempty"`
	ActivatedAt *time.Time                   `json:"activatedAt,omitempty"`
	Status      *acrapi.NodeStatus           `json:"status,omitempty"`
	LastSeen    *time.Time                   `json:"lastSeen,omitempty"`
	CreatedAt   time.Time                    `json:"createdAt"`
	UpdatedAt   time.Time                    `json:"updatedAt"`
}

// syncToken is the credential a connected registry uses with its parent: two passwords, either
// valid, so one can be rotated while the other is in use. Only bcrypt hashes are kept.
type syncToken struct {
	Name  string `json:"name"`
	Hash1 []byte `json:"hash1,omitempty"`
	Hash2 []byte `json:"hash2,omitempty"`
}

// Store is the control plane's database.
type Store struct {
	db   *bolt.DB
	now  func() time.Time
	cost int // bcrypt cost; tests lower it

	dummyOnce sync.Once
	dummy     []byte // a hash at cost, compared against when a token has no password

	// generation counts changes that may change who is authenticated or what they may do;
	// callers that cache verified credentials compare it (Generation).
	generation atomic.Uint64
	// replicaSum is the checksum of the replica last applied, to skip identical ones.
	replicaSum atomic.Pointer[[32]byte]
}

// Generation changes whenever credentials, tokens, scope maps or definitions change: a cached
// authentication made at another generation must be redone.
func (s *Store) Generation() uint64 { return s.generation.Load() }

// updateAccess runs a write transaction that may change credentials or permissions, and moves
// the generation on once it is committed.
func (s *Store) updateAccess(fn func(tx *bolt.Tx) error) error {
	err := s.db.Update(fn)
	s.generation.Add(1) // also after a failure: a partial outcome must not stay cached
	return err
}

// Option configures Open.
type Option func(*Store)

// WithPasswordCost sets the bcrypt cost of new password hashes; tests lower it.
func WithPasswordCost(cost int) Option { return func(s *Store) { s.cost = cost } }

// Open opens (creating) the database at path. Only one process may hold it.
func Open(path string, opts ...Option) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening the control plane database %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRegistries, bucketScopeMaps, bucketTokens, bucketReplicaTokens, bucketSettings} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, now: time.Now, cost: bcrypt.DefaultCost}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func loadAll(tx *bolt.Tx) (map[string]*record, error) {
	all := map[string]*record{}
	err := tx.Bucket(bucketRegistries).ForEach(func(k, v []byte) error {
		var r record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("control plane record %s: %w", k, err)
		}
		all[string(k)] = &r
		return nil
	})
	return all, err
}

func put(tx *bolt.Tx, r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketRegistries).Put([]byte(key(r.Spec.Name)), b)
}

// Create adds a definition, with a sync token named <name>-sync-token and no password yet
// (get-settings generates one).
func (s *Store) Create(spec acrapi.ConnectedRegistrySpec) (acrapi.ConnectedRegistry, error) {
	normalize(&spec)
	if err := validateSpec(spec); err != nil {
		return acrapi.ConnectedRegistry{}, err
	}
	var out acrapi.ConnectedRegistry
	err := s.updateAccess(func(tx *bolt.Tx) error {
		all, err := loadAll(tx)
		if err != nil {
			return err
		}
		if existing, ok := all[key(spec.Name)]; ok {
			return fmt.Errorf("%w: connected registry %s", ErrExists, existing.Spec.Name)
		}
		if err := validateInTree(spec, all); err != nil {
			return err
		}
		if err := checkClientTokens(tx, spec.ClientTokens); err != nil {
			return err
		}
		now := s.now().UTC()
		r := &record{Spec: spec, Token: syncToken{Name: spec.Name + "-sync-token"}, CreatedAt: now, UpdatedAt: now}
		all[key(spec.Name)] = r
		out = s.view(r)
		return put(tx, r)
	})
	return out, err
}

// Get returns one definition.
func (s *Store) Get(name string) (acrapi.ConnectedRegistry, error) {
	var out acrapi.ConnectedRegistry
	err := s.db.View(func(tx *bolt.Tx) error {
		r, err := get(tx, name)
		if err != nil {
			return err
		}
		out = s.view(r)
		return nil
	})
	return out, err
}

func get(tx *bolt.Tx, name string) (*record, error) {
	v := tx.Bucket(bucketRegistries).Get([]byte(key(name)))
	if v == nil {
		return nil, fmt.Errorf("%w: connected registry %q", ErrNotFound, name)
	}
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// List returns every definition, parents before children, siblings by name.
func (s *Store) List() ([]acrapi.ConnectedRegistry, error) {
	var out []acrapi.ConnectedRegistry
	err := s.db.View(func(tx *bolt.Tx) error {
		all, err := loadAll(tx)
		if err != nil {
			return err
		}
		for _, r := range treeOrder(all, "") {
			out = append(out, s.view(r))
		}
		return nil
	})
	return out, err
}

// treeOrder lists the records below parent depth-first, siblings sorted by name.
func treeOrder(all map[string]*record, parent string) []*record {
	var children []*record
	for _, r := range all {
		if key(r.Spec.Parent) == key(parent) && key(r.Spec.Name) != key(parent) {
			children = append(children, r)
		}
	}
	sort.Slice(children, func(i, j int) bool { return key(children[i].Spec.Name) < key(children[j].Spec.Name) })
	var out []*record
	for _, c := range children {
		out = append(out, c)
		out = append(out, treeOrder(all, c.Spec.Name)...)
	}
	return out
}

// Descendants returns the definitions below name, depth-first.
func (s *Store) Descendants(name string) ([]acrapi.ConnectedRegistry, error) {
	var out []acrapi.ConnectedRegistry
	err := s.db.View(func(tx *bolt.Tx) error {
		all, err := loadAll(tx)
		if err != nil {
			return err
		}
		if _, ok := all[key(name)]; !ok {
			return fmt.Errorf("%w: connected registry %q", ErrNotFound, name)
		}
		for _, r := range treeOrder(all, name) {
			out = append(out, s.view(r))
		}
		return nil
	})
	return out, err
}

// Update applies u to a definition and checks the result against the tree.
func (s *Store) Update(name string, u acrapi.ConnectedRegistryUpdate) (acrapi.ConnectedRegistry, error) {
	var out acrapi.ConnectedRegistry
	err := s.updateAccess(func(tx *bolt.Tx) error {
		all, err := loadAll(tx)
		if err != nil {
			return err
		}
		r, ok := all[key(name)]
		if !ok {
			return fmt.Errorf("%w: connected registry %q", ErrNotFound, name)
		}
		spec := r.Spec
		spec.Repositories = slices.Clone(spec.Repositories)
		spec.ClientTokens = slices.Clone(spec.ClientTokens)
		spec.Notifications = slices.Clone(spec.Notifications)
		if u.SyncSchedule != nil {
			spec.SyncSchedule = *u.SyncSchedule
		}
		if u.SyncWindow != nil {
			spec.SyncWindow = *u.SyncWindow
		}
		if u.SyncMessageTTL != nil {
			spec.SyncMessageTTL = *u.SyncMessageTTL
		}
		if u.LogLevel != nil {
			spec.LogLevel = *u.LogLevel
		}
		if u.DeltaSync != nil {
			spec.DeltaSync = *u.DeltaSync
		}
		spec.Repositories = addRemove(spec.Repositories, u.AddRepositories, u.RemoveRepositories)
		spec.ClientTokens = addRemove(spec.ClientTokens, u.AddClientTokens, u.RemoveClientTokens)
		spec.Notifications = addRemove(spec.Notifications, u.AddNotifications, u.RemoveNotifications)
		normalize(&spec)
		if err := validateSpec(spec); err != nil {
			return err
		}
		if err := validateInTree(spec, all); err != nil {
			return err
		}
		// Only the tokens added now: one named before tokens existed stays until removed.
		if err := checkClientTokens(tx, dedupe(u.AddClientTokens)); err != nil {
			return err
		}
		r.Spec = spec
		r.UpdatedAt = s.now().UTC()
		out = s.view(r)
		return put(tx, r)
	})
	return out, err
}

func addRemove(list, add, remove []string) []string {
	list = append(list, add...)
	return slices.DeleteFunc(list, func(v string) bool { return slices.Contains(remove, v) })
}

// Delete removes a definition; with cascade, its descendants too, else a definition with
// children is refused. It returns the names deleted.
func (s *Store) Delete(name string, cascade bool) ([]string, error) {
	var deleted []string
	err := s.updateAccess(func(tx *bolt.Tx) error {
		all, err := loadAll(tx)
		if err != nil {
			return err
		}
		r, ok := all[key(name)]
		if !ok {
			return fmt.Errorf("%w: connected registry %q", ErrNotFound, name)
		}
		below := treeOrder(all, r.Spec.Name)
		if len(below) > 0 && !cascade {
			var names []string
			for _, c := range below {
				names = append(names, c.Spec.Name)
			}
			return fmt.Errorf("%w: %s has %s below it: delete them first, or delete with --cascade", ErrHasChildren, r.Spec.Name, joinNames(names))
		}
		for _, victim := range append(below, r) {
			if err := tx.Bucket(bucketRegistries).Delete([]byte(key(victim.Spec.Name))); err != nil {
				return err
			}
			deleted = append(deleted, victim.Spec.Name)
		}
		return nil
	})
	return deleted, err
}

func joinNames(n []string) string {
	if len(n) > 5 {
		return fmt.Sprintf("%s and %d more", joinNames(n[:5]), len(n)-5)
	}
	out := ""
	for i, v := range n {
		if i > 0 {
			out += ", "
		}
		out += v
	}
	return out
}

// GeneratePassword sets a new random password in slot 1 or 2 of name's sync token and returns
// it; only its hash is stored.
func (s *Store) GeneratePassword(name string, slot int) (tokenName, password string, err error) {
	if slot != 1 && slot != 2 {
		return "", "", fmt.Errorf("%w: password slot %d: expected 1 or 2", ErrInvalid, slot)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", "", err
	}
	password = base64.RawURLEncoding.EncodeToString(raw)
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	if err != nil {
		return "", "", err
	}
	err = s.updateAccess(func(tx *bolt.Tx) error {
		r, err := get(tx, name)
		if err != nil {
			return err
		}
		if slot == 1 {
			r.Token.Hash1 = hash
		} else {
			r.Token.Hash2 = hash
		}
		r.UpdatedAt = s.now().UTC()
		tokenName = r.Token.Name
		return put(tx, r)
	})
	return tokenName, password, err
}

// Authenticate checks a sync token's credentials and returns the connected registry it
// belongs to. Both comparisons run whatever the outcome of the first, in constant time.
func (s *Store) Authenticate(tokenName, password string) (string, error) {
	var owner string
	var h1, h2 []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRegistries).ForEach(func(_, v []byte) error {
			var r record
			if json.Unmarshal(v, &r) == nil && subtle.ConstantTimeCompare([]byte(r.Token.Name), []byte(tokenName)) == 1 {
				owner, h1, h2 = r.Spec.Name, r.Token.Hash1, r.Token.Hash2
			}
			return nil
		})
	})
	if err != nil {
		return "", err
	}
	ok1 := len(h1) > 0 && bcrypt.CompareHashAndPassword(h1, []byte(password)) == nil
	ok2 := len(h2) > 0 && bcrypt.CompareHashAndPassword(h2, []byte(password)) == nil
	if owner == "" || !(ok1 || ok2) {
		return "", fmt.Errorf("%w: sync token %q or its password is wrong", ErrUnauthorized, tokenName)
	}
	return owner, nil
}

// Activate marks name active for instance. Another instance is refused until Deactivate.
func (s *Store) Activate(name, instance string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		r, err := get(tx, name)
		if err != nil {
			return err
		}
		// An empty instance is an activation known only from statuses relayed from below.
		if r.Active && r.InstanceID != "" && r.InstanceID != instance {
			return fmt.Errorf("%w: %s is active on another instance since %s: deactivate it first", ErrAlreadyActivated, r.Spec.Name, r.ActivatedAt.Format(time.RFC3339))
		}
		now := s.now().UTC()
		if !r.Active {
			r.ActivatedAt = &now
		}
		r.Active, r.InstanceID, r.LastSeen = true, instance, &now
		return put(tx, r)
	})
}

// Deactivate lets another instance activate name.
func (s *Store) Deactivate(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		r, err := get(tx, name)
		if err != nil {
			return err
		}
		r.Active, r.InstanceID, r.ActivatedAt = false, "", nil
		r.UpdatedAt = s.now().UTC()
		return put(tx, r)
	})
}

// ReportStatus records what name's node reports of itself, heard directly now.
func (s *Store) ReportStatus(name string, st acrapi.NodeStatus) error {
	return s.reportStatus(name, st, s.now().UTC(), false)
}

// RelayStatus records a status that a parent relays for a node below it: the node was last
// seen when that status says, not now, so a silent node still turns Offline.
func (s *Store) RelayStatus(name string, st acrapi.NodeStatus) error {
	seen := st.LastActivityTime.UTC()
	if now := s.now().UTC(); seen.After(now) {
		seen = now
	}
	return s.reportStatus(name, st, seen, true)
}

func (s *Store) reportStatus(name string, st acrapi.NodeStatus, seen time.Time, relayed bool) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		r, err := get(tx, name)
		if err != nil {
			return err
		}
		if r.LastSeen != nil && seen.Before(*r.LastSeen) {
			return nil // older than what is known
		}
		if !r.Active && relayed {
			// A status relayed from below means the registry activated at its own parent. (A
			// registry reporting directly activates first; a report that races ahead of its
			// activation must not claim the activation for no instance.)
			r.Active, r.ActivatedAt = true, &seen
		}
		r.Status, r.LastSeen = &st, &seen
		return put(tx, r)
	})
}

// view is a record as the API shows it, with its connection state derived now: Offline when
// inactive, or silent for longer than twice its schedule's period (plus its window).
func (s *Store) view(r *record) acrapi.ConnectedRegistry {
	v := acrapi.ConnectedRegistry{
		ConnectedRegistrySpec: r.Spec,
		SyncTokenName:         r.Token.Name,
		SyncTokenScope:        acrapi.SyncTokenScope(r.Spec),
		ActivationStatus:      acrapi.ActivationInactive,
		ConnectionState:       acrapi.StateOffline,
		LastActivityTime:      r.LastSeen,
		Status:                r.Status,
		CreatedAt:             r.CreatedAt,
		UpdatedAt:             r.UpdatedAt,
	}
	if r.Status != nil {
		v.LastSyncTime = r.Status.LastSyncTime
	}
	if !r.Active {
		return v
	}
	v.ActivationStatus = acrapi.ActivationActive
	if r.LastSeen == nil || s.now().Sub(*r.LastSeen) > silenceLimit(r.Spec, *r.LastSeen) {
		return v
	}
	v.ConnectionState = acrapi.StateOnline
	if r.Status != nil && r.Status.ConnectionState != "" {
		v.ConnectionState = r.Status.ConnectionState
	}
	return v
}

// silenceLimit is how long a node may stay silent before it counts as Offline: twice the gap
// between its syncs (the schedule's period, the window's closed time included).
func silenceLimit(spec acrapi.ConnectedRegistrySpec, since time.Time) time.Duration {
	period := time.Minute
	if sched, err := cronexpr.Parse(spec.SyncSchedule); err == nil {
		period = cmp.Or(cronexpr.Period(sched, since), period) // 1m only if it never fires again
	}
	return 2 * period
}
