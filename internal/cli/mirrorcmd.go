package cli

import (
	"bytes"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/outpost-registry/outpost/internal/config"
)

// mirrorOptions are the flags of outpost mirror-config.
type mirrorOptions struct {
	endpoint           string
	upstreams          []string
	caFile             string
	insecureSkipVerify bool
	// username and password are a pull token's (k3s only): Outpost asks every request for
	// credentials unless the repositories are open to anonymous pulls (auth.anonymousPull).
	username, password string
}

func newMirrorConfigCmd(env Env) *cobra.Command {
	var o mirrorOptions
	cmd := &cobra.Command{
		Use:   "mirror-config k3s|containerd --endpoint URL",
		Short: "Print the K3s registries.yaml or containerd hosts.toml that makes a node pull through Outpost",
		Long: `Print the configuration that makes a Kubernetes node pull through this Outpost node as a mirror.

k3s:        /etc/rancher/k3s/registries.yaml (restart k3s or k3s-agent after writing it)
containerd: /etc/containerd/certs.d/<upstream>/hosts.toml (with config_path = "/etc/containerd/certs.d"
            in containerd's CRI registry configuration)

containerd and K3s send ?ns=<upstream> with every mirror request; the node's mirror.namespaces maps
it to a repository prefix (by default every upstream is served under the names as they are).`,
		Example: `  outpost mirror-config k3s --endpoint https://outpost.edge.svc:8080 --ca-file /etc/outpost/ca.crt
  outpost mirror-config containerd --endpoint http://10.0.0.5:8080 --upstream ghcr.io`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"k3s", "containerd"},
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := renderMirrorConfig(args[0], o)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.Flags().StringVar(&o.endpoint, "endpoint", "", "the Outpost node's URL as the node reaches it, http(s)://host[:port] (required)")
	cmd.Flags().StringSliceVar(&o.upstreams, "upstream", []string{"docker.io"}, "upstream registry to mirror (k3s: repeatable or comma-separated; containerd: one)")
	cmd.Flags().StringVar(&o.caFile, "ca-file", "", "CA certificate file (PEM) on the node that signed the Outpost node's certificate (https endpoints)")
	cmd.Flags().BoolVar(&o.insecureSkipVerify, "insecure-skip-verify", false, "do not verify the Outpost node's certificate (https endpoints; tests only)")
	cmd.Flags().StringVar(&o.username, "username", "", "k3s: the pull token the node logs in with (outpost token create … content/read metadata/read); its password comes from "+envMirrorPassword)
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if v, ok := lookupEnv(env.Environ, envMirrorPassword); ok {
			o.password = v
		}
		return nil
	}
	return cmd
}

// renderMirrorConfig builds the output for kind "k3s" or "containerd"; bad input is a usageError.
func renderMirrorConfig(kind string, o mirrorOptions) ([]byte, error) {
	endpoint, err := parseMirrorEndpoint(o.endpoint)
	if err != nil {
		return nil, usageError{err}
	}
	if len(o.upstreams) == 0 {
		return nil, usageError{fmt.Errorf("flag --upstream: expected at least one registry host such as docker.io")}
	}
	seen := map[string]bool{}
	for _, u := range o.upstreams {
		if !config.ValidRegistryHost(u) {
			return nil, usageError{fmt.Errorf("flag --upstream: %q is not a registry host: expected a host name with an optional port, such as docker.io or ghcr.io", u)}
		}
		if seen[u] {
			return nil, usageError{fmt.Errorf("flag --upstream: %q is given twice", u)}
		}
		seen[u] = true
	}
	if endpoint.Scheme == "http" && (o.caFile != "" || o.insecureSkipVerify) {
		return nil, usageError{fmt.Errorf("flags --ca-file and --insecure-skip-verify apply to https endpoints only; %s is http", endpoint)}
	}
	if o.caFile != "" && o.insecureSkipVerify {
		return nil, usageError{fmt.Errorf("flags --ca-file and --insecure-skip-verify exclude each other: trust a CA or skip verification")}
	}
	if (o.username == "") != (o.password == "") {
		return nil, usageError{fmt.Errorf("flag --username and %s go together: the pull token's name and its password", envMirrorPassword)}
	}
	if o.username != "" && kind != "k3s" {
		return nil, usageError{fmt.Errorf("flag --username: containerd's hosts.toml holds no credentials; give the repositories to anonymous pulls (auth.anonymousPull) or configure the CRI plugin's registry auth")}
	}
	if o.caFile != "" && !filepath.IsAbs(o.caFile) {
		return nil, usageError{fmt.Errorf("flag --ca-file: %q is not an absolute path: the file is read by K3s or containerd on the node, not relative to here", o.caFile)}
	}
	switch kind {
	case "k3s":
		return renderK3s(endpoint, o)
	case "containerd":
		if len(o.upstreams) != 1 {
			return nil, usageError{fmt.Errorf("flag --upstream: containerd takes one hosts.toml per upstream (certs.d/<upstream>/hosts.toml): run once per upstream")}
		}
		return renderContainerd(endpoint, o.upstreams[0], o), nil
	default:
		return nil, usageError{fmt.Errorf("%q is not a mirror configuration kind: expected k3s or containerd", kind)}
	}
}

// parseMirrorEndpoint accepts http(s)://host[:port] with an optional trailing "/".
func parseMirrorEndpoint(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("flag --endpoint is required: the Outpost node's URL as the node reaches it, such as http://10.0.0.5:8080")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("flag --endpoint: %q is not a registry URL: expected http(s)://host[:port], such as http://10.0.0.5:8080", raw)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("flag --endpoint: %q must be http(s)://host[:port] without credentials, path or query", raw)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// envMirrorPassword holds the pull token's password for mirror-config k3s: out of the process
// list.
const envMirrorPassword = "OUTPOST_MIRROR_PASSWORD"

// k3sRegistries is K3s's /etc/rancher/k3s/registries.yaml.
type k3sRegistries struct {
	Mirrors map[string]k3sMirror `yaml:"mirrors"`
	Configs map[string]k3sConfig `yaml:"configs,omitempty"`
}

type k3sMirror struct {
	Endpoint []string `yaml:"endpoint"`
}

type k3sConfig struct {
	Auth *k3sAuth `yaml:"auth,omitempty"`
	TLS  *k3sTLS  `yaml:"tls,omitempty"`
}

type k3sAuth struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

type k3sTLS struct {
	CAFile             string `yaml:"ca_file,omitempty"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify,omitempty"`
}

func renderK3s(endpoint *url.URL, o mirrorOptions) ([]byte, error) {
	doc := k3sRegistries{Mirrors: map[string]k3sMirror{}}
	for _, u := range o.upstreams {
		doc.Mirrors[u] = k3sMirror{Endpoint: []string{endpoint.String()}}
	}
	// K3s matches configs by the endpoint's host[:port].
	var c k3sConfig
	if o.caFile != "" || o.insecureSkipVerify {
		c.TLS = &k3sTLS{CAFile: o.caFile, InsecureSkipVerify: o.insecureSkipVerify}
	}
	if o.username != "" {
		c.Auth = &k3sAuth{Username: o.username, Password: o.password}
	}
	if c.TLS != nil || c.Auth != nil {
		doc.Configs = map[string]k3sConfig{endpoint.Host: c}
	}
	var buf bytes.Buffer
	buf.WriteString("# /etc/rancher/k3s/registries.yaml: pull " + strings.Join(o.upstreams, ", ") + " through Outpost at " + endpoint.String() + "\n")
	buf.WriteString("# (merge with an existing file; restart k3s or k3s-agent to apply)\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// upstreamServer is the URL containerd falls back to for upstream: Docker Hub's API lives at
// registry-1.docker.io.
func upstreamServer(upstream string) string {
	if upstream == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + upstream
}

func renderContainerd(endpoint *url.URL, upstream string, o mirrorOptions) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# /etc/containerd/certs.d/%s/hosts.toml: pull %s through Outpost at %s\n", upstream, upstream, endpoint)
	fmt.Fprintf(&b, "server = %s\n\n", tomlString(upstreamServer(upstream)))
	fmt.Fprintf(&b, "[host.%s]\n", tomlString(endpoint.String()))
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	if o.caFile != "" {
		fmt.Fprintf(&b, "  ca = %s\n", tomlString(o.caFile))
	}
	if o.insecureSkipVerify {
		b.WriteString("  skip_verify = true\n")
	}
	return []byte(b.String())
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
