// Package acr serves the /acr API: the connected-registry protocol between a parent and its
// children (activation, configuration, status) and the root's admin API.
package acr

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/controlplane"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Options configure the /acr handler.
type Options struct {
	// ControlPlane holds the definitions this node serves; nil on a node without one, where
	// every /acr path answers 404.
	ControlPlane *controlplane.Store
	Log          *zap.Logger
}

// Handler serves /acr/.
func Handler(opts Options) http.Handler {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	a := &api{cp: opts.ControlPlane, log: opts.Log}
	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acrapi.WriteError(w, http.StatusNotFound, acrapi.CodeNotFound, "no /acr endpoint at "+r.URL.Path)
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acrapi.WriteError(w, http.StatusMethodNotAllowed, acrapi.CodeUnsupported, r.Method+" is not supported on "+r.URL.Path)
	})
	if a.cp == nil {
		return r
	}
	v1 := r.PathPrefix("/acr/v1").Subrouter()
	crs := "/connected-registries"
	one := crs + "/{name}"
	v1.Handle(crs, a.admin(a.list)).Methods(http.MethodGet)
	v1.Handle(crs, a.admin(a.create)).Methods(http.MethodPost)
	v1.Handle(one, a.admin(a.show)).Methods(http.MethodGet)
	v1.Handle(one, a.admin(a.update)).Methods(http.MethodPatch)
	v1.Handle(one, a.admin(a.delete)).Methods(http.MethodDelete)
	v1.Handle(one+"/deactivate", a.admin(a.deactivate)).Methods(http.MethodPost)
	v1.Handle(one+"/settings", a.admin(a.settings)).Methods(http.MethodPost)
	a.tokenRoutes(v1)
	v1.Handle("/activate", a.child(a.activate)).Methods(http.MethodPost)
	v1.Handle("/config", a.child(a.config)).Methods(http.MethodGet)
	v1.Handle("/status", a.child(a.status)).Methods(http.MethodPost)
	v1.Handle("/events", a.child(a.events)).Methods(http.MethodGet)
	return r
}

type api struct {
	cp  *controlplane.Store
	log *zap.Logger
}

// maxBody bounds a request body of the /acr API.
const maxBody = 1 << 20

// admin wraps a handler that only the root's admin may call.
func (a *api) admin(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok {
			a.fail(w, r, fmt.Errorf("%w: the admin API needs the admin's credentials (HTTP Basic)", controlplane.ErrUnauthorized))
			return
		}
		if err := a.cp.AuthenticateAdmin(user, pass); err != nil {
			a.log.Warn("admin authentication failed", zap.String("user", user), zap.String("remote", r.RemoteAddr))
			a.fail(w, r, err)
			return
		}
		if err := h(w, r); err != nil {
			a.fail(w, r, err)
		}
	})
}

// child wraps a handler that a connected registry calls with its sync token; the handler gets
// the registry's name.
func (a *api) child(h func(w http.ResponseWriter, r *http.Request, name string) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok {
			a.fail(w, r, fmt.Errorf("%w: a connected registry authenticates with its sync token (HTTP Basic)", controlplane.ErrUnauthorized))
			return
		}
		name, err := a.cp.Authenticate(user, pass)
		if err != nil {
			a.log.Warn("sync token authentication failed", zap.String("token", user), zap.String("remote", r.RemoteAddr))
			a.fail(w, r, err)
			return
		}
		if err := h(w, r, name); err != nil {
			a.fail(w, r, err)
		}
	})
}

// fail maps a control-plane error to its status and code.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, code := http.StatusInternalServerError, "UNKNOWN"
	switch {
	case errors.Is(err, controlplane.ErrNotFound):
		status, code = http.StatusNotFound, acrapi.CodeNotFound
	case errors.Is(err, controlplane.ErrExists):
		status, code = http.StatusConflict, "ALREADY_EXISTS"
	case errors.Is(err, controlplane.ErrInvalid), errors.Is(err, errBadRequest):
		status, code = http.StatusBadRequest, "INVALID"
	case errors.Is(err, controlplane.ErrHasChildren):
		status, code = http.StatusConflict, "HAS_CHILDREN"
	case errors.Is(err, controlplane.ErrInUse):
		status, code = http.StatusConflict, "IN_USE"
	case errors.Is(err, controlplane.ErrAlreadyActivated):
		status, code = http.StatusConflict, "ALREADY_ACTIVATED"
	case errors.Is(err, controlplane.ErrUnauthorized):
		status, code = http.StatusUnauthorized, "UNAUTHORIZED"
		w.Header().Set("WWW-Authenticate", `Basic realm="outpost"`)
	default:
		a.log.Error("acr request failed", zap.String("path", r.URL.Path), zap.Error(err))
	}
	acrapi.WriteError(w, status, code, message(err))
}

// message drops the sentinel's own words ("invalid: ") from the front of err.
func message(err error) string {
	msg := err.Error()
	for _, s := range []error{controlplane.ErrTokenDisabled, controlplane.ErrInUse, controlplane.ErrInvalid, controlplane.ErrNotFound, controlplane.ErrExists,
		controlplane.ErrHasChildren, controlplane.ErrAlreadyActivated, controlplane.ErrUnauthorized, errBadRequest} {
		msg = strings.TrimPrefix(msg, s.Error()+": ")
	}
	return msg
}

var errBadRequest = errors.New("bad request")

// decode reads a JSON body into v, refusing unknown fields.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: request body: %v", errBadRequest, err)
	}
	return nil
}

func reply(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}
