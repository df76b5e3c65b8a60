package acrapi

import (
	"encoding/json"
	"net/http"
)

// Error is one error in an /acr response body, in the shape of the OCI distribution API's errors
// so that clients can read both the same way.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// ErrorResponse is the body of every /acr response with a status of 400 or more.
type ErrorResponse struct {
	Errors []Error `json:"errors"`
}

// Error codes used by the /acr API beside the OCI ones.
const (
	CodeNotFound    = "NOT_FOUND"
	CodeUnsupported = "UNSUPPORTED"
	// CodeDeltaUnavailable: no delta for this layer; fetch the blob itself.
	CodeDeltaUnavailable = "DELTA_UNAVAILABLE"
	// CodeInventoryStale: the parent does not hold the inventory a delta request names.
	CodeInventoryStale = "INVENTORY_STALE"
)

// WriteError writes status and a body holding one error.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ErrorResponse{Errors: []Error{{Code: code, Message: message}}})
}
