package acrapi

import "time"

// Modes of a connected registry.
const (
	ModeReadOnly  = "ReadOnly"
	ModeReadWrite = "ReadWrite"
)

// Connection states of a connected registry, as its parent sees it.
const (
	StateOnline    = "Online"
	StateOffline   = "Offline"
	StateSyncing   = "Syncing"
	StateUnhealthy = "Unhealthy"
)

// Activation states.
const (
	ActivationActive   = "Active"
	ActivationInactive = "Inactive"
)

// LogLevels a connected registry can be given.
var LogLevels = []string{"Debug", "Information", "Warning", "Error", "None"}

// ConnectedRegistrySpec is what an operator defines for a connected registry. Durations are
// ISO 8601 (PT1H, P2D); the schedule is a 5-field cron expression in UTC.
type ConnectedRegistrySpec struct {
	Name string `json:"name"`
	// Parent is the name of the parent connected registry; empty for a child of the root.
	Parent         string   `json:"parent,omitempty"`
	Mode           string   `json:"mode"`
	Repositories   []string `json:"repositories"`
	SyncSchedule   string   `json:"syncSchedule"`
	SyncWindow     string   `json:"syncWindow,omitempty"`
	SyncMessageTTL string   `json:"syncMessageTtl"`
	LogLevel       string   `json:"logLevel"`
	Notifications  []string `json:"notifications,omitempty"`
	ClientTokens   []string `json:"clientTokens,omitempty"`
	// DeltaSync is Enabled (the default) or Disabled: whether layers may reach this registry as
	// deltas against layers it holds, rather than whole.
	DeltaSync string `json:"deltaSync,omitempty"`
}

// ConnectedRegistry is a definition with its state.
type ConnectedRegistry struct {
	ConnectedRegistrySpec
	SyncTokenName string `json:"syncTokenName"`
	// SyncTokenScope is what the sync token may do on the parent's repositories; it may also
	// do GatewayActions on this registry's own entry.
	SyncTokenScope   []RepositoryActions `json:"syncTokenScope,omitempty"`
	ActivationStatus string              `json:"activationStatus"`
	ConnectionState  string              `json:"connectionState"`
	LastSyncTime     *time.Time          `json:"lastSyncTime,omitempty"`
	LastActivityTime *time.Time          `json:"lastActivityTime,omitempty"`
	Status           *NodeStatus         `json:"status,omitempty"`
	CreatedAt        time.Time           `json:"createdAt"`
	UpdatedAt        time.Time           `json:"updatedAt"`
}

// ConnectedRegistryUpdate changes a definition; nil fields are left as they are.
type ConnectedRegistryUpdate struct {
	SyncSchedule        *string  `json:"syncSchedule,omitempty"`
	SyncWindow          *string  `json:"syncWindow,omitempty"`
	SyncMessageTTL      *string  `json:"syncMessageTtl,omitempty"`
	LogLevel            *string  `json:"logLevel,omitempty"`
	DeltaSync           *string  `json:"deltaSync,omitempty"`
	AddRepositories     []string `json:"addRepositories,omitempty"`
	RemoveRepositories  []string `json:"removeRepositories,omitempty"`
	AddClientTokens     []string `json:"addClientTokens,omitempty"`
	RemoveClientTokens  []string `json:"removeClientTokens,omitempty"`
	AddNotifications    []string `json:"addNotifications,omitempty"`
	RemoveNotifications []string `json:"removeNotifications,omitempty"`
}

// StatusDetail is one condition a node reports.
type StatusDetail struct {
	Type          string    `json:"type"`
	Code          string    `json:"code"`
	Description   string    `json:"description"`
	Timestamp     time.Time `json:"timestamp"`
	CorrelationID string    `json:"correlationId,omitempty"`
}

// NodeStatus is what a node reports to its parent after every sync.
type NodeStatus struct {
	ConnectionState  string         `json:"connectionState"`
	Version          string         `json:"version"`
	LastSyncTime     *time.Time     `json:"lastSyncTime,omitempty"`
	LastActivityTime time.Time      `json:"lastActivityTime"`
	StorageUsedBytes int64          `json:"storageUsedBytes"`
	ImagesHeld       int            `json:"imagesHeld"`
	StatusDetails    []StatusDetail `json:"statusDetails,omitempty"`
}

// Settings is what `connected-registry get-settings` prints: everything a node needs to
// activate. The password appears only in the answer that generated it.
type Settings struct {
	ConnectionString string `json:"ACR_REGISTRY_CONNECTION_STRING"`
}

// SettingsRequest asks the root for a connection string.
type SettingsRequest struct {
	// GeneratePassword is 1 or 2: which of the sync token's passwords to (re)generate.
	GeneratePassword int `json:"generatePassword"`
	// ParentProtocol is http or https; empty means the scheme the request came in with.
	ParentProtocol string `json:"parentProtocol,omitempty"`
	// ParentEndpoint is host[:port] the node will reach its parent at; empty means the address
	// the request was sent to.
	ParentEndpoint string `json:"parentEndpoint,omitempty"`
}

// ActivateRequest is a node's activation: the instance that runs the connected registry.
type ActivateRequest struct {
	InstanceID string `json:"instanceId"`
}

// ChildConfig is what a parent tells a connected registry about itself and the registries
// below it, which it serves in turn, also while offline.
type ChildConfig struct {
	Registry    ConnectedRegistry   `json:"registry"`
	Descendants []ConnectedRegistry `json:"descendants"`
	// SyncTokens are the bcrypt hashes of the descendants' sync tokens, so that this node can
	// authenticate its own children, also while its parent is unreachable.
	SyncTokens []SyncTokenHashes `json:"syncTokens,omitempty"`
	// ClientTokens are the client tokens attached to this registry or to registries below it,
	// which each enforces itself, also while its parent is unreachable.
	ClientTokens []ClientTokenHashes `json:"clientTokens,omitempty"`
}

// SyncTokenHashes is a sync token as a parent stores it: its name and password hashes.
type SyncTokenHashes struct {
	Registry string `json:"registry"`
	Name     string `json:"name"`
	Hash1    []byte `json:"hash1,omitempty"`
	Hash2    []byte `json:"hash2,omitempty"`
}

// StatusReport is a node's status, with the latest statuses of the registries below it.
type StatusReport struct {
	Status      NodeStatus            `json:"status"`
	Descendants map[string]NodeStatus `json:"descendants,omitempty"`
	// LayersHash names the node's inventory of layers (the parent's bases for deltas), a list
	// in the order of their digests. When it changed since the parent last acknowledged it,
	// the report carries either the changes from the acknowledged one (LayersBase, its hash;
	// LayersAdded; LayersRemoved, by digest) or, when those would be as long, Layers, the whole
	// inventory.
	LayersHash    string      `json:"layersHash,omitempty"`
	Layers        []HeldLayer `json:"layers,omitempty"`
	LayersBase    string      `json:"layersBase,omitempty"`
	LayersAdded   []HeldLayer `json:"layersAdded,omitempty"`
	LayersRemoved []string    `json:"layersRemoved,omitempty"`
	// Platforms are the os/arch[/variant] of image indexes the node keeps (its sync.platforms;
	// none: all), so that its parent prepares deltas of those only. Sent only to a parent whose
	// StatusAnswer lists ReportPlatforms in Reads.
	Platforms []string `json:"platforms,omitempty"`
}

// Optional StatusReport fields, as a StatusAnswer's Reads names them.
const ReportPlatforms = "platforms"

// StatusAnswer answers a StatusReport.
type StatusAnswer struct {
	// LayersHash is the hash of the inventory the parent now holds for the node ("" for none):
	// the node's own LayersHash when the report's inventory or changes were applied. A node
	// whose inventory the parent does not hold sends it whole next time.
	LayersHash string `json:"layersHash,omitempty"`
	// Reads lists the optional StatusReport fields this parent reads. A node sends none its
	// parent does not list: a parent of an earlier release refuses a report with a field it
	// does not know.
	Reads []string `json:"reads,omitempty"`
}

// Event actions.
const (
	EventPush   = "push"   // a tag now points at Digest (pushed, synced or moved)
	EventUntag  = "untag"  // the tag was removed
	EventDelete = "delete" // manifest Digest was deleted, with every tag on it
)

// Event is one change in a node's repositories.
type Event struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Repository string    `json:"repository"`
	Tag        string    `json:"tag,omitempty"`
	Digest     string    `json:"digest,omitempty"`
	Action     string    `json:"action"`
}

// EventPage is a slice of the event log after a cursor, filtered to the reader's repositories.
type EventPage struct {
	Events []Event `json:"events"`
	// Next is the cursor to read from next time; Latest the newest event in the log.
	Next   uint64 `json:"next"`
	Latest uint64 `json:"latest"`
	// More says a next page is waiting; Reset that events after the cursor were dropped (their
	// TTL passed) and the reader must reconcile in full.
	More  bool `json:"more,omitempty"`
	Reset bool `json:"reset,omitempty"`
}
