package acrapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client calls the /acr API of a node: the admin API of a root, or the parent API as a child.
type Client struct {
	// BaseURL is the node's URL, such as https://root.example:8443.
	BaseURL string
	// Username and Password: the admin's, or a sync token's name and password.
	Username, Password string
	// HTTP sends the requests; nil means http.DefaultClient.
	HTTP *http.Client
}

// APIError is an /acr error response.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%d %s", e.Status, e.Code)
	}
	return e.Message + " (" + e.Code + ")"
}

// Do sends a request with in as its JSON body (if not nil) and decodes a JSON answer into out
// (if not nil). A status of 400 or more is an *APIError.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Username != "" {
		req.SetBasicAuth(c.Username, c.Password)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		apiErr := &APIError{Status: resp.StatusCode, Code: http.StatusText(resp.StatusCode)}
		var er ErrorResponse
		if json.Unmarshal(b, &er) == nil && len(er.Errors) > 0 {
			apiErr.Code, apiErr.Message = er.Errors[0].Code, er.Errors[0].Message
		}
		return apiErr
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("reading the answer to %s %s: %w", method, path, err)
		}
	}
	return nil
}

const crPath = "/acr/v1/connected-registries"

func crOne(name string) string { return crPath + "/" + url.PathEscape(name) }

// CreateConnectedRegistry defines a connected registry.
func (c *Client) CreateConnectedRegistry(ctx context.Context, spec ConnectedRegistrySpec) (ConnectedRegistry, error) {
	var out ConnectedRegistry
	return out, c.Do(ctx, http.MethodPost, crPath, spec, &out)
}

// ListConnectedRegistries lists every definition, parents before children.
func (c *Client) ListConnectedRegistries(ctx context.Context) ([]ConnectedRegistry, error) {
	var out []ConnectedRegistry
	return out, c.Do(ctx, http.MethodGet, crPath, nil, &out)
}

// GetConnectedRegistry shows one definition.
func (c *Client) GetConnectedRegistry(ctx context.Context, name string) (ConnectedRegistry, error) {
	var out ConnectedRegistry
	return out, c.Do(ctx, http.MethodGet, crOne(name), nil, &out)
}

// UpdateConnectedRegistry changes a definition.
func (c *Client) UpdateConnectedRegistry(ctx context.Context, name string, u ConnectedRegistryUpdate) (ConnectedRegistry, error) {
	var out ConnectedRegistry
	return out, c.Do(ctx, http.MethodPatch, crOne(name), u, &out)
}

// DeleteConnectedRegistry deletes a definition (and, with cascade, those below it) and returns
// the names deleted.
func (c *Client) DeleteConnectedRegistry(ctx context.Context, name string, cascade bool) ([]string, error) {
	path := crOne(name)
	if cascade {
		path += "?cascade=true"
	}
	var out struct {
		Deleted []string `json:"deleted"`
	}
	return out.Deleted, c.Do(ctx, http.MethodDelete, path, nil, &out)
}

// DeactivateConnectedRegistry lets another instance activate name.
func (c *Client) DeactivateConnectedRegistry(ctx context.Context, name string) (ConnectedRegistry, error) {
	var out ConnectedRegistry
	return out, c.Do(ctx, http.MethodPost, crOne(name)+"/deactivate", nil, &out)
}

// GetSettings generates a sync token password and returns the connection string.
func (c *Client) GetSettings(ctx context.Context, name string, req SettingsRequest) (Settings, error) {
	var out Settings
	return out, c.Do(ctx, http.MethodPost, crOne(name)+"/settings", req, &out)
}

// Activate activates the calling connected registry on instance and returns its configuration.
func (c *Client) Activate(ctx context.Context, instance string) (ChildConfig, error) {
	var out ChildConfig
	return out, c.Do(ctx, http.MethodPost, "/acr/v1/activate", ActivateRequest{InstanceID: instance}, &out)
}

// Config returns the calling connected registry's configuration.
func (c *Client) Config(ctx context.Context) (ChildConfig, error) {
	var out ChildConfig
	return out, c.Do(ctx, http.MethodGet, "/acr/v1/config", nil, &out)
}

// ReportStatus sends the calling connected registry's status.
func (c *Client) ReportStatus(ctx context.Context, r StatusReport) (StatusAnswer, error) {
	var out StatusAnswer
	return out, c.Do(ctx, http.MethodPost, "/acr/v1/status", r, &out)
}

// Events reads the event log after cursor, filtered to the calling registry's repositories.
func (c *Client) Events(ctx context.Context, after uint64) (EventPage, error) {
	var out EventPage
	return out, c.Do(ctx, http.MethodGet, "/acr/v1/events?after="+strconv.FormatUint(after, 10), nil, &out)
}

const (
	scopeMapsPath = "/acr/v1/scope-maps"
	tokensPath    = "/acr/v1/tokens"
)

// CreateScopeMap defines a scope map.
func (c *Client) CreateScopeMap(ctx context.Context, spec ScopeMapSpec) (ScopeMap, error) {
	var out ScopeMap
	return out, c.Do(ctx, http.MethodPost, scopeMapsPath, spec, &out)
}

// ListScopeMaps lists every scope map, by name.
func (c *Client) ListScopeMaps(ctx context.Context) ([]ScopeMap, error) {
	var out []ScopeMap
	return out, c.Do(ctx, http.MethodGet, scopeMapsPath, nil, &out)
}

// GetScopeMap shows one scope map.
func (c *Client) GetScopeMap(ctx context.Context, name string) (ScopeMap, error) {
	var out ScopeMap
	return out, c.Do(ctx, http.MethodGet, scopeMapsPath+"/"+url.PathEscape(name), nil, &out)
}

// UpdateScopeMap changes a scope map.
func (c *Client) UpdateScopeMap(ctx context.Context, name string, u ScopeMapUpdate) (ScopeMap, error) {
	var out ScopeMap
	return out, c.Do(ctx, http.MethodPatch, scopeMapsPath+"/"+url.PathEscape(name), u, &out)
}

// DeleteScopeMap deletes a scope map that no token uses.
func (c *Client) DeleteScopeMap(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, scopeMapsPath+"/"+url.PathEscape(name), nil, nil)
}

// CreateToken defines a token; unless req.NoPasswords, the answer carries its password1, the
// only time it is shown.
func (c *Client) CreateToken(ctx context.Context, req TokenCreate) (Token, error) {
	var out Token
	return out, c.Do(ctx, http.MethodPost, tokensPath, req, &out)
}

// ListTokens lists every token, by name.
func (c *Client) ListTokens(ctx context.Context) ([]Token, error) {
	var out []Token
	return out, c.Do(ctx, http.MethodGet, tokensPath, nil, &out)
}

// GetToken shows one token (its passwords' metadata, never their values).
func (c *Client) GetToken(ctx context.Context, name string) (Token, error) {
	var out Token
	return out, c.Do(ctx, http.MethodGet, tokensPath+"/"+url.PathEscape(name), nil, &out)
}

// UpdateToken changes a token's scope map or status.
func (c *Client) UpdateToken(ctx context.Context, name string, u TokenUpdate) (Token, error) {
	var out Token
	return out, c.Do(ctx, http.MethodPatch, tokensPath+"/"+url.PathEscape(name), u, &out)
}

// DeleteToken deletes a token that no connected registry names as a client token.
func (c *Client) DeleteToken(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, tokensPath+"/"+url.PathEscape(name), nil, nil)
}

// GenerateTokenPassword generates password 1 or 2 of a token and returns it, the only time it
// is shown.
func (c *Client) GenerateTokenPassword(ctx context.Context, name string, req TokenCredentialsRequest) (TokenCredentials, error) {
	var out TokenCredentials
	return out, c.Do(ctx, http.MethodPost, tokensPath+"/"+url.PathEscape(name)+"/credentials", req, &out)
}
