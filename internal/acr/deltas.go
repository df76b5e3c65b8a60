package acr

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/auth"
	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// deltaRoutes serves layers as deltas: POST /deltas plans one for the layer a child asks for,
// GET /deltas/<id> serves its bytes, with Range, so a cut transfer resumes.
func (a *api) deltaRoutes(v1 *mux.Router) {
	v1.Handle("/deltas", a.reader(a.planDelta)).Methods(http.MethodPost)
	v1.Handle("/deltas/{id}", a.reader(a.serveDelta)).Methods(http.MethodGet, http.MethodHead)
}

// reader wraps a handler for any authenticated caller; the handler checks what it reads.
func (a *api) reader(h func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := a.authenticate(w, r)
		if !ok {
			return
		}
		if err := h(w, r, p); err != nil {
			a.fail(w, r, err)
		}
	})
}

func (a *api) planDelta(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req acrapi.DeltaRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if !p.Can(req.Repository, acrapi.ActionContentRead) {
		a.auth.Refused(r, p, acrapi.ActionContentRead, req.Repository)
		return fmt.Errorf("%w: %s may not %s on repository %s", errDenied, p, acrapi.ActionContentRead, req.Repository)
	}
	// A connected registry names the inventory of its last status report instead of listing it.
	if len(req.Have) == 0 && req.HaveHash != "" {
		hash, layers, ok := a.deltas.Inventory(p.Registry)
		if p.Kind != auth.KindSyncToken || !ok || hash != req.HaveHash {
			acrapi.WriteError(w, http.StatusConflict, acrapi.CodeInventoryStale, "this parent does not hold inventory "+req.HaveHash+": send the layers held")
			return nil
		}
		req.Have = layers
	}
	// Only layers the caller may read are bases: a delta must not be a window on other
	// repositories.
	have := req.Have[:0]
	for _, h := range req.Have {
		repo := h.Repository
		if repo == "" {
			repo = req.Repository
		}
		if len(have) < acrapi.MaxInventory && p.Can(repo, acrapi.ActionContentRead) {
			have = append(have, h)
		}
	}
	req.Have = have
	plan, err := a.deltas.Plan(r.Context(), req)
	switch {
	case errors.Is(err, delta.ErrPending):
		w.Header().Set("Retry-After", strconv.Itoa(5))
		return reply(w, http.StatusAccepted, map[string]string{"status": "pending"})
	case errors.Is(err, delta.ErrUnavailable):
		acrapi.WriteError(w, http.StatusUnprocessableEntity, acrapi.CodeDeltaUnavailable, err.Error())
		return nil
	case errors.Is(err, syscall.ENOSPC):
		// Retrying would not free the disk: the child fetches the layer whole at once, and the
		// operator of this node reads why.
		a.log.Warn("delta not computed: the disk is full; the child fetches the layer whole", zap.String("for", p.String()),
			zap.String("digest", req.Digest), zap.Error(err))
		acrapi.WriteError(w, http.StatusInsufficientStorage, acrapi.CodeDeltaUnavailable, "the parent has no room on its disk to compute the delta: fetch the layer whole")
		return nil
	case err != nil:
		return err
	}
	a.log.Debug("delta planned", zap.String("for", p.String()), zap.String("delta", delta.Describe(plan)))
	return reply(w, http.StatusOK, plan)
}

func (a *api) serveDelta(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	id := mux.Vars(r)["id"]
	// A delta holds bytes of a layer: only a caller who may read its repository fetches it.
	repos := a.deltas.Repositories(id)
	if !slices.ContainsFunc(repos, func(repo string) bool { return p.Can(repo, acrapi.ActionContentRead) }) {
		a.auth.Refused(r, p, acrapi.ActionContentRead, strings.Join(repos, ","))
		return fmt.Errorf("%w: %s may not read delta %s: ask for a plan of a layer it may read (POST /acr/v1/deltas)", errDenied, p, id)
	}
	f, err := a.deltas.Open(id)
	if errors.Is(err, os.ErrNotExist) {
		acrapi.WriteError(w, http.StatusNotFound, acrapi.CodeNotFound, "no delta "+mux.Vars(r)["id"]+": ask for a plan again (POST /acr/v1/deltas)")
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Content-Digest", mux.Vars(r)["id"])
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return nil
}
