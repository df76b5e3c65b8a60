package acrapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// DeltaFormat names the delta encoding a child can apply (internal/delta/tardelta, version 5:
// version 4 and patches that refer to what earlier patches of the delta output). DeltaFormatV4
// (version 2 and executables patched with their addresses predicted), DeltaFormatV2 (with
// approximate-match patches for executables) and DeltaFormatV1 are the earlier versions: a
// parent makes the newest a child offers, and a child applies whichever its parent makes.
// "tardelta/3" predicted executables with an older model: a child that offers it (and not
// version 4 or 5) gets version 2 from this parent, and this child does not offer it.
const (
	DeltaFormat   = "tardelta/5"
	DeltaFormatV4 = "tardelta/4"
	DeltaFormatV2 = "tardelta/2"
	DeltaFormatV1 = "tardelta/1"
)

// Delta sync settings of a connected registry.
const (
	DeltaEnabled  = "Enabled"
	DeltaDisabled = "Disabled"
)

// HeldLayer is a layer a child holds, offered as a base for a delta: where it sits tells the
// parent which bases are likely to share the most with the layer asked for.
type HeldLayer struct {
	Digest     string `json:"digest"`
	Repository string `json:"repository,omitempty"`
	// Position is the layer's index in its image manifest; -1 when unknown.
	Position int `json:"position"`
}

// DeltaRequest asks a parent for a layer as a delta against layers the child holds
// (POST /acr/v1/deltas).
type DeltaRequest struct {
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	Size       int64  `json:"size"`
	// Position is the layer's index in the image manifest being synced; -1 when unknown.
	Position int `json:"position"`
	// Have are layers the child holds, most relevant first. A connected registry sends instead
	// HaveHash, the LayersHash of the inventory in its last status report, which the parent
	// keeps; a parent that holds another answers 409 INVENTORY_STALE and the child sends Have.
	Have     []HeldLayer `json:"have"`
	HaveHash string      `json:"haveHash,omitempty"`
	// Formats are the delta formats the child can apply.
	Formats []string `json:"formats"`
}

// DeltaPlan answers a DeltaRequest: the delta to fetch (GET /acr/v1/deltas/<ID>, with Range)
// and how to rebuild the layer from it.
type DeltaPlan struct {
	// ID is the sha256 digest of the delta's bytes, which the child verifies.
	ID     string `json:"id"`
	Format string `json:"format"`
	Size   int64  `json:"size"`
	// Bases are the layers the delta copies from, in the order it numbers them.
	Bases []string `json:"bases"`
	// Recipe reproduces the layer's compressed bytes from its tar (internal/delta/recipe).
	Recipe json.RawMessage `json:"recipe"`
	// Splits, when present, are offsets in the layer's tar where the recipe's compressor can
	// be restarted with the same output, the last being the tar's size: the child then
	// recompresses the segments in parallel (internal/delta/pflate). A child that ignores
	// them recompresses serially to the same bytes.
	Splits []int64 `json:"splits,omitempty"`
	// DiffID is the sha256 digest of the layer's uncompressed tar.
	DiffID string `json:"diffId"`
	// Digest and LayerSize are the layer's: what the rebuilt blob must be.
	Digest    string `json:"digest"`
	LayerSize int64  `json:"layerSize"`
}

// MaxInventory bounds the layers of an inventory in a status report.
const MaxInventory = 4096

// InventoryHash names an inventory of held layers: the sha256 of its JSON form, in order.
func InventoryHash(layers []HeldLayer) string {
	b, _ := json.Marshal(layers)
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
