package acr

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

func (a *api) list(w http.ResponseWriter, _ *http.Request) error {
	all, err := a.cp.List()
	if err != nil {
		return err
	}
	if all == nil {
		all = []acrapi.ConnectedRegistry{}
	}
	return reply(w, http.StatusOK, all)
}

func (a *api) create(w http.ResponseWriter, r *http.Request) error {
	var spec acrapi.ConnectedRegistrySpec
	if err := decode(r, &spec); err != nil {
		return err
	}
	cr, err := a.cp.Create(spec)
	if err != nil {
		return err
	}
	a.log.Info("connected registry created", zap.String("name", cr.Name), zap.String("parent", cr.Parent), zap.String("mode", cr.Mode))
	return reply(w, http.StatusCreated, cr)
}

func (a *api) show(w http.ResponseWriter, r *http.Request) error {
	cr, err := a.cp.Get(mux.Vars(r)["name"])
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, cr)
}

func (a *api) update(w http.ResponseWriter, r *http.Request) error {
	var u acrapi.ConnectedRegistryUpdate
	if err := decode(r, &u); err != nil {
		return err
	}
	cr, err := a.cp.Update(mux.Vars(r)["name"], u)
	if err != nil {
		return err
	}
	a.log.Info("connected registry updated", zap.String("name", cr.Name))
	return reply(w, http.StatusOK, cr)
}

func (a *api) delete(w http.ResponseWriter, r *http.Request) error {
	deleted, err := a.cp.Delete(mux.Vars(r)["name"], r.URL.Query().Get("cascade") == "true")
	if err != nil {
		return err
	}
	a.log.Info("connected registries deleted", zap.Strings("names", deleted))
	if a.deltas != nil {
		for _, name := range deleted {
			if err := a.deltas.ForgetInventory(name); err != nil {
				a.log.Warn("removing a deleted connected registry's inventory of layers failed", zap.String("name", name), zap.Error(err))
			}
		}
	}
	return reply(w, http.StatusOK, map[string][]string{"deleted": deleted})
}

func (a *api) deactivate(w http.ResponseWriter, r *http.Request) error {
	name := mux.Vars(r)["name"]
	if err := a.cp.Deactivate(name); err != nil {
		return err
	}
	a.log.Info("connected registry deactivated", zap.String("name", name))
	cr, err := a.cp.Get(name)
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, cr)
}

// settings generates a sync token password and answers with the connection string, the only
// time that password is ever shown.
func (a *api) settings(w http.ResponseWriter, r *http.Request) error {
	var req acrapi.SettingsRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.GeneratePassword != 1 && req.GeneratePassword != 2 {
		return fmt.Errorf("%w: generatePassword must be 1 or 2: the sync token's passwords are stored hashed, so a connection string needs a new one", errBadRequest)
	}
	proto := strings.ToLower(req.ParentProtocol)
	if proto == "" {
		proto = requestScheme(r)
	}
	endpoint := req.ParentEndpoint
	if endpoint == "" {
		endpoint = requestHost(r)
	}
	name := mux.Vars(r)["name"]
	if _, err := a.cp.Get(name); err != nil {
		return err
	}
	cs := acrapi.ConnectionString{ConnectedRegistryName: name, ParentGatewayEndpoint: endpoint, ParentEndpointProtocol: proto,
		SyncTokenName: "placeholder", SyncTokenPassword: "placeholder"}
	if _, err := acrapi.ParseConnectionString(cs.String()); err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, strings.TrimPrefix(err.Error(), "connection string: "))
	}
	token, password, err := a.cp.GeneratePassword(name, req.GeneratePassword)
	if err != nil {
		return err
	}
	cr, err := a.cp.Get(name)
	if err != nil {
		return err
	}
	cs.ConnectedRegistryName, cs.SyncTokenName, cs.SyncTokenPassword = cr.Name, token, password
	a.log.Info("sync token password generated", zap.String("name", cr.Name), zap.Int("slot", req.GeneratePassword))
	return reply(w, http.StatusOK, acrapi.Settings{ConnectionString: cs.String()})
}

// requestScheme is the scheme the client used, through a proxy too.
func requestScheme(r *http.Request) string {
	if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		return p
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// requestHost is the host:port the client addressed, through a proxy too.
func requestHost(r *http.Request) string {
	if h := r.Header.Get("X-Forwarded-Host"); h != "" {
		return strings.TrimSpace(strings.Split(h, ",")[0])
	}
	return r.Host
}
