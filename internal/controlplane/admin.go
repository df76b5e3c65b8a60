package controlplane

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
)

// AdminUser is the root's administrator, with every right.
const AdminUser = "admin"

var (
	bucketSettings = []byte("settings")
	keyAdminHash   = []byte("adminPasswordHash")
)

// EnsureAdmin sets the admin password at first start: password if not empty, else a generated
// one, which it returns (the only time it is ever shown). Later starts keep the stored hash and
// return "".
func (s *Store) EnsureAdmin(password string) (generated string, err error) {
	err = s.updateAccess(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketSettings)
		if err != nil {
			return err
		}
		if b.Get(keyAdminHash) != nil {
			return nil
		}
		if password == "" {
			raw := make([]byte, 24)
			if _, err := rand.Read(raw); err != nil {
				return err
			}
			password = base64.RawURLEncoding.EncodeToString(raw)
			generated = password
		}
		if len(password) < 12 {
			return fmt.Errorf("%w: the admin password must be at least 12 characters", ErrInvalid)
		}
		hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
		if err != nil {
			return err
		}
		return b.Put(keyAdminHash, hash)
	})
	return generated, err
}

// AuthenticateAdmin checks the admin's credentials.
func (s *Store) AuthenticateAdmin(user, password string) error {
	var hash []byte
	_ = s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketSettings); b != nil {
			hash = append([]byte(nil), b.Get(keyAdminHash)...)
		}
		return nil
	})
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(AdminUser)) == 1
	passOK := len(hash) > 0 && bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	if !userOK || !passOK {
		return fmt.Errorf("%w: wrong admin user or password", ErrUnauthorized)
	}
	return nil
}
