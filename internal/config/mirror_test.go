package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestMirrorNamespaces(t *testing.T) {
	cases := []struct {
		name    string
		file    string
		env     []string
		want    map[string]string
		wantErr []string // substrings of the Load or Validate error; nil: no error
	}{
		{name: "default is empty", want: nil},
		{name: "file", file: "mirror:\n  namespaces:\n    docker.io: \"\"\n    ghcr.io: ghcr\n    quay.io:\n",
			want: map[string]string{"docker.io": "", "ghcr.io": "ghcr", "quay.io": ""}},
		{name: "env", env: []string{"OUTPOST_MIRROR_NAMESPACES=docker.io=, ghcr.io=ghcr,registry.example:5000=mirrors/example"},
			want: map[string]string{"docker.io": "", "ghcr.io": "ghcr", "registry.example:5000": "mirrors/example"}},
		{name: "env wins over file", file: "mirror:\n  namespaces:\n    ghcr.io: a\n", env: []string{"OUTPOST_MIRROR_NAMESPACES=ghcr.io=b"},
			want: map[string]string{"ghcr.io": "b"}},
		{name: "env empty clears", file: "mirror:\n  namespaces:\n    ghcr.io: a\n", env: []string{"OUTPOST_MIRROR_NAMESPACES="}, want: nil},
		{name: "env entry without =", env: []string{"OUTPOST_MIRROR_NAMESPACES=docker.io"},
			wantErr: []string{"mirror.namespaces", "OUTPOST_MIRROR_NAMESPACES", `"docker.io" is not a key=value entry`}},
		{name: "env entry without host", env: []string{"OUTPOST_MIRROR_NAMESPACES==ghcr"},
			wantErr: []string{"mirror.namespaces", "is not a key=value entry"}},
		{name: "env duplicate", env: []string{"OUTPOST_MIRROR_NAMESPACES=a.io=x,a.io=y"},
			wantErr: []string{"mirror.namespaces", `"a.io" is set twice`}},
		{name: "bad prefix", env: []string{"OUTPOST_MIRROR_NAMESPACES=ghcr.io=GHCR/"},
			wantErr: []string{"mirror.namespaces", "OUTPOST_MIRROR_NAMESPACES", `"GHCR/" (for ghcr.io) is not a repository prefix`}},
		{name: "bad host", env: []string{"OUTPOST_MIRROR_NAMESPACES=https://ghcr.io=ghcr"},
			wantErr: []string{"mirror.namespaces", `"https://ghcr.io" is not a registry host`}},
		{name: "bad host in file", file: "mirror:\n  namespaces:\n    \"ghcr io\": ghcr\n",
			wantErr: []string{"mirror.namespaces", "line 2", `"ghcr io" is not a registry host`}},
		{name: "bad port", env: []string{"OUTPOST_MIRROR_NAMESPACES=ghcr.io:99999=ghcr"},
			wantErr: []string{"is not a registry host"}},
		{name: "list in file", file: "mirror:\n  namespaces: [docker.io]\n",
			wantErr: []string{"mirror.namespaces", "line 2"}},
		{name: "nested mapping in file", file: "mirror:\n  namespaces:\n    docker.io: {a: b}\n",
			wantErr: []string{"mirror.namespaces", "mapping of strings to strings"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			cfg, src, err := Load(path, tc.env, nil)
			if err == nil {
				err = cfg.Validate(src)
			}
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, want one containing %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("multi-line error %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Mirror.Namespaces, tc.want) {
				t.Fatalf("namespaces = %#v, want %#v", cfg.Mirror.Namespaces, tc.want)
			}
		})
	}
}

func TestMirrorNamespacesRoundTrip(t *testing.T) {
	cfg := Default()
	cfg.Mirror.Namespaces = map[string]string{"docker.io": "", "ghcr.io": "ghcr"}
	out, err := cfg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	back, _, err := Load(writeFile(t, string(out)), nil, nil)
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back.Mirror, cfg.Mirror) {
		t.Fatalf("round trip changed mirror: %#v, want %#v\n%s", back.Mirror, cfg.Mirror, out)
	}
}

func TestValidRegistryHost(t *testing.T) {
	for h, want := range map[string]bool{
		"docker.io": true, "registry.example:5000": true, "localhost": true, "127.0.0.1:5000": true, "[::1]:5000": true,
		"": false, "docker.io:": false, ":5000": false, "a b": false, "docker.io:0": false, "docker.io:+5": false, "x/y": false,
	} {
		if got := validRegistryHost(h); got != want {
			t.Errorf("validRegistryHost(%q) = %v, want %v", h, got, want)
		}
	}
}
