package acr

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/delta"
	"github.com/outpost-registry/outpost/internal/repopattern"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// emptyInventory is the hash of an inventory of no layers.
var emptyInventory = acrapi.InventoryHash([]acrapi.HeldLayer{})

// activate marks the calling registry active on the instance that asks, and answers with its
// configuration. A second instance is refused until the first is deactivated.
func (a *api) activate(w http.ResponseWriter, r *http.Request, name string) error {
	var req acrapi.ActivateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.InstanceID == "" || len(req.InstanceID) > 128 {
		return fmt.Errorf("%w: instanceId must be 1 to 128 characters", errBadRequest)
	}
	if err := a.cp.Activate(name, req.InstanceID); err != nil {
		return err
	}
	a.log.Info("connected registry activated", zap.String("name", name), zap.String("instance", req.InstanceID))
	return a.config(w, r, name)
}

// config answers with the calling registry's definition and those of its descendants.
func (a *api) config(w http.ResponseWriter, _ *http.Request, name string) error {
	self, err := a.cp.Get(name)
	if err != nil {
		return err
	}
	below, err := a.cp.Descendants(name)
	if err != nil {
		return err
	}
	if below == nil {
		below = []acrapi.ConnectedRegistry{}
	}
	names := make([]string, 0, len(below))
	for _, d := range below {
		names = append(names, d.Name)
	}
	tokens, err := a.cp.TokenHashes(names)
	if err != nil {
		return err
	}
	clients, err := a.cp.ClientTokens(append([]string{self.Name}, names...))
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, acrapi.ChildConfig{Registry: self, Descendants: below, SyncTokens: tokens, ClientTokens: clients})
}

// status records the calling registry's status and those it relays from below it; statuses of
// registries not below it are refused.
func (a *api) status(w http.ResponseWriter, r *http.Request, name string) error {
	var rep acrapi.StatusReport
	if err := decode(r, &rep); err != nil {
		return err
	}
	if len(rep.Descendants) > 0 {
		below, err := a.cp.Descendants(name)
		if err != nil {
			return err
		}
		mine := map[string]bool{}
		for _, d := range below {
			mine[d.Name] = true
		}
		for d := range rep.Descendants {
			if !mine[d] {
				return fmt.Errorf("%w: %s is not below %s", errBadRequest, d, name)
			}
		}
	}
	if a.deltas != nil {
		if err := a.deltas.SetPlatforms(name, rep.Platforms); err != nil {
			return fmt.Errorf("%w: platforms: %v", errBadRequest, err)
		}
	}
	if err := a.cp.ReportStatus(name, rep.Status); err != nil {
		return err
	}
	var ans acrapi.StatusAnswer
	if a.deltas != nil {
		switch {
		case rep.Layers != nil:
			if err := a.deltas.SetInventory(name, rep.LayersHash, rep.Layers); err != nil {
				return fmt.Errorf("%w: layers: %v", errBadRequest, err)
			}
		case rep.LayersBase == "" && rep.LayersHash == emptyInventory:
			// A node that holds no layer yet: its empty list is left out of the report. Its
			// inventory still says what it lacks (everything), so deltas can be prepared.
			if a.deltas.InventoryHash(name) != emptyInventory {
				if err := a.deltas.SetInventory(name, rep.LayersHash, []acrapi.HeldLayer{}); err != nil {
					return fmt.Errorf("%w: layers: %v", errBadRequest, err)
				}
			}
		case rep.LayersBase != "":
			// Changes to an inventory this parent lost or never had are dropped: the answer
			// tells the node, which sends the whole inventory next time.
			err := a.deltas.UpdateInventory(name, rep.LayersBase, rep.LayersHash, rep.LayersAdded, rep.LayersRemoved)
			if err != nil && !errors.Is(err, delta.ErrInventoryStale) {
				return fmt.Errorf("%w: layers: %v", errBadRequest, err)
			}
		}
		ans.LayersHash = a.deltas.InventoryHash(name)
		ans.Reads = []string{acrapi.ReportPlatforms}
	}
	for d, st := range rep.Descendants {
		if err := a.cp.RelayStatus(d, st); err != nil {
			return err
		}
	}
	return reply(w, http.StatusOK, ans)
}

// maxEventPage bounds one page of the event log.
const maxEventPage = 1000

// events answers the event log after the cursor ?after=, filtered to the calling registry's
// repositories.
func (a *api) events(w http.ResponseWriter, r *http.Request, name string) error {
	after, err := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	if err != nil && r.URL.Query().Get("after") != "" {
		return fmt.Errorf("%w: after must be an event sequence number", errBadRequest)
	}
	limit := maxEventPage
	if l := r.URL.Query().Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 1 || limit > maxEventPage {
			return fmt.Errorf("%w: limit must be 1 to %d", errBadRequest, maxEventPage)
		}
	}
	self, err := a.cp.Get(name)
	if err != nil {
		return err
	}
	page, err := a.cp.Events(after, limit, func(repo string) bool { return repopattern.MatchAny(self.Repositories, repo) })
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, page)
}
