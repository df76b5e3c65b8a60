package config

import (
	"strings"
	"testing"
	"time"

	"github.com/outpost-registry/outpost/internal/duration"
)

func TestValidateSync(t *testing.T) {
	withParent := func(c *Config) {
		c.Parent.URL = "https://parent.example"
		c.Sync.Repositories = []string{"library/alpine"}
	}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" means valid
	}{
		{name: "parent with repositories", mutate: withParent},
		{name: "parent with a path", mutate: func(c *Config) { withParent(c); c.Parent.URL = "https://p.example/v2" }, want: "config key parent.url"},
		{name: "parent with credentials in url", mutate: func(c *Config) { withParent(c); c.Parent.URL = "https://u:p@p.example" }, want: "set those in parent.username"},
		{name: "parent ftp", mutate: func(c *Config) { withParent(c); c.Parent.URL = "ftp://p.example" }, want: "is not a registry URL"},
		{name: "parent without repositories", mutate: func(c *Config) { c.Parent.URL = "http://p:5000" }, want: "config key sync.repositories is empty"},
		{name: "username without password", mutate: func(c *Config) { c.Parent.Username = "u" }, want: "config key parent.password"},
		{name: "missing CA file", mutate: func(c *Config) { c.Parent.CAFile = "/nonexistent/ca.pem" }, want: "config key parent.caFile \"/nonexistent/ca.pem\" cannot be read"},
		{name: "patterns", mutate: func(c *Config) { c.Sync.Repositories = []string{"*", "**", "team/*", "team/**", "a/b-c.d_e"} }},
		{name: "wildcard in the middle", mutate: func(c *Config) { c.Sync.Repositories = []string{"team/*/app"} }, want: "a wildcard may only end it"},
		{name: "upper-case repository", mutate: func(c *Config) { c.Sync.Repositories = []string{"Team/App"} }, want: "entry 1 \"Team/App\" is not a repository name"},
		{name: "bad include regexp", mutate: func(c *Config) { c.Sync.Tags.Include = []string{"("} }, want: "config key sync.tags.include \"(\" is not a regular expression"},
		{name: "bad platform", mutate: func(c *Config) { c.Sync.Platforms = []string{"amd64"} }, want: "config key sync.platforms \"amd64\" is not a platform"},
		{name: "platform with variant", mutate: func(c *Config) { c.Sync.Platforms = []string{"linux/arm/v7"} }},
		{name: "bad schedule", mutate: func(c *Config) { c.Sync.Schedule = "every day" }, want: "config key sync.schedule \"every day\" is not a 5-field cron expression"},
		{name: "six-field schedule", mutate: func(c *Config) { c.Sync.Schedule = "0 * * * * *" }, want: "config key sync.schedule"},
		{name: "descriptor schedule", mutate: func(c *Config) { c.Sync.Schedule = "@hourly" }},
		{name: "bad gc schedule", mutate: func(c *Config) { c.Sync.GCSchedule = "x" }, want: "config key sync.gcSchedule"},
		{name: "window too short", mutate: func(c *Config) { c.Sync.Window = duration.Duration(time.Second) }, want: "config key sync.window PT1S is out of range"},
		{name: "window too long", mutate: func(c *Config) { c.Sync.Window = duration.Duration(8 * 24 * time.Hour) }, want: "expected PT1M to P7D"},
		{name: "chunk zero", mutate: func(c *Config) { c.Sync.ChunkSizeMiB = 0 }, want: "config key sync.chunkSizeMiB 0 is out of range"},
		{name: "negative bandwidth", mutate: func(c *Config) { c.Sync.BandwidthKiBps = -1 }, want: "config key sync.bandwidthKiBps -1 is negative"},
		{name: "parallelism", mutate: func(c *Config) { c.Sync.Parallelism = 0 }, want: "config key sync.parallelism 0 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Default()
			tt.mutate(&cfg)
			err := cfg.Validate(nil)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSyncFromEnvironment(t *testing.T) {
	cfg, src, err := Load("", []string{
		"OUTPOST_PARENT_URL=http://127.0.0.1:5000",
		"OUTPOST_PARENT_PASSWORD=hunter2",
		"OUTPOST_PARENT_USERNAME=edge",
		"OUTPOST_SYNC_REPOSITORIES=library/alpine, team/*",
		"OUTPOST_SYNC_WINDOW=PT2H",
		"OUTPOST_SYNC_REFERRERS=false",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(src); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sync.Repositories) != 2 || cfg.Sync.Repositories[1] != "team/*" || cfg.Sync.Window.Std() != 2*time.Hour || cfg.Sync.Referrers {
		t.Fatalf("environment not applied: %+v", cfg.Sync)
	}
	out, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "hunter2") || !strings.Contains(string(out), "password: '*****'") {
		t.Fatalf("password not masked:\n%s", out)
	}
	if _, _, err := Load("", []string{"OUTPOST_SYNC_PARALLELISM=many"}, nil); err == nil || !strings.Contains(err.Error(), "config key sync.parallelism (from OUTPOST_SYNC_PARALLELISM) \"many\" is not a whole number") {
		t.Fatalf("bad integer: %v", err)
	}
}

func TestConnectionString(t *testing.T) {
	const cs = "ConnectedRegistryName=siteA01;SyncTokenName=siteA01-sync-token;SyncTokenPassword=s3cr3t-pw;ParentGatewayEndpoint=root.example:8080;ParentEndpointProtocol=http"
	cfg, src, err := Load("", []string{"ACR_REGISTRY_CONNECTION_STRING=" + cs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(src); err != nil {
		t.Fatal(err)
	}
	if !cfg.Connected() || !cfg.HasParent() || cfg.IsRoot() || cfg.ParsedConnectionString().URL() != "http://root.example:8080" || src["connectionString"] != "ACR_REGISTRY_CONNECTION_STRING" {
		t.Fatalf("connection string not applied: %+v %v", cfg, src)
	}
	out, _ := cfg.YAML()
	if strings.Contains(string(out), "s3cr3t-pw") {
		t.Fatalf("connection string not masked:\n%s", out)
	}
	// OUTPOST_CONNECTIONSTRING wins over the ACR name.
	cfg, _, _ = Load("", []string{"ACR_REGISTRY_CONNECTION_STRING=x", "OUTPOST_CONNECTIONSTRING=" + cs}, nil)
	if cfg.ConnectionString != cs {
		t.Fatal("OUTPOST_CONNECTIONSTRING did not win")
	}
	for env, want := range map[string]string{
		"ACR_REGISTRY_CONNECTION_STRING=" + strings.Replace(cs, "http", "ftp", 1): "config key connectionString (from ACR_REGISTRY_CONNECTION_STRING) is not valid: field ParentEndpointProtocol",
		"ACR_REGISTRY_CONNECTION_STRING=ConnectedRegistryName=x":                  "is not valid: field SyncTokenName is missing or empty",
	} {
		cfg, src, err := Load("", []string{env}, nil)
		if err == nil {
			err = cfg.Validate(src)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", env, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("error shows the password: %v", err)
		}
	}
	cfg, src, _ = Load("", []string{"ACR_REGISTRY_CONNECTION_STRING=" + cs, "OUTPOST_PARENT_URL=http://other:5000"}, nil)
	if err := cfg.Validate(src); err == nil || !strings.Contains(err.Error(), "config key parent.url") {
		t.Fatalf("connection string with parent.url: %v", err)
	}
}
