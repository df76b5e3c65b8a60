package e2e

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestBadInput runs the binary with one mistake at a time: each must exit 2 with exactly one line
// on stderr that starts with "outpost: " and names what to fix.
func TestBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unknownKey := writeFile("unknown-key.yaml", "addr: 127.0.0.1:0\nlisten: :9000\n")
	badLevel := writeFile("bad-level.yaml", "log:\n  level: verbose\n")
	// Tests run as root, which ignores permission bits: a regular file as the parent is what
	// reliably makes a data directory impossible to create.
	notADir := writeFile("not-a-dir", "a file, not a directory\n")
	certFile := writeFile("cert.pem", "not used: the key is missing\n")

	// A port in use: hold a listener for the whole test.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() }) // not defer: the subtests run in parallel after this function returns

	cases := []struct {
		name string
		env  []string
		args []string
		want []string // substrings of the error line
	}{
		{"unknown config key", nil, []string{"serve", "--config", unknownKey},
			[]string{"listen", "is not a configuration key", "unknown-key.yaml line 2"}},
		{"bad value in the config file", nil, []string{"serve", "--config", badLevel},
			[]string{"log.level", "verbose", "bad-level.yaml line 2"}},
		{"bad environment variable", []string{"OUTPOST_SHUTDOWNTIMEOUT=P1M"}, []string{"serve"},
			[]string{"shutdownTimeout", "OUTPOST_SHUTDOWNTIMEOUT", "P1M"}},
		{"bad memory ratio", []string{"AUTOMEMLIMIT=90%"}, []string{"serve"},
			[]string{"AUTOMEMLIMIT", "90%", "(0, 1]"}},
		{"unknown flag", nil, []string{"serve", "--no-such-flag"},
			[]string{"--no-such-flag"}},
		{"unwritable data directory", nil, []string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(notADir, "data")},
			[]string{"dataDir", "--data", "not-a-dir"}},
		{"port in use", nil, []string{"serve", "--addr", busy.Addr().String()},
			[]string{"addr", busy.Addr().String(), "in use"}},
		{"TLS certificate without key", nil, []string{"serve", "--addr", "127.0.0.1:0", "--tls-cert", certFile},
			[]string{"tls.keyFile", "tls.certFile"}},
		{"log level flag", nil, []string{"serve", "--log-level", "loud"},
			[]string{"log.level", "--log-level", "loud"}},
		{"unknown command", nil, []string{"serv"},
			[]string{"serv"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := tc.args
			// Whatever happens, a node must not listen beyond loopback or write outside the test.
			if args[0] == "serve" && !contains(args, "--data") {
				args = append(args, "--data", t.TempDir())
			}
			if args[0] == "serve" && !contains(args, "--addr") {
				args = append(args, "--addr", "127.0.0.1:0")
			}
			res := runOutpost(t, tc.env, args...)
			if res.code != 2 {
				t.Errorf("exit code %d, want 2; stderr: %q", res.code, res.stderr)
			}
			if !strings.HasPrefix(res.stderr, "outpost: ") || !strings.HasSuffix(res.stderr, "\n") || strings.Count(res.stderr, "\n") != 1 {
				t.Errorf("stderr is not exactly one line starting with \"outpost: \": %q", res.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.stderr, w) {
					t.Errorf("stderr %q does not mention %q", res.stderr, w)
				}
			}
			if res.stdout != "" {
				t.Errorf("stdout is not empty: %q", res.stdout)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestVersion checks outpost version in text and JSON.
func TestVersion(t *testing.T) {
	t.Parallel()
	res := runOutpost(t, nil, "version")
	if res.code != 0 || res.stderr != "" {
		t.Fatalf("outpost version: exit %d, stderr %q", res.code, res.stderr)
	}
	m := regexp.MustCompile(`^outpost (\S+) \(commit (\S+), (go1\.\d+(?:\.\d+)?\S*)\)\n$`).FindStringSubmatch(res.stdout)
	if m == nil {
		t.Fatalf("outpost version printed %q, want \"outpost VERSION (commit COMMIT, goX.Y.Z)\"", res.stdout)
	}

	res = runOutpost(t, nil, "version", "-o", "json")
	if res.code != 0 {
		t.Fatalf("outpost version -o json: exit %d, stderr %q", res.code, res.stderr)
	}
	var v map[string]string
	if err := json.Unmarshal([]byte(res.stdout), &v); err != nil {
		t.Fatalf("outpost version -o json printed %q: %v", res.stdout, err)
	}
	if v["version"] != m[1] || v["commit"] != m[2] || v["go"] != m[3] {
		t.Errorf("JSON version %v disagrees with the text %q", v, res.stdout)
	}
}

// TestConfigPrint checks outpost config print and the precedence flag > environment > file >
// default.
func TestConfigPrint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "outpost.yaml")
	content := "addr: 127.0.0.1:1111\ndataDir: /srv/file\nshutdownTimeout: PT10S\nlog:\n  level: debug\n  format: console\n"
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	type printedLog struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	}
	type printed struct {
		Addr            string     `yaml:"addr"`
		DataDir         string     `yaml:"dataDir"`
		ShutdownTimeout string     `yaml:"shutdownTimeout"`
		Log             printedLog `yaml:"log"`
	}
	cases := []struct {
		name string
		env  []string
		args []string
		want printed
	}{
		{"defaults", nil, nil,
			printed{":8080", "./data", "PT30S", printedLog{"info", "auto"}}},
		{"file over defaults", nil, []string{"--config", file},
			printed{"127.0.0.1:1111", "/srv/file", "PT10S", printedLog{"debug", "console"}}},
		{"file named by OUTPOST_CONFIG", []string{"OUTPOST_CONFIG=" + file}, nil,
			printed{"127.0.0.1:1111", "/srv/file", "PT10S", printedLog{"debug", "console"}}},
		{"environment over file", []string{"OUTPOST_ADDR=127.0.0.1:2222", "OUTPOST_LOG_LEVEL=warn"}, []string{"--config", file},
			printed{"127.0.0.1:2222", "/srv/file", "PT10S", printedLog{"warn", "console"}}},
		{"flag over environment over file", []string{"OUTPOST_ADDR=127.0.0.1:2222", "OUTPOST_LOG_LEVEL=warn", "OUTPOST_DATADIR=/srv/env"},
			[]string{"--config", file, "--addr", "127.0.0.1:3333", "--shutdown-timeout", "PT45S"},
			printed{"127.0.0.1:3333", "/srv/env", "PT45S", printedLog{"warn", "console"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := runOutpost(t, tc.env, append([]string{"config", "print"}, tc.args...)...)
			if res.code != 0 || res.stderr != "" {
				t.Fatalf("outpost config print: exit %d, stderr %q", res.code, res.stderr)
			}
			var got printed
			if err := yaml.Unmarshal([]byte(res.stdout), &got); err != nil {
				t.Fatalf("config print output %q: %v", res.stdout, err)
			}
			if got != tc.want {
				t.Errorf("config print:\n got %+v\nwant %+v\noutput:\n%s", got, tc.want, res.stdout)
			}
		})
	}
}
