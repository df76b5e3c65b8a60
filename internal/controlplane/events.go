package controlplane

import (
	"encoding/binary"
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-registry/outpost/internal/duration"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// The event log records what changed in the node's repositories — tags pushed, moved, removed,
// manifests deleted — numbered in order. A child reads it from its cursor instead of listing
// every tag of every repository; events older than the longest message TTL are dropped, and a
// child whose cursor is older than the oldest event left reconciles in full.

var bucketEvents = []byte("events")

// maxEvents bounds the log whatever the TTL.
const maxEvents = 200_000

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// AppendEvent numbers e and appends it to the log.
func (s *Store) AppendEvent(e acrapi.Event) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketEvents)
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		e.Seq = seq
		if e.Time.IsZero() {
			e.Time = s.now().UTC()
		}
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := b.Put(seqKey(seq), v); err != nil {
			return err
		}
		// Keep the log bounded: drop the oldest beyond maxEvents (sequence numbers are dense
		// from the oldest kept to the newest).
		if k, _ := b.Cursor().First(); k != nil && seq-binary.BigEndian.Uint64(k) >= maxEvents {
			return b.Delete(k)
		}
		return nil
	})
}

// Events returns up to limit events after cursor that match keep, and the log's bounds: the
// latest sequence number, and whether events after cursor were dropped (the reader must then
// reconcile in full).
func (s *Store) Events(cursor uint64, limit int, keep func(repo string) bool) (page acrapi.EventPage, err error) {
	page.Events = []acrapi.Event{}
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		if b == nil {
			return nil
		}
		page.Latest = b.Sequence()
		c := b.Cursor()
		first, _ := c.First()
		if first != nil && cursor+1 < binary.BigEndian.Uint64(first) {
			page.Reset = true // what came right after cursor is gone
		}
		if cursor > page.Latest {
			page.Reset = true // a cursor from another log (the database was replaced)
			return nil
		}
		for k, v := c.Seek(seqKey(cursor + 1)); k != nil; k, v = c.Next() {
			var e acrapi.Event
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			page.Next = e.Seq
			if keep == nil || keep(e.Repository) {
				page.Events = append(page.Events, e)
				if len(page.Events) >= limit {
					page.More = e.Seq < page.Latest
					return nil
				}
			}
		}
		page.Next = page.Latest
		return nil
	})
	return page, err
}

// PruneEvents drops events older than ttl.
func (s *Store) PruneEvents(ttl time.Duration) (int, error) {
	cutoff := s.now().Add(-ttl)
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		if b == nil {
			return nil
		}
		var old [][]byte
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var e acrapi.Event
			if json.Unmarshal(v, &e) == nil && e.Time.After(cutoff) {
				break
			}
			old = append(old, append([]byte(nil), k...))
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	return n, err
}

// LongestMessageTTL is the longest message TTL among the definitions, or the default (P2D)
// when there are none: events older than that no reader needs.
func (s *Store) LongestMessageTTL() (time.Duration, error) {
	longest := 2 * 24 * time.Hour
	err := s.db.View(func(tx *bolt.Tx) error {
		all, err := loadAll(tx)
		if err != nil {
			return err
		}
		for _, r := range all {
			if d, err := duration.Parse(r.Spec.SyncMessageTTL); err == nil && d.Std() > longest {
				longest = d.Std()
			}
		}
		return nil
	})
	return longest, err
}
