package acr

import (
	"crypto/subtle"
	"fmt"
	"strings"
	"time"

	"github.com/outpost-registry/outpost/internal/auth"
	"github.com/outpost-registry/outpost/internal/controlplane"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Verifier checks credentials against a node's control plane: the root's admin and tokens, or
// a connected registry's own sync token and the client tokens its parent sent it; on both,
// the sync tokens of the connected registries directly below.
type Verifier struct {
	cp *controlplane.Store
	// node is this connected registry's name; empty on a node without an Outpost parent.
	node string
	// selfUser and selfPassword are this connected registry's own sync token, from its
	// connection string.
	selfUser, selfPassword string
}

// NewRootVerifier verifies credentials on a node without an Outpost parent: admin, tokens, and
// the sync tokens of its children.
func NewRootVerifier(cp *controlplane.Store) *Verifier { return &Verifier{cp: cp} }

// NewConnectedVerifier verifies credentials on connected registry cs.ConnectedRegistryName: its
// own sync token, the client tokens attached to it, and its children's sync tokens.
func NewConnectedVerifier(cp *controlplane.Store, cs acrapi.ConnectionString) *Verifier {
	return &Verifier{cp: cp, node: cs.ConnectedRegistryName, selfUser: cs.SyncTokenName, selfPassword: cs.SyncTokenPassword}
}

// Generation changes whenever the control plane's credentials or definitions change.
func (v *Verifier) Generation() uint64 { return v.cp.Generation() }

// Verify implements auth.Verifier.
func (v *Verifier) Verify(user, password string) (*auth.Principal, error) {
	switch {
	case v.node == "" && user == controlplane.AdminUser:
		if err := v.cp.AuthenticateAdmin(user, password); err != nil {
			return nil, err
		}
		return &auth.Principal{Kind: auth.KindAdmin, Name: user, All: true}, nil
	case v.node != "" && strings.EqualFold(user, v.selfUser):
		if subtle.ConstantTimeCompare([]byte(password), []byte(v.selfPassword)) != 1 {
			return nil, fmt.Errorf("%w: wrong password for sync token %q", controlplane.ErrUnauthorized, user)
		}
		return v.self()
	case v.cp.IsSyncToken(user):
		owner, err := v.cp.Authenticate(user, password)
		if err != nil {
			return nil, err
		}
		cr, err := v.cp.Get(owner)
		if err != nil {
			return nil, err
		}
		if !strings.EqualFold(cr.Parent, v.node) {
			return nil, fmt.Errorf("%w: sync token %q belongs to %s, which syncs from %s, not from this registry", controlplane.ErrUnauthorized, user, cr.Name, parentName(cr.Parent))
		}
		return &auth.Principal{Kind: auth.KindSyncToken, Name: cr.SyncTokenName, Registry: cr.Name, Grants: acrapi.SyncTokenScope(cr.ConnectedRegistrySpec)}, nil
	case v.node == "":
		grants, until, err := v.cp.AuthenticateTokenUntil(user, password)
		if err != nil {
			return nil, err
		}
		return tokenPrincipal(user, grants, until), nil
	default:
		grants, until, err := v.cp.AuthenticateClientToken(user, password, v.node)
		if err != nil {
			return nil, err
		}
		return tokenPrincipal(user, grants, until), nil
	}
}

// self is what this connected registry's own sync token may do here: read everything it holds,
// and, where its parent made it ReadWrite, push (the /v2 ReadOnly refusal applies otherwise).
func (v *Verifier) self() (*auth.Principal, error) {
	p := &auth.Principal{Kind: auth.KindSelf, Name: v.selfUser, Registry: v.node,
		Grants: []acrapi.RepositoryActions{{Repository: "*", Actions: []string{acrapi.ActionContentRead, acrapi.ActionMetadataRead}}}}
	// Pushes are limited to what the parent lets this registry push up.
	if cfg, ok := v.cp.Self(); ok && cfg.Mode == acrapi.ModeReadWrite {
		for _, r := range cfg.Repositories {
			p.Grants = append(p.Grants, acrapi.RepositoryActions{Repository: r, Actions: []string{acrapi.ActionContentWrite, acrapi.ActionContentDelete, acrapi.ActionMetadataWrite}})
		}
	}
	return p, nil
}

func tokenPrincipal(name string, grants []acrapi.RepositoryActions, until *time.Time) *auth.Principal {
	p := &auth.Principal{Kind: auth.KindToken, Name: name, Grants: grants}
	if until != nil {
		p.Expires = *until
	}
	return p
}

func parentName(p string) string {
	if p == "" {
		return "the root"
	}
	return p
}
