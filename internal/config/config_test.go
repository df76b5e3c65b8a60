package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "outpost.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsAreValid(t *testing.T) {
	cfg, src, err := Load("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(src); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if cfg.Addr != ":8080" || cfg.DataDir != "./data" || cfg.Log.Level != "info" {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "addr: 127.0.0.1:9000\nlog:\n  level: warn\n  format: json\ndataDir: /from/file\n")
	env := []string{"OUTPOST_LOG_LEVEL=error", "OUTPOST_DATADIR=/from/env", "PATH=/bin", "OUTPOST_SERVICE_HOST=10.0.0.1"}
	flags := []Override{{Key: "dataDir", Value: "/from/flag", Source: "flag --data"}}
	cfg, src, err := Load(file, env, flags)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:9000" {
		t.Errorf("addr = %q, want the file's", cfg.Addr)
	}
	if cfg.Log.Format != "json" {
		t.Errorf("log.format = %q, want the file's", cfg.Log.Format)
	}
	if cfg.Log.Level != "error" {
		t.Errorf("log.level = %q, want the environment's", cfg.Log.Level)
	}
	if cfg.DataDir != "/from/flag" {
		t.Errorf("dataDir = %q, want the flag's", cfg.DataDir)
	}
	if cfg.ShutdownTimeout.Std() != 30*time.Second {
		t.Errorf("shutdownTimeout = %v, want the default", cfg.ShutdownTimeout)
	}
	if src["addr"] != "config file "+file+" line 1" || src["log.level"] != "OUTPOST_LOG_LEVEL" || src["dataDir"] != "flag --data" {
		t.Errorf("sources = %v", src)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		env   []string
		flags []Override
		want  string
	}{
		{name: "unknown top-level key", file: "adr: :80\n", want: `config key adr (from config file FILE line 1) is not a configuration key: did you mean addr?`},
		{name: "unknown nested key", file: "log:\n  colour: red\n", want: `config key log.colour (from config file FILE line 2) is not a configuration key: expected one of log.level, log.format`},
		{name: "wrong case suggests", file: "datadir: /x\n", want: `did you mean dataDir?`},
		{name: "key twice", file: "addr: :1\naddr: :2\n", want: `config key addr (from config file FILE line 2) is set twice`},
		{name: "section not a mapping", file: "log: loud\n", want: `config key log (from config file FILE line 1) must be a mapping`},
		{name: "list for a scalar", file: "addr: [a, b]\n", want: `config key addr (from config file FILE line 1) must be a single value, not a list`},
		{name: "bad duration in file", file: "shutdownTimeout: soon\n", want: `config key shutdownTimeout (from config file FILE line 1) "soon" is not a duration`},
		{name: "not yaml", file: "addr: [\n", want: `not valid YAML`},
		{name: "top level list", file: "- a\n", want: `expected a mapping of keys to values at the top level`},
		{name: "bad duration in env", env: []string{"OUTPOST_SHUTDOWNTIMEOUT=P1M"}, want: `config key shutdownTimeout (from OUTPOST_SHUTDOWNTIMEOUT) "P1M" is not an ISO 8601 duration (years and months vary in length`},
		{name: "bad flag value", flags: []Override{{Key: "shutdownTimeout", Value: "x", Source: "flag --shutdown-timeout"}}, want: `(from flag --shutdown-timeout)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			_, _, err := Load(path, tt.env, tt.flags)
			if err == nil {
				t.Fatal("no error")
			}
			want := strings.ReplaceAll(tt.want, "FILE", path)
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q\nwant it to contain %q", err, want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func TestMissingFile(t *testing.T) {
	_, _, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("err = %v", err)
	}
}

func TestEmptyFileKeepsDefaults(t *testing.T) {
	cfg, _, err := Load(writeFile(t, "# nothing\n"), nil, nil)
	if err != nil || cfg.Addr != ":8080" {
		t.Fatalf("cfg=%+v err=%v", cfg, err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{name: "addr without port", mutate: func(c *Config) { c.Addr = "localhost" }, want: `config key addr "localhost" is not a listen address: expected host:port`},
		{name: "addr bad port", mutate: func(c *Config) { c.Addr = ":99999" }, want: `invalid port "99999"`},
		{name: "addr bad host", mutate: func(c *Config) { c.Addr = "bad_host!:80" }, want: `invalid host "bad_host!"`},
		{name: "empty data dir", mutate: func(c *Config) { c.DataDir = " " }, want: `config key dataDir must not be empty`},
		{name: "zero shutdown", mutate: func(c *Config) { c.ShutdownTimeout = 0 }, want: `config key shutdownTimeout PT0S is out of range`},
		{name: "log level", mutate: func(c *Config) { c.Log.Level = "verbose" }, want: `config key log.level "verbose" is not a log level: expected one of debug, info, warn, error`},
		{name: "log format", mutate: func(c *Config) { c.Log.Format = "xml" }, want: `config key log.format "xml" is not a log format`},
		{name: "cert without key", mutate: func(c *Config) { c.TLS.CertFile = "c.pem" }, want: `config key tls.keyFile is empty but tls.certFile is set`},
		{name: "key without cert", mutate: func(c *Config) { c.TLS.KeyFile = "k.pem" }, want: `config key tls.certFile is empty but tls.keyFile is set`},
		{name: "self-signed and a certificate", mutate: func(c *Config) { c.TLS.SelfSigned, c.TLS.CertFile, c.TLS.KeyFile = true, "c.pem", "k.pem" },
			want: `config key tls.selfSigned is true but tls.certFile is set too`},
		{name: "bad tls host", mutate: func(c *Config) { c.TLS.Hosts = []string{"edge.example", "not a host"} }, want: `config key tls.hosts entry 2 "not a host" is not a host name or IP address`},
		{name: "bad anonymous pattern", mutate: func(c *Config) { c.Auth.AnonymousPull = []string{"Public/*"} }, want: `config key auth.anonymousPull entry 1`},
		{name: "bad trusted proxy", mutate: func(c *Config) { c.Auth.TrustedProxies = []string{"10.0.0.0/8", "proxy.local"} },
			want: `config key auth.trustedProxies entry 2 "proxy.local" is not an IP address or CIDR prefix`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Default()
			tt.mutate(&cfg)
			err := cfg.Validate(nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
	cfg := Default()
	cfg.Log.Level = "loud"
	err := cfg.Validate(Sources{"log.level": "OUTPOST_LOG_LEVEL"})
	if err == nil || !strings.Contains(err.Error(), "(from OUTPOST_LOG_LEVEL)") {
		t.Fatalf("source not named: %v", err)
	}
}

func TestEnvNames(t *testing.T) {
	for key, want := range map[string]string{"log.level": "OUTPOST_LOG_LEVEL", "dataDir": "OUTPOST_DATADIR", "tls.certFile": "OUTPOST_TLS_CERTFILE"} {
		if got := EnvName(key); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", key, got, want)
		}
	}
	// Kubernetes injects OUTPOST_PORT, OUTPOST_SERVICE_HOST… for a Service named outpost: no key
	// may use those names, and unknown OUTPOST_ variables are ignored.
	for _, k := range Keys() {
		if n := EnvName(k); n == "OUTPOST_PORT" || strings.HasPrefix(n, "OUTPOST_SERVICE_") || strings.HasPrefix(n, "OUTPOST_PORT_") {
			t.Errorf("key %s collides with a Kubernetes service variable %s", k, n)
		}
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	cfg := Default()
	cfg.Addr = "127.0.0.1:1234"
	cfg.ShutdownTimeout = cfg.ShutdownTimeout * 2
	out, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	back, _, err := Load(writeFile(t, string(out)), nil, nil)
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Fatalf("round trip changed the config:\n%+v\n%+v", cfg, back)
	}
	if !strings.Contains(string(out), "shutdownTimeout: PT1M") {
		t.Fatalf("durations not printed in ISO 8601:\n%s", out)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add("addr: :8080\nlog:\n  level: debug\n")
	f.Add("shutdownTimeout: P1DT2H\ntls:\n  certFile: a\n  keyFile: b\n")
	f.Add("log: [1, 2]\n")
	f.Add("{a: {b: c}}")
	f.Fuzz(func(t *testing.T, body string) {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, src, err := Load(p, nil, nil)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error: %q", err)
			}
			return
		}
		if err := cfg.Validate(src); err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("multi-line error: %q", err)
		}
	})
}
