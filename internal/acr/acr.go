// Package acr serves the /acr API: the connected-registry protocol between a parent and its
// children, and the root's admin API.
package acr

import (
	"net/http"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Handler serves /acr/. No endpoint exists yet: every path answers 404 with an OCI-style body.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acrapi.WriteError(w, http.StatusNotFound, acrapi.CodeNotFound, "no /acr endpoint at "+r.URL.Path)
	})
}
