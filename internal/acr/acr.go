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

	"github.com/outpost-registry/outpost/internal/auth"
	"github.com/outpost-registry/outpost/internal/controlplane"
	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/internal/logging"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Options configure the /acr handler.
type Options struct {
	// ControlPlane holds the definitions this node serves; nil on a node without one, where
	// every /acr path answers 404.
	ControlPlane *controlplane.Store
	// Auth authenticates callers; nil builds one over ControlPlane as on a root.
	Auth *auth.Authenticator
	// Deltas serves layers as deltas to children; nil: /acr/v1/deltas answers 404 and
	// children fetch blobs whole.
	Deltas *delta.Service
	Log    *zap.Logger
}

// Handler serves /acr/.
func Handler(opts Options) http.Handler {
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	a := &api{cp: opts.ControlPlane, auth: opts.Auth, deltas: opts.Deltas, log: opts.Log}
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
	if a.auth == nil {
		var err error
		if a.auth, err = auth.New(auth.Options{Verifier: NewRootVerifier(a.cp), Audit: opts.Log.Named("audit")}); err != nil {
			panic(err) // no options that can fail
		}
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
	if a.deltas != nil {
		a.deltaRoutes(v1)
	}
	v1.Handle("/activate", a.child(a.activate)).Methods(http.MethodPost)
	v1.Handle("/config", a.child(a.config)).Methods(http.MethodGet)
	v1.Handle("/status", a.child(a.status)).Methods(http.MethodPost)
	v1.Handle("/events", a.child(a.events)).Methods(http.MethodGet)
	return r
}

type api struct {
	cp     *controlplane.Store
	auth   *auth.Authenticator
	deltas *delta.Service
	log    *zap.Logger
}

// maxBody bounds a request body of the /acr API.
const maxBody = 1 << 20

// admin wraps a handler that only the admin may call. Every change it makes, and every
// refusal, is an audit line.
func (a *api) admin(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := a.authenticate(w, r)
		if !ok {
			return
		}
		if p.Kind != auth.KindAdmin {
			a.auth.Refused(r, p, "admin", "")
			a.fail(w, r, fmt.Errorf("%w: the admin API needs the admin's credentials, not those of %s", errDenied, p))
			return
		}
		err := h(w, r)
		if r.Method != http.MethodGet {
			fields := []zap.Field{zap.String("principal", p.String()), zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.String("client", r.RemoteAddr)}
			if err != nil {
				a.auth.Audit().Info("admin change refused", append(fields, zap.String("reason", err.Error()))...)
			} else {
				a.auth.Audit().Info("admin change", fields...)
			}
		}
		if err != nil {
			a.fail(w, r, err)
		}
	})
}

// child wraps a handler that a connected registry directly below this node calls with its
// sync token; the handler gets the registry's name.
func (a *api) child(h func(w http.ResponseWriter, r *http.Request, name string) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := a.authenticate(w, r)
		if !ok {
			return
		}
		if p.Kind != auth.KindSyncToken {
			a.auth.Refused(r, p, "config/read", "")
			a.fail(w, r, fmt.Errorf("%w: only a connected registry's sync token may call %s, not %s", errDenied, r.URL.Path, p))
			return
		}
		if err := h(w, r, p.Registry); err != nil {
			a.fail(w, r, err)
		}
	})
}

// authenticate finds who calls; it answers the request itself, and returns false, when the
// credentials are missing or wrong.
func (a *api) authenticate(w http.ResponseWriter, r *http.Request) (*auth.Principal, bool) {
	p, err := a.auth.Authenticate(r)
	var limited *auth.LimitedError
	switch {
	case errors.As(err, &limited):
		w.Header().Set("Retry-After", limited.RetryAfterHeader())
		acrapi.WriteError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", limited.Error())
		return nil, false
	case err != nil:
		a.fail(w, r, fmt.Errorf("%w: %s", controlplane.ErrUnauthorized, auth.Reason(err)))
		return nil, false
	case p.Anonymous():
		a.fail(w, r, fmt.Errorf("%w: the /acr API needs credentials (HTTP Basic): the admin's, or a connected registry's sync token", controlplane.ErrUnauthorized))
		return nil, false
	}
	return p, true
}

// errDenied refuses a caller who is authenticated but may not call an endpoint.
var errDenied = errors.New("denied")

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
	case errors.Is(err, errDenied):
		status, code = http.StatusForbidden, "DENIED"
	case errors.Is(err, controlplane.ErrUnauthorized):
		status, code = http.StatusUnauthorized, "UNAUTHORIZED"
		w.Header().Set("WWW-Authenticate", `Basic realm="outpost"`)
	default:
		// The error may name this node's files and internals: the caller gets an incident
		// number to quote, the operator reads the rest in the log under that number.
		incident := logging.Incident()
		a.log.Error("acr request failed", zap.String("path", r.URL.Path), zap.String("incident", incident), zap.Error(err))
		acrapi.WriteError(w, status, code, logging.IncidentMessage("internal error", incident))
		return
	}
	acrapi.WriteError(w, status, code, message(err))
}

// message drops the sentinel's own words ("invalid: ") from the front of err.
func message(err error) string {
	msg := err.Error()
	for _, s := range []error{controlplane.ErrTokenDisabled, controlplane.ErrInUse, controlplane.ErrInvalid, controlplane.ErrNotFound, controlplane.ErrExists,
		controlplane.ErrHasChildren, controlplane.ErrAlreadyActivated, controlplane.ErrUnauthorized, errBadRequest, errDenied} {
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
