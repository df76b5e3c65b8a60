package cli

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Environment variables read by the commands that call a root's admin API; a flag wins over
// its variable.
const (
	envRegistry = "OUTPOST_REGISTRY"
	envUsername = "OUTPOST_USERNAME"
	envPassword = "OUTPOST_PASSWORD"
)

// rootAPITimeout bounds one call to the root's admin API.
const rootAPITimeout = 60 * time.Second

// rootFlags are the flags shared by the commands that call a root's admin API (/acr/v1): where
// the root is, the admin's credentials, and the output format.
type rootFlags struct {
	registry, username, password, caFile, output string
	flags                                        *pflag.FlagSet
}

// addRootFlags adds the shared flags to cmd as persistent flags, for all its subcommands.
func addRootFlags(cmd *cobra.Command) *rootFlags {
	rf := &rootFlags{flags: cmd.PersistentFlags()}
	f := cmd.PersistentFlags()
	f.StringVarP(&rf.registry, "registry", "r", "", "the root's URL, such as https://root.example:8443 ("+envRegistry+" sets it too)")
	f.StringVar(&rf.username, "username", "admin", "the root's admin user ("+envUsername+" sets it too)")
	f.StringVar(&rf.password, "password", "", "the root's admin password; prefer "+envPassword+", which stays out of the process list")
	f.StringVar(&rf.caFile, "ca-file", "", "PEM file of the CA that signed the root's certificate, when a private CA did")
	f.StringVarP(&rf.output, "output", "o", "text", "output format: text or json")
	return rf
}

// checkOutput refuses an unknown output format.
func (rf *rootFlags) checkOutput() error {
	if rf.output != "text" && rf.output != "json" {
		return usageError{fmt.Errorf("flag -o/--output: %q is not an output format: expected text or json", rf.output)}
	}
	return nil
}

func (rf *rootFlags) json() bool { return rf.output == "json" }

// value is a shared flag's value if it was given, else its environment variable's if set, else
// the flag's default; source names where it came from, for error messages.
func (rf *rootFlags) value(env Env, flag, envName string) (v, source string) {
	fl := rf.flags.Lookup(flag)
	if fl.Changed {
		return fl.Value.String(), "flag --" + flag
	}
	if v, ok := lookupEnv(env.Environ, envName); ok && v != "" {
		return v, envName
	}
	return fl.Value.String(), "flag --" + flag
}

// lookupEnv returns the value of key in environ (KEY=value strings); the last one wins, as with
// a shell's environment.
func lookupEnv(environ []string, key string) (string, bool) {
	var value string
	found := false
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			value, found = v, true
		}
	}
	return value, found
}

// rootClient calls a root's admin API and explains its failures in one line.
type rootClient struct {
	api  *acrapi.Client
	url  string // the root's URL, for messages
	user string
}

// client resolves the shared flags and the environment into a client of the root's admin API.
// Missing or malformed settings are usage errors.
func (rf *rootFlags) client(env Env) (*rootClient, error) {
	raw, src := rf.value(env, "registry", envRegistry)
	if raw == "" {
		return nil, usageError{fmt.Errorf("flag --registry: the root's URL is not set: pass --registry https://host:port or set %s", envRegistry)}
	}
	base, err := parseRootURL(raw)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %v", src, err)}
	}
	user, src := rf.value(env, "username", envUsername)
	if user == "" {
		return nil, usageError{fmt.Errorf("%s: the admin user is empty", src)}
	}
	password, _ := rf.value(env, "password", envPassword)
	if password == "" {
		return nil, usageError{fmt.Errorf("flag --password: the admin password is not set: set %s (or pass --password)", envPassword)}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if rf.caFile != "" {
		pool, err := loadCAFile(rf.caFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("flag --ca-file: %v", err)}
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &rootClient{
		api: &acrapi.Client{BaseURL: base, Username: user, Password: password,
			HTTP: &http.Client{Transport: transport, Timeout: rootAPITimeout}},
		url:  base,
		user: user,
	}, nil
}

// parseRootURL checks the root's URL: http or https, a host, no credentials, query or fragment.
// It returns it without a trailing slash.
func parseRootURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return "", fmt.Errorf("%q is not the root's URL: expected http://host:port or https://host:port", clipText(redactURL(raw)))
	}
	if u.User != nil {
		return "", errors.New("the URL holds credentials: pass them with --username and " + envPassword + " (or --password) instead")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%q has a query or fragment: expected http://host:port or https://host:port", clipText(raw))
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// redactURL hides a password in a URL that could not be parsed as such.
func redactURL(raw string) string {
	if at := strings.LastIndex(raw, "@"); at >= 0 {
		if scheme := strings.Index(raw, "://"); scheme >= 0 && scheme < at {
			return raw[:scheme+3] + "xxxxx@" + raw[at+1:]
		}
		return "xxxxx@" + raw[at+1:]
	}
	return raw
}

func clipText(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// loadCAFile reads the PEM certificates of file into a pool.
func loadCAFile(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", file, unwrapPathError(err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// explain turns a failed call into one line; name is the connected registry the call was about,
// or "".
func (c *rootClient) explain(err error, kind, name string) error {
	var ae *acrapi.APIError
	if errors.As(err, &ae) {
		switch {
		case ae.Status == http.StatusUnauthorized:
			return fmt.Errorf("the root at %s refused the credentials of user %q (%s): check --username/--password or %s/%s",
				c.url, c.user, orText(ae.Code, "UNAUTHORIZED"), envUsername, envPassword)
		case ae.Message == "":
			// Not an /acr answer: some other server, or a proxy in front of the root.
			return fmt.Errorf("%s answered %d %s: is --registry the root's URL?", c.url, ae.Status, http.StatusText(ae.Status))
		case ae.Code == acrapi.CodeNotFound && strings.HasPrefix(ae.Message, "no /acr endpoint"):
			return fmt.Errorf("%s has no connected-registry admin API (%s): is --registry the root, not a connected registry?", c.url, ae.Code)
		case ae.Status == http.StatusNotFound && ae.Code == acrapi.CodeNotFound && name != "":
			return fmt.Errorf("%s %q not found (%s)", kind, name, ae.Code)
		case ae.Status >= 500:
			return fmt.Errorf("the root at %s failed: %s", c.url, ae.Error())
		default:
			return ae
		}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		var unknownCA x509.UnknownAuthorityError
		var hostErr x509.HostnameError
		switch {
		case errors.As(ue.Err, &unknownCA):
			return fmt.Errorf("the certificate of the root at %s is signed by an unknown authority: pass that CA's certificate with --ca-file", c.url)
		case errors.As(ue.Err, &hostErr):
			return fmt.Errorf("the certificate of the root at %s is not valid for that host: %v", c.url, hostErr)
		case ue.Timeout():
			return fmt.Errorf("the root at %s did not answer in time", c.url)
		}
		return fmt.Errorf("cannot reach the root at %s: %v", c.url, ue.Err)
	}
	return err
}

func orText(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
