package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-registry/outpost/internal/config"
)

// edgeModule is one module of an IoT Edge deployment manifest.
type edgeModule struct {
	Type          string `json:"type"`
	Status        string `json:"status"`
	RestartPolicy string `json:"restartPolicy"`
	Settings      struct {
		Image         string `json:"image"`
		CreateOptions string `json:"createOptions"`
	} `json:"settings"`
	Env map[string]struct {
		Value string `json:"value"`
	} `json:"env"`
}

// createOptions is the part of Docker's container create body the manifests use.
type createOptions struct {
	Env        []string `json:"Env"`
	HostConfig struct {
		Binds        []string `json:"Binds"`
		PortBindings map[string][]struct {
			HostPort string `json:"HostPort"`
		} `json:"PortBindings"`
	} `json:"HostConfig"`
}

type edgeManifest struct {
	ModulesContent struct {
		EdgeAgent struct {
			Desired struct {
				SchemaVersion string `json:"schemaVersion"`
				Runtime       struct {
					Type     string `json:"type"`
					Settings struct {
						RegistryCredentials map[string]struct {
							Address, Username, Password string
						} `json:"registryCredentials"`
					} `json:"settings"`
				} `json:"runtime"`
				SystemModules map[string]edgeModule `json:"systemModules"`
				Modules       map[string]edgeModule `json:"modules"`
			} `json:"properties.desired"`
		} `json:"$edgeAgent"`
		EdgeHub struct {
			Desired struct {
				SchemaVersion string            `json:"schemaVersion"`
				Routes        map[string]string `json:"routes"`
			} `json:"properties.desired"`
		} `json:"$edgeHub"`
	} `json:"modulesContent"`
}

// apiProxyEnv are the variables of the IoT Edge API proxy module that the manifests may set.
var apiProxyEnv = map[string]bool{"NGINX_DEFAULT_PORT": true, "CONNECTED_ACR_ROUTE_ADDRESS": true}

// outpostEnv reports whether the binary reads the environment variable name.
func outpostEnv(name string) bool {
	if _, ok := config.EnvAliases[name]; ok {
		return true
	}
	for _, k := range config.Keys() {
		if config.EnvName(k) == name {
			return true
		}
	}
	return false
}

func TestIoTEdgeManifests(t *testing.T) {
	for _, layer := range []string{"top", "lower"} {
		t.Run(layer, func(t *testing.T) {
			path := filepath.Join(repoRoot, "deploy", "iotedge", "manifest."+layer+"-layer.json")
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(strings.NewReader(string(b)))
			var m edgeManifest
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			agent := m.ModulesContent.EdgeAgent.Desired
			if agent.SchemaVersion == "" || agent.Runtime.Type != "docker" {
				t.Errorf("$edgeAgent: schemaVersion %q, runtime type %q", agent.SchemaVersion, agent.Runtime.Type)
			}
			for _, name := range []string{"edgeAgent", "edgeHub"} {
				sm, ok := agent.SystemModules[name]
				if !ok || sm.Settings.Image == "" {
					t.Errorf("systemModules.%s missing or without image", name)
					continue
				}
				if layer == "lower" && !strings.HasPrefix(sm.Settings.Image, "$upstream:443/") {
					t.Errorf("lower layer: systemModules.%s image %q does not come through the parent ($upstream:443)", name, sm.Settings.Image)
				}
			}
			if m.ModulesContent.EdgeHub.Desired.SchemaVersion == "" || len(m.ModulesContent.EdgeHub.Desired.Routes) == 0 {
				t.Error("$edgeHub: no schemaVersion or routes")
			}

			cr, ok := agent.Modules["connected-registry"]
			if !ok {
				t.Fatal("no connected-registry module (the API proxy routes to connected-registry:8080)")
			}
			if cr.Type != "docker" || cr.Status != "running" || cr.RestartPolicy != "always" || cr.Settings.Image == "" {
				t.Errorf("connected-registry: type %q, status %q, restartPolicy %q, image %q", cr.Type, cr.Status, cr.RestartPolicy, cr.Settings.Image)
			}
			if layer == "lower" && !strings.HasPrefix(cr.Settings.Image, "$upstream:443/") {
				t.Errorf("lower layer: connected-registry image %q is not pulled through the parent ($upstream:443)", cr.Settings.Image)
			}
			var opts createOptions
			od := json.NewDecoder(strings.NewReader(cr.Settings.CreateOptions))
			od.DisallowUnknownFields()
			if err := od.Decode(&opts); err != nil {
				t.Fatalf("connected-registry createOptions %q: %v", cr.Settings.CreateOptions, err)
			}
			var env []string
			for _, kv := range opts.Env {
				k, _, ok := strings.Cut(kv, "=")
				if !ok {
					t.Errorf("connected-registry Env %q: not KEY=value", kv)
				}
				env = append(env, k)
			}
			for k := range cr.Env {
				env = append(env, k)
			}
			if !slices.Contains(opts.Env, "ACR_REGISTRY_CONNECTION_STRING=<REPLACE_WITH_CONNECTION_STRING>") {
				t.Errorf("connected-registry Env %q lacks ACR_REGISTRY_CONNECTION_STRING=<REPLACE_WITH_CONNECTION_STRING>", opts.Env)
			}
			for _, k := range env {
				if !outpostEnv(k) {
					t.Errorf("connected-registry sets %s, which the binary does not read (not a config key's variable nor an alias)", k)
				}
			}
			if !slices.Contains(opts.HostConfig.Binds, "/home/azureuser/connected-registry:/var/acr/data") {
				t.Errorf("connected-registry Binds %q: the data directory /var/acr/data is not on the host", opts.HostConfig.Binds)
			}
			for _, bind := range opts.HostConfig.Binds {
				if parts := strings.Split(bind, ":"); len(parts) < 2 || !strings.HasPrefix(parts[1], "/") {
					t.Errorf("connected-registry bind %q is not host:container[:mode]", bind)
				}
			}
			if slices.Contains(env, config.EnvName("parent.caFile")) {
				// The file it names must be mounted.
				var mounted bool
				for _, kv := range opts.Env {
					if v, ok := strings.CutPrefix(kv, config.EnvName("parent.caFile")+"="); ok {
						for _, bind := range opts.HostConfig.Binds {
							mounted = mounted || strings.Split(bind, ":")[1] == v
						}
					}
				}
				if !mounted {
					t.Errorf("%s names a file no bind mounts", config.EnvName("parent.caFile"))
				}
			}
			hp := opts.HostConfig.PortBindings["8080/tcp"]
			if layer == "top" && (len(hp) != 1 || hp[0].HostPort != "8080") {
				t.Errorf("top layer: connected-registry PortBindings %v, want 8080/tcp on host port 8080", opts.HostConfig.PortBindings)
			}

			px, ok := agent.Modules["IoTEdgeAPIProxy"]
			if !ok {
				t.Fatal("no IoTEdgeAPIProxy module")
			}
			if px.Type != "docker" || px.Status != "running" || !strings.Contains(px.Settings.Image, "azureiotedge-api-proxy") {
				t.Errorf("IoTEdgeAPIProxy: type %q, status %q, image %q", px.Type, px.Status, px.Settings.Image)
			}
			if layer == "lower" && !strings.HasPrefix(px.Settings.Image, "$upstream:443/") {
				t.Errorf("lower layer: IoTEdgeAPIProxy image %q is not pulled through the parent ($upstream:443)", px.Settings.Image)
			}
			if v := px.Env["NGINX_DEFAULT_PORT"].Value; v != "443" {
				t.Errorf("IoTEdgeAPIProxy NGINX_DEFAULT_PORT %q, want 443", v)
			}
			if v := px.Env["CONNECTED_ACR_ROUTE_ADDRESS"].Value; v != "connected-registry:8080" {
				t.Errorf("IoTEdgeAPIProxy CONNECTED_ACR_ROUTE_ADDRESS %q, want connected-registry:8080 (the module's name and the image's EXPOSEd port)", v)
			}
			for k := range px.Env {
				if !apiProxyEnv[k] {
					t.Errorf("IoTEdgeAPIProxy sets %s, not one of the API proxy's variables the manifests use", k)
				}
			}
			var pxOpts createOptions
			if err := json.Unmarshal([]byte(px.Settings.CreateOptions), &pxOpts); err != nil {
				t.Fatalf("IoTEdgeAPIProxy createOptions: %v", err)
			}
			if hp := pxOpts.HostConfig.PortBindings["443/tcp"]; len(hp) != 1 || hp[0].HostPort != "443" {
				t.Errorf("IoTEdgeAPIProxy PortBindings %v, want 443/tcp on host port 443", pxOpts.HostConfig.PortBindings)
			}
			// Only the API proxy binds 443 on the host.
			for name, mod := range agent.SystemModules {
				var o createOptions
				if mod.Settings.CreateOptions != "" {
					if err := json.Unmarshal([]byte(mod.Settings.CreateOptions), &o); err != nil {
						t.Errorf("systemModules.%s createOptions: %v", name, err)
					}
				}
				if _, ok := o.HostConfig.PortBindings["443/tcp"]; ok {
					t.Errorf("systemModules.%s binds 443 too: it would collide with the API proxy", name)
				}
			}

			if layer == "lower" {
				creds := agent.Runtime.Settings.RegistryCredentials
				var upstream bool
				for _, c := range creds {
					upstream = upstream || c.Address == "$upstream:443"
				}
				if !upstream {
					t.Errorf("lower layer: no registryCredentials for $upstream:443: %v", creds)
				}
			}
		})
	}
}
