package acrapi

import "time"

// SyncStatus is a node's view of its sync with its parent, as `outpost sync status` shows it.
type SyncStatus struct {
	Parent string `json:"parent,omitempty"`
	// Link is "up" after the last exchange with the parent succeeded, "down" after it failed,
	// "unknown" before any.
	Link string `json:"link"`
	// State is "idle", "syncing", or "disabled" (no parent).
	State        string           `json:"state"`
	Window       WindowStatus     `json:"window"`
	LastPass     *PassSummary     `json:"lastPass,omitempty"`
	LastSuccess  *time.Time       `json:"lastSuccess,omitempty"`
	Repositories []RepoSyncStatus `json:"repositories"`
	InFlight     []BlobProgress   `json:"inFlight"`
	QueueLength  int              `json:"queueLength"`
}

// WindowStatus tells whether the node may talk to its parent now, and when it next may.
type WindowStatus struct {
	Open     bool       `json:"open"`
	ClosesAt *time.Time `json:"closesAt,omitempty"`
	NextOpen *time.Time `json:"nextOpen,omitempty"`
}

// PassSummary totals one sync pass.
type PassSummary struct {
	Started  time.Time  `json:"started"`
	Finished *time.Time `json:"finished,omitempty"`
	// Result is "ok", "partial" (some repositories failed), "failed", "window-closed",
	// "interrupted" (the node stopped) or "running".
	Result          string `json:"result"`
	BytesFromParent int64  `json:"bytesFromParent"`
	BlobsFetched    int64  `json:"blobsFetched"`
	BlobsMounted    int64  `json:"blobsMounted"`
	ManifestsSynced int64  `json:"manifestsSynced"`
	TagsRemoved     int64  `json:"tagsRemoved"`
	// DeltaLayers came as deltas. LayerTransferBytes is what the pass would have received
	// fetching every layer whole (BytesFromParent + SavedBytes).
	DeltaLayers        int64  `json:"deltaLayers"`
	LayerTransferBytes int64  `json:"layerTransferBytes"`
	SavedBytes         int64  `json:"savedBytes"`
	Error              string `json:"error,omitempty"`
}

// RepoSyncStatus is one repository's sync state.
type RepoSyncStatus struct {
	Name string `json:"name"`
	// State is "synced", "syncing", "pending" or "error".
	State         string     `json:"state"`
	LastSuccess   *time.Time `json:"lastSuccess,omitempty"`
	ImagesPending int        `json:"imagesPending"`
	LastError     string     `json:"lastError,omitempty"`
}

// BlobProgress is a blob being fetched.
type BlobProgress struct {
	Repository     string  `json:"repository"`
	Digest         string  `json:"digest"`
	Done           int64   `json:"done"`
	Total          int64   `json:"total"`
	BytesPerSecond float64 `json:"bytesPerSecond"`
	// ETASeconds is the estimated time to finish at the current rate; -1 when unknown.
	ETASeconds float64 `json:"etaSeconds"`
}
