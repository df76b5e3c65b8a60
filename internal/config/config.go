// Package config is Outpost's typed configuration: defaults, one YAML file, OUTPOST_* environment
// variables and flags, in that order of precedence from lowest to highest, and Validate.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-registry/outpost/internal/duration"
)

// Config is the whole configuration of one node. Every leaf is addressed by its key path, the
// yaml names joined with dots ("log.level"), and can be set by the environment variable
// OUTPOST_ + the key path in upper case with dots as underscores (OUTPOST_LOG_LEVEL).
type Config struct {
	// Addr is the listen address of the HTTP(S) server.
	Addr string `yaml:"addr"`
	// DataDir holds everything the node stores: registry content and Outpost's own state.
	DataDir string `yaml:"dataDir"`
	// ShutdownTimeout bounds how long in-flight requests may run after SIGTERM.
	ShutdownTimeout duration.Duration `yaml:"shutdownTimeout"`
	Log             Log               `yaml:"log"`
	TLS             TLS               `yaml:"tls"`
	// ConnectionString activates the node as a connected registry under an Outpost parent
	// (ACR_REGISTRY_CONNECTION_STRING is read too): the parent, the sync token and the name come
	// from it, what to sync and when from the parent.
	ConnectionString string `yaml:"connectionString" secret:"true"`
	// Admin is the root's administrator (a node with neither parent nor connection string).
	Admin Admin `yaml:"admin"`
	// Parent is the registry this node mirrors; empty url means no parent and no sync.
	Parent Parent `yaml:"parent"`
	Sync   Sync   `yaml:"sync"`
	Mirror Mirror `yaml:"mirror"`
	Auth   Auth   `yaml:"auth"`
}

// Auth configures who may use the node. Every /v2 and /acr request needs credentials (the
// admin, a token, a sync token) unless listed here.
type Auth struct {
	// AnonymousPull are repository patterns ("public/*", "library/alpine", "*") anyone may
	// pull without credentials. Empty: none.
	AnonymousPull []string `yaml:"anonymousPull"`
	// TrustedProxies are reverse proxies (IP addresses or CIDR prefixes) whose X-Forwarded-For
	// names the client, for the limit on failed logins per client address.
	TrustedProxies []string `yaml:"trustedProxies"`
}

// Mirror configures how the node answers containerd and K3s when they use it as a registry
// mirror: they request /v2/<repository>/...?ns=<upstream host>.
type Mirror struct {
	// Namespaces maps an upstream registry host (the ns parameter, "docker.io", "ghcr.io",
	// "registry.example:5000") to the local repository prefix its repositories are stored under:
	// "" keeps the name (docker.io: "" serves library/alpine as library/alpine), "ghcr" serves
	// ghcr.io's org/app as ghcr/org/app. An ns not listed here is served as if mapped to "".
	// From the environment: OUTPOST_MIRROR_NAMESPACES=docker.io=,ghcr.io=ghcr.
	Namespaces map[string]string `yaml:"namespaces,omitempty"`
}

// Admin sets the root's admin password at its first start; later starts keep the stored hash.
type Admin struct {
	Password string `yaml:"password" secret:"true"`
}

// Parent is the upstream registry: any OCI registry reached through /v2.
type Parent struct {
	// URL is the parent's base URL, http:// or https://, without a path.
	URL      string `yaml:"url"`
	Username string `yaml:"username"`
	Password string `yaml:"password" secret:"true"`
	// CAFile is a PEM bundle of certificate authorities trusted for the parent, besides the
	// system's.
	CAFile             string `yaml:"caFile"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
}

// Sync says what to mirror from the parent, when, and how.
type Sync struct {
	// Repositories are exact names or patterns: "team/*" (one level), "team/**" (any depth),
	// "*" (every repository the parent's catalog lists).
	Repositories []string `yaml:"repositories"`
	Tags         Tags     `yaml:"tags"`
	// Platforms limits image indexes to these os/arch[/variant]; empty means all.
	Platforms []string `yaml:"platforms"`
	// Referrers also mirrors the referrers (signatures, SBOMs) of every synced manifest.
	Referrers bool `yaml:"referrers"`
	// Schedule is a 5-field cron expression in UTC; each firing opens a sync window.
	Schedule string `yaml:"schedule"`
	// Window is how long the link may be used after each firing; zero means until the pass ends.
	Window duration.Duration `yaml:"window"`
	// ChunkSizeMiB is the size of each ranged blob request, and so the most bytes a drop can cost.
	ChunkSizeMiB int `yaml:"chunkSizeMiB"`
	// BandwidthKiBps caps all traffic to and from the parent; zero means no cap.
	BandwidthKiBps int `yaml:"bandwidthKiBps"`
	// Parallelism is how many blobs are fetched at once.
	Parallelism int `yaml:"parallelism"`
	// StallTimeout abandons and retries a transfer from the parent that delivers no byte for
	// this long (the link is up but carries nothing).
	StallTimeout duration.Duration `yaml:"stallTimeout"`
	// GCSchedule, when set, runs garbage collection on this 5-field cron schedule (UTC).
	GCSchedule string `yaml:"gcSchedule"`
	// Delta lets layers come as deltas against layers the node holds, when the parent is an
	// Outpost node that offers them (a connected registry's parent can also turn it off).
	Delta bool `yaml:"delta"`
}

// Tags filters the tags to mirror by regular expressions matched against the whole tag.
type Tags struct {
	Include []string `yaml:"include"`
	Exclude []string `yaml:"exclude"`
}

// Log configures the node's logs.
type Log struct {
	// Level is one of debug, info, warn, error.
	Level string `yaml:"level"`
	// Format is json, console, or auto (console on a terminal, json otherwise).
	Format string `yaml:"format"`
}

// TLS enables HTTPS: with the certificate and key files (re-read when they change), or with a
// self-signed certificate generated at the first start.
type TLS struct {
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
	// SelfSigned generates a certificate and key in the data directory at the first start
	// (its SHA-256 fingerprint is logged at every start) and serves HTTPS with it.
	SelfSigned bool `yaml:"selfSigned"`
	// Hosts are the names and addresses the self-signed certificate is for; default: this
	// machine's host name, localhost, 127.0.0.1 and ::1.
	Hosts []string `yaml:"hosts"`
}

// Default returns the configuration used where nothing else is set.
func Default() Config {
	return Config{
		Addr:            ":8080",
		DataDir:         "./data",
		ShutdownTimeout: duration.Duration(30 * time.Second),
		Log:             Log{Level: "info", Format: "auto"},
		Sync: Sync{
			Referrers:    true,
			Schedule:     "* * * * *",
			ChunkSizeMiB: 1,
			Parallelism:  2,
			StallTimeout: duration.Duration(time.Minute),
			Delta:        true,
		},
		// A reverse proxy on the same machine (nginx beside the node) forwards client addresses.
		Auth: Auth{TrustedProxies: []string{"127.0.0.0/8", "::1"}},
	}
}

// LogLevels are the accepted values of log.level.
var LogLevels = []string{"debug", "info", "warn", "error"}

// LogFormats are the accepted values of log.format.
var LogFormats = []string{"auto", "json", "console"}

// Validate checks every value and returns the first problem as an *Error naming the key and
// where its value came from (src may be nil).
func (c *Config) Validate(src Sources) error {
	fail := func(key, format string, args ...any) error {
		return &Error{Key: key, Source: src[key], Msg: fmt.Sprintf(format, args...)}
	}
	if err := validateAddr(c.Addr); err != nil {
		return fail("addr", "%v", err)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		return fail("dataDir", "must not be empty: expected a directory path such as ./data")
	}
	if c.ShutdownTimeout.Std() <= 0 || c.ShutdownTimeout.Std() > time.Hour {
		return fail("shutdownTimeout", "%s is out of range: expected more than zero and at most PT1H", c.ShutdownTimeout)
	}
	if !oneOf(c.Log.Level, LogLevels) {
		return fail("log.level", "%q is not a log level: expected one of %s", c.Log.Level, strings.Join(LogLevels, ", "))
	}
	if !oneOf(c.Log.Format, LogFormats) {
		return fail("log.format", "%q is not a log format: expected one of %s", c.Log.Format, strings.Join(LogFormats, ", "))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		if c.TLS.CertFile == "" {
			return fail("tls.certFile", "is empty but tls.keyFile is set: HTTPS needs both a certificate and a key")
		}
		return fail("tls.keyFile", "is empty but tls.certFile is set: HTTPS needs both a certificate and a key")
	}
	if c.TLS.SelfSigned && c.TLS.CertFile != "" {
		return fail("tls.selfSigned", "is true but tls.certFile is set too: use either your certificate or a generated one")
	}
	for i, h := range c.TLS.Hosts {
		if net.ParseIP(h) == nil && !validHostname(h) {
			return fail("tls.hosts", "entry %d %q is not a host name or IP address", i+1, h)
		}
	}
	for i, p := range c.Auth.AnonymousPull {
		if err := ValidateRepositoryPattern(p); err != nil {
			return fail("auth.anonymousPull", "entry %d %v", i+1, err)
		}
	}
	for i, p := range c.Auth.TrustedProxies {
		if _, err := netip.ParsePrefix(strings.TrimSpace(p)); err != nil {
			if _, err := netip.ParseAddr(strings.TrimSpace(p)); err != nil {
				return fail("auth.trustedProxies", "entry %d %q is not an IP address or CIDR prefix such as 10.0.0.0/8", i+1, p)
			}
		}
	}
	if err := validateNamespaces(c.Mirror.Namespaces); err != nil {
		return fail("mirror.namespaces", "%v", err)
	}
	return c.validateSync(fail)
}

// repoPrefixRE is a repository name as distribution accepts it (lower-case path components
// separated by "/", each component's words joined by ".", "_", "__" or dashes).
var repoPrefixRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// ValidMirrorPrefix reports whether p may be a mirror.namespaces value: empty, or a repository
// name without leading or trailing "/".
func ValidMirrorPrefix(p string) bool { return p == "" || len(p) <= 200 && repoPrefixRE.MatchString(p) }

func validateNamespaces(ns map[string]string) error {
	hosts := make([]string, 0, len(ns))
	for h := range ns {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		if !validRegistryHost(h) {
			return fmt.Errorf("%q is not a registry host: expected a host name with an optional port, such as docker.io or registry.example:5000", h)
		}
		if p := ns[h]; !ValidMirrorPrefix(p) {
			return fmt.Errorf("%q (for %s) is not a repository prefix: expected lower-case path components such as ghcr or mirrors/ghcr, or \"\" to keep names as they are", p, h)
		}
	}
	return nil
}

// validRegistryHost accepts host or host:port, as image references name registries.
func validRegistryHost(h string) bool {
	host := h
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		port, err := strconv.Atoi(h[i+1:])
		if err != nil || port <= 0 || port > 65535 || h[i+1] == '+' || h[i+1] == '-' {
			return false
		}
		host = h[:i]
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		return net.ParseIP(host[1:len(host)-1]) != nil
	}
	return host != "" && validHostname(host)
}

func validateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not a listen address: expected host:port or :port, such as :8080 or 127.0.0.1:8080", addr)
	}
	if host != "" && net.ParseIP(strings.Trim(host, "[]")) == nil && !validHostname(host) {
		return fmt.Errorf("%q has an invalid host %q: expected an IP address or a host name", addr, host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q has an invalid port %q: expected a number from 0 to 65535", addr, port)
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

func oneOf(v string, allowed []string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

// TLSEnabled reports whether HTTPS is configured.
func (c *Config) TLSEnabled() bool {
	return c.TLS.SelfSigned || c.TLS.CertFile != "" && c.TLS.KeyFile != ""
}

// ValidRegistryHost reports whether h names a registry as image references do: a host name or
// IP address with an optional port (docker.io, registry.example:5000, [::1]:5000).
func ValidRegistryHost(h string) bool { return validRegistryHost(h) }
