package acrapi

import "time"

// Actions a scope map can grant on a repository, as in Azure Container Registry.
const (
	ActionContentRead   = "content/read"
	ActionContentWrite  = "content/write"
	ActionContentDelete = "content/delete"
	ActionMetadataRead  = "metadata/read"
	ActionMetadataWrite = "metadata/write"
	TokenStatusEnabled  = "enabled"
	TokenStatusDisabled = "disabled"
	TokenPassword1      = "password1"
	TokenPassword2      = "password2"
)

// ScopeMapActions are the actions a scope map may grant, in their canonical order.
var ScopeMapActions = []string{ActionContentRead, ActionContentWrite, ActionContentDelete, ActionMetadataRead, ActionMetadataWrite}

// RepositoryActions grants actions on the repositories that Repository matches: an exact name,
// ns/* (one level below ns), ns/** (any depth below ns) or * (every repository).
type RepositoryActions struct {
	Repository string   `json:"repository"`
	Actions    []string `json:"actions"`
}

// ScopeMapSpec is what an operator defines for a scope map.
type ScopeMapSpec struct {
	Name        string              `json:"name"`
	Description string              `json:"description,omitempty"`
	Actions     []RepositoryActions `json:"actions"`
}

// ScopeMap is a scope map as stored.
type ScopeMap struct {
	ScopeMapSpec
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// ScopeMapUpdate changes a scope map; nil fields are left as they are. Actions, when not nil,
// replaces every action; AddActions and RemoveActions then apply to the result.
type ScopeMapUpdate struct {
	Description   *string             `json:"description,omitempty"`
	Actions       []RepositoryActions `json:"actions,omitempty"`
	AddActions    []RepositoryActions `json:"addActions,omitempty"`
	RemoveActions []RepositoryActions `json:"removeActions,omitempty"`
}

// TokenSpec is what an operator defines for a token.
type TokenSpec struct {
	Name     string `json:"name"`
	ScopeMap string `json:"scopeMap"`
	// Status is enabled (the default) or disabled.
	Status string `json:"status,omitempty"`
}

// TokenCreate is the body of a token creation: unless NoPasswords, password1 is generated and
// shown in the answer, the only time it is.
type TokenCreate struct {
	TokenSpec
	NoPasswords bool `json:"noPasswords,omitempty"`
}

// TokenPassword is one of a token's two passwords. Value is only ever set in the answer that
// generated it; the token keeps a hash.
type TokenPassword struct {
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"creationTime"`
	Expiry    *time.Time `json:"expiry,omitempty"`
	Value     string     `json:"value,omitempty"`
}

// Token is a token as stored, with its passwords' metadata.
type Token struct {
	TokenSpec
	Passwords []TokenPassword `json:"passwords,omitempty"`
	CreatedAt time.Time       `json:"createdAt"`
	UpdatedAt time.Time       `json:"updatedAt"`
}

// TokenUpdate changes a token; nil fields are left as they are.
type TokenUpdate struct {
	ScopeMap *string `json:"scopeMap,omitempty"`
	Status   *string `json:"status,omitempty"`
}

// TokenCredentialsRequest generates password 1 or 2 of a token, valid until Expiry if set.
type TokenCredentialsRequest struct {
	Password int        `json:"password"`
	Expiry   *time.Time `json:"expiry,omitempty"`
}

// TokenCredentials answers a password generation: the token's name (the user name) and the new
// password, shown this once.
type TokenCredentials struct {
	Username  string          `json:"username"`
	Passwords []TokenPassword `json:"passwords"`
}

// GatewayActions are what a sync token may do on its own connected registry's entry at the
// parent, besides its repository actions: read its configuration and write its status
// (config), read and write its messages (events and the ReadWrite push-up).
var GatewayActions = []string{"config/read", "config/write", "message/read", "message/write"}

// SyncTokenScope is what a connected registry's sync token may do on its parent's repositories:
// read the repositories it syncs, and in ReadWrite mode push to them.
func SyncTokenScope(spec ConnectedRegistrySpec) []RepositoryActions {
	actions := []string{ActionContentRead, ActionMetadataRead}
	if spec.Mode == ModeReadWrite {
		actions = []string{ActionContentRead, ActionContentWrite, ActionMetadataRead, ActionMetadataWrite}
	}
	out := make([]RepositoryActions, 0, len(spec.Repositories))
	for _, r := range spec.Repositories {
		out = append(out, RepositoryActions{Repository: r, Actions: actions})
	}
	return out
}

// ClientTokenHashes is a client token as a parent sends it down: enough for the connected
// registries it is attached to to authenticate and authorise it while the parent is away.
type ClientTokenHashes struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	// Actions are its scope map's, resolved at the root.
	Actions []RepositoryActions `json:"actions"`
	// Registries are the connected registries (this node or below it) it is attached to.
	Registries []string      `json:"registries"`
	Password1  *PasswordHash `json:"password1,omitempty"`
	Password2  *PasswordHash `json:"password2,omitempty"`
}

// PasswordHash is one password of a token as stored: its bcrypt hash and expiry.
type PasswordHash struct {
	Hash   []byte     `json:"hash"`
	Expiry *time.Time `json:"expiry,omitempty"`
}
