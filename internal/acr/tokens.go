package acr

import (
	"fmt"
	"net/http"

	"github.com/gorilla/mux"
	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// tokenRoutes adds the admin routes of scope maps and tokens: what clients of the registry may
// do, and the credentials they do it with.
func (a *api) tokenRoutes(v1 *mux.Router) {
	sms, sm := "/scope-maps", "/scope-maps/{name}"
	v1.Handle(sms, a.admin(a.listScopeMaps)).Methods(http.MethodGet)
	v1.Handle(sms, a.admin(a.createScopeMap)).Methods(http.MethodPost)
	v1.Handle(sm, a.admin(a.showScopeMap)).Methods(http.MethodGet)
	v1.Handle(sm, a.admin(a.updateScopeMap)).Methods(http.MethodPatch)
	v1.Handle(sm, a.admin(a.deleteScopeMap)).Methods(http.MethodDelete)
	toks, tok := "/tokens", "/tokens/{name}"
	v1.Handle(toks, a.admin(a.listTokens)).Methods(http.MethodGet)
	v1.Handle(toks, a.admin(a.createToken)).Methods(http.MethodPost)
	v1.Handle(tok, a.admin(a.showToken)).Methods(http.MethodGet)
	v1.Handle(tok, a.admin(a.updateToken)).Methods(http.MethodPatch)
	v1.Handle(tok, a.admin(a.deleteToken)).Methods(http.MethodDelete)
	v1.Handle(tok+"/credentials", a.admin(a.tokenCredentials)).Methods(http.MethodPost)
}

func (a *api) listScopeMaps(w http.ResponseWriter, _ *http.Request) error {
	all, err := a.cp.ListScopeMaps()
	if err != nil {
		return err
	}
	if all == nil {
		all = []acrapi.ScopeMap{}
	}
	return reply(w, http.StatusOK, all)
}

func (a *api) createScopeMap(w http.ResponseWriter, r *http.Request) error {
	var spec acrapi.ScopeMapSpec
	if err := decode(r, &spec); err != nil {
		return err
	}
	sm, err := a.cp.CreateScopeMap(spec)
	if err != nil {
		return err
	}
	a.log.Info("scope map created", zap.String("name", sm.Name))
	return reply(w, http.StatusCreated, sm)
}

func (a *api) showScopeMap(w http.ResponseWriter, r *http.Request) error {
	sm, err := a.cp.GetScopeMap(mux.Vars(r)["name"])
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, sm)
}

func (a *api) updateScopeMap(w http.ResponseWriter, r *http.Request) error {
	var u acrapi.ScopeMapUpdate
	if err := decode(r, &u); err != nil {
		return err
	}
	sm, err := a.cp.UpdateScopeMap(mux.Vars(r)["name"], u)
	if err != nil {
		return err
	}
	a.log.Info("scope map updated", zap.String("name", sm.Name))
	return reply(w, http.StatusOK, sm)
}

func (a *api) deleteScopeMap(w http.ResponseWriter, r *http.Request) error {
	name := mux.Vars(r)["name"]
	sm, err := a.cp.GetScopeMap(name)
	if err != nil {
		return err
	}
	if err := a.cp.DeleteScopeMap(name); err != nil {
		return err
	}
	a.log.Info("scope map deleted", zap.String("name", sm.Name))
	return reply(w, http.StatusOK, map[string][]string{"deleted": {sm.Name}})
}

func (a *api) listTokens(w http.ResponseWriter, _ *http.Request) error {
	all, err := a.cp.ListTokens()
	if err != nil {
		return err
	}
	if all == nil {
		all = []acrapi.Token{}
	}
	return reply(w, http.StatusOK, all)
}

// createToken creates a token and, unless told not to, generates its password1 and answers
// with it: the only time it is ever shown.
func (a *api) createToken(w http.ResponseWriter, r *http.Request) error {
	var req acrapi.TokenCreate
	if err := decode(r, &req); err != nil {
		return err
	}
	tok, err := a.cp.CreateToken(req.TokenSpec)
	if err != nil {
		return err
	}
	a.log.Info("token created", zap.String("name", tok.Name), zap.String("scopeMap", tok.ScopeMap))
	if !req.NoPasswords {
		password, err := a.cp.GenerateTokenPassword(tok.Name, 1, nil)
		if err != nil {
			return fmt.Errorf("token %s was created, but generating its password failed: %w", tok.Name, err)
		}
		if tok, err = a.cp.GetToken(tok.Name); err != nil {
			return err
		}
		for i := range tok.Passwords {
			if tok.Passwords[i].Name == acrapi.TokenPassword1 {
				tok.Passwords[i].Value = password
			}
		}
		a.log.Info("token password generated", zap.String("name", tok.Name), zap.Int("slot", 1))
	}
	return reply(w, http.StatusCreated, tok)
}

func (a *api) showToken(w http.ResponseWriter, r *http.Request) error {
	tok, err := a.cp.GetToken(mux.Vars(r)["name"])
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, tok)
}

func (a *api) updateToken(w http.ResponseWriter, r *http.Request) error {
	var u acrapi.TokenUpdate
	if err := decode(r, &u); err != nil {
		return err
	}
	tok, err := a.cp.UpdateToken(mux.Vars(r)["name"], u)
	if err != nil {
		return err
	}
	a.log.Info("token updated", zap.String("name", tok.Name), zap.String("status", tok.Status), zap.String("scopeMap", tok.ScopeMap))
	return reply(w, http.StatusOK, tok)
}

func (a *api) deleteToken(w http.ResponseWriter, r *http.Request) error {
	name := mux.Vars(r)["name"]
	tok, err := a.cp.GetToken(name)
	if err != nil {
		return err
	}
	if err := a.cp.DeleteToken(name); err != nil {
		return err
	}
	a.log.Info("token deleted", zap.String("name", tok.Name))
	return reply(w, http.StatusOK, map[string][]string{"deleted": {tok.Name}})
}

// tokenCredentials generates password 1 or 2 of a token and answers with it, the only time it
// is ever shown.
func (a *api) tokenCredentials(w http.ResponseWriter, r *http.Request) error {
	var req acrapi.TokenCredentialsRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Password != 1 && req.Password != 2 {
		return fmt.Errorf("%w: password must be 1 or 2: which of the token's two passwords to generate", errBadRequest)
	}
	name := mux.Vars(r)["name"]
	password, err := a.cp.GenerateTokenPassword(name, req.Password, req.Expiry)
	if err != nil {
		return err
	}
	tok, err := a.cp.GetToken(name)
	if err != nil {
		return err
	}
	slot := fmt.Sprintf("password%d", req.Password)
	out := acrapi.TokenCredentials{Username: tok.Name}
	for _, p := range tok.Passwords {
		if p.Name == slot {
			p.Value = password
			out.Passwords = append(out.Passwords, p)
		}
	}
	a.log.Info("token password generated", zap.String("name", tok.Name), zap.Int("slot", req.Password))
	return reply(w, http.StatusOK, out)
}
