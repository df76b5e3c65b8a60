package cli

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
	"go.yaml.in/yaml/v3"
)

func TestMirrorConfigK3s(t *testing.T) {
	type tls struct {
		CAFile   string `yaml:"ca_file"`
		Insecure bool   `yaml:"insecure_skip_verify"`
	}
	type registries struct {
		Mirrors map[string]struct {
			Endpoint []string `yaml:"endpoint"`
		} `yaml:"mirrors"`
		Configs map[string]struct {
			TLS tls `yaml:"tls"`
		} `yaml:"configs"`
	}
	tests := []struct {
		name      string
		args      []string
		endpoint  string
		upstreams []string
		configs   map[string]tls
	}{
		{"http default upstream", []string{"--endpoint", "http://10.0.0.5:8080/"}, "http://10.0.0.5:8080", []string{"docker.io"}, nil},
		{"https with CA, two upstreams", []string{"--endpoint", "https://outpost.edge.svc:8443", "--upstream", "docker.io,ghcr.io", "--ca-file", "/etc/outpost/ca.crt"},
			"https://outpost.edge.svc:8443", []string{"docker.io", "ghcr.io"}, map[string]tls{"outpost.edge.svc:8443": {CAFile: "/etc/outpost/ca.crt"}}},
		{"https insecure, repeated flag", []string{"--endpoint", "https://[::1]:8443", "--upstream", "quay.io", "--upstream", "registry.example:5000", "--insecure-skip-verify"},
			"https://[::1]:8443", []string{"quay.io", "registry.example:5000"}, map[string]tls{"[::1]:8443": {Insecure: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append([]string{"mirror-config", "k3s"}, tt.args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			var doc registries
			dec := yaml.NewDecoder(strings.NewReader(r.stdout))
			dec.KnownFields(true)
			if err := dec.Decode(&doc); err != nil {
				t.Fatalf("not valid registries.yaml: %v\n%s", err, r.stdout)
			}
			if len(doc.Mirrors) != len(tt.upstreams) {
				t.Fatalf("mirrors %v, want %v", doc.Mirrors, tt.upstreams)
			}
			for _, u := range tt.upstreams {
				if got := doc.Mirrors[u].Endpoint; !reflect.DeepEqual(got, []string{tt.endpoint}) {
					t.Errorf("mirrors[%s].endpoint = %v, want [%s]", u, got, tt.endpoint)
				}
			}
			got := map[string]tls{}
			for k, v := range doc.Configs {
				got[k] = v.TLS
			}
			if len(got) != len(tt.configs) || (len(got) > 0 && !reflect.DeepEqual(got, tt.configs)) {
				t.Errorf("configs = %+v, want %+v", got, tt.configs)
			}
		})
	}
}

func TestMirrorConfigContainerd(t *testing.T) {
	type host struct {
		Capabilities []string `toml:"capabilities"`
		CA           string   `toml:"ca"`
		SkipVerify   bool     `toml:"skip_verify"`
	}
	type hostsTOML struct {
		Server string          `toml:"server"`
		Host   map[string]host `toml:"host"`
	}
	tests := []struct {
		name     string
		args     []string
		server   string
		endpoint string
		want     host
	}{
		{"docker hub over http", []string{"--endpoint", "http://127.0.0.1:5000"}, "https://registry-1.docker.io", "http://127.0.0.1:5000",
			host{Capabilities: []string{"pull", "resolve"}}},
		{"ghcr with CA", []string{"--endpoint", "https://outpost:8443", "--upstream", "ghcr.io", "--ca-file", `/etc/odd "dir"\ca.crt`}, "https://ghcr.io", "https://outpost:8443",
			host{Capabilities: []string{"pull", "resolve"}, CA: `/etc/odd "dir"\ca.crt`}},
		{"skip verify", []string{"--endpoint", "https://outpost:8443", "--insecure-skip-verify"}, "https://registry-1.docker.io", "https://outpost:8443",
			host{Capabilities: []string{"pull", "resolve"}, SkipVerify: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, append([]string{"mirror-config", "containerd"}, tt.args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			var doc hostsTOML
			dec := toml.NewDecoder(strings.NewReader(r.stdout))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&doc); err != nil {
				t.Fatalf("not valid hosts.toml: %v\n%s", err, r.stdout)
			}
			if doc.Server != tt.server {
				t.Errorf("server = %q, want %q", doc.Server, tt.server)
			}
			if len(doc.Host) != 1 || !reflect.DeepEqual(doc.Host[tt.endpoint], tt.want) {
				t.Errorf("host = %+v, want %s: %+v", doc.Host, tt.endpoint, tt.want)
			}
		})
	}
}

func TestMirrorConfigBadInput(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"mirror-config", "k3s"}, []string{"--endpoint is required"}},
		{[]string{"mirror-config", "cri-o", "--endpoint", "http://x:1"}, []string{`"cri-o"`, "k3s or containerd"}},
		{[]string{"mirror-config", "k3s", "--endpoint", "ftp://x"}, []string{"--endpoint", `"ftp://x"`}},
		{[]string{"mirror-config", "k3s", "--endpoint", "x:8080"}, []string{"--endpoint", "http(s)://host[:port]"}},
		{[]string{"mirror-config", "k3s", "--endpoint", "http://x:1/v2"}, []string{"--endpoint", "without credentials, path or query"}},
		{[]string{"mirror-config", "k3s", "--endpoint", "http://x:1", "--ca-file", "/ca.pem"}, []string{"https endpoints only"}},
		{[]string{"mirror-config", "k3s", "--endpoint", "https://x:1", "--ca-file", "ca.pem"}, []string{"--ca-file", "absolute"}},
		{[]string{"mirror-config", "k3s", "--endpoint", "https://x:1", "--ca-file", "/ca.pem", "--insecure-skip-verify"}, []string{"exclude each other"}},
		{[]string{"mirror-config", "k3s", "--endpoint", "http://x:1", "--upstream", "https://docker.io"}, []string{"--upstream", "not a registry host"}},
		{[]string{"mirror-config", "k3s", "--endpoint", "http://x:1", "--upstream", "a.io,a.io"}, []string{"twice"}},
		{[]string{"mirror-config", "containerd", "--endpoint", "http://x:1", "--upstream", "a.io,b.io"}, []string{"one hosts.toml per upstream"}},
		{[]string{"mirror-config"}, []string{"accepts 1 arg"}},
	} {
		r := run(t, tt.args...)
		if r.code != ExitUsage {
			t.Errorf("%v: exit %d, want %d", tt.args, r.code, ExitUsage)
		}
		oneErrorLine(t, r, tt.want...)
	}
}

func TestTOMLString(t *testing.T) {
	for _, s := range []string{"", "plain", `a"b\c`, "tab\tnew\nline\rcr\x00\x1f\x7f", "ünïcode ✓"} {
		var v struct{ S string }
		if err := toml.Unmarshal([]byte("S = "+tomlString(s)), &v); err != nil || v.S != s {
			t.Errorf("tomlString(%q) = %s: decoded %q, %v", s, tomlString(s), v.S, err)
		}
	}
}

// TestMirrorConfigK3sCredentials: a pull token's name and password (from the environment, out
// of the process list) go into the endpoint's auth; one without the other, or credentials for
// containerd's hosts.toml, are refused.
func TestMirrorConfigK3sCredentials(t *testing.T) {
	r := runEnv(t, []string{envMirrorPassword + "=s3cret-pull-password"}, "mirror-config", "k3s", "--endpoint", "https://10.0.0.5:8443", "--username", "k3s-puller", "--ca-file", "/etc/outpost/ca.crt")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var doc struct {
		Configs map[string]struct {
			Auth struct{ Username, Password string } `yaml:"auth"`
			TLS  struct {
				CAFile string `yaml:"ca_file"`
			} `yaml:"tls"`
		} `yaml:"configs"`
	}
	if err := yaml.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatal(err)
	}
	c := doc.Configs["10.0.0.5:8443"]
	if c.Auth.Username != "k3s-puller" || c.Auth.Password != "s3cret-pull-password" || c.TLS.CAFile != "/etc/outpost/ca.crt" {
		t.Fatalf("configs: %+v\n%s", doc.Configs, r.stdout)
	}
	for _, tt := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"k3s", "--endpoint", "http://10.0.0.5:8080", "--username", "k3s-puller"}, envMirrorPassword},
		{[]string{envMirrorPassword + "=x"}, []string{"containerd", "--endpoint", "http://10.0.0.5:8080", "--username", "k3s-puller"}, "hosts.toml holds no credentials"},
	} {
		r := runEnv(t, tt.env, append([]string{"mirror-config"}, tt.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
}
