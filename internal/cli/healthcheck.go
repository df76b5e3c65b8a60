package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/outpost-registry/outpost/internal/config"
	"github.com/outpost-registry/outpost/internal/duration"
)

// defaultHealthURL is what `outpost healthcheck` probes without --url: the readiness endpoint of
// a node on the container's default address.
const defaultHealthURL = "http://127.0.0.1:8080/readyz"

// newHealthcheck is `outpost healthcheck`: one GET, exit 0 on a 2xx answer and 1 otherwise, for
// a container's HEALTHCHECK on an image that has no curl or wget.
//
// Docker reserves exit code 2 in a health check, so every failure exits 1 here, bad input
// included (unlike the other commands, which exit 2 on bad input).
func newHealthcheck(env Env) *cobra.Command {
	var rawURL, timeout, caFile string
	var insecure bool
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Probe a node's /readyz: exit 0 when it answers 2xx, 1 otherwise (for a container HEALTHCHECK)",
		Long: "Send one GET to --url and exit 0 when the answer is 2xx, 1 otherwise with a one-line reason on\n" +
			"stderr. Meant for the container image's HEALTHCHECK, whose base has no curl or wget.\n\n" +
			"Without --url it probes " + defaultHealthURL + ", or the port of " + config.EnvName("addr") + " when that\n" +
			"is set. Every failure, bad input included, exits 1: Docker reserves exit code 2 in health checks.",
		Example: "  outpost healthcheck\n" +
			"  outpost healthcheck --url https://127.0.0.1:8443/readyz --ca-file /etc/outpost/ca.pem --timeout PT3S",
		// No positional arguments; checked in RunE so that they exit 1, not 2.
		Args: nil,
	}
	f := cmd.Flags()
	f.StringVar(&rawURL, "url", "", "the URL to GET; default "+defaultHealthURL+" (the port of "+config.EnvName("addr")+" when set)")
	f.StringVar(&timeout, "timeout", "PT5S", "how long the whole request may take, ISO 8601 (PT5S) or Go form (5s)")
	f.StringVar(&caFile, "ca-file", "", "PEM certificates to trust for an https URL, besides the system's")
	f.BoolVar(&insecure, "insecure-skip-verify", false, "do not verify the server's certificate for an https URL")
	// Flag errors exit 1 as well (see above): this overrides the root's usage-error wrapping.
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("healthcheck takes no arguments, got %q: use --url", strings.Join(args, " "))
		}
		target := rawURL
		if target == "" {
			target = healthURLFromEnv(env.Environ)
		}
		return probe(cmd.Context(), target, timeout, caFile, insecure)
	}
	return cmd
}

// healthURLFromEnv is the default URL: the port of OUTPOST_ADDR on 127.0.0.1 when it is set
// (the container may run the node on another port), else defaultHealthURL.
func healthURLFromEnv(environ []string) string {
	name := config.EnvName("addr") + "="
	addr := ""
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, name); ok {
			addr = strings.TrimSpace(v)
		}
	}
	if addr == "" {
		return defaultHealthURL
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return defaultHealthURL
	}
	return "http://" + net.JoinHostPort("127.0.0.1", port) + "/readyz"
}

// probe sends one GET to target and returns nil on a 2xx answer, or why not in one line.
func probe(ctx context.Context, target, timeout, caFile string, insecure bool) error {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("flag --url: %q: expected an http:// or https:// URL such as %s", target, defaultHealthURL)
	}
	d, err := duration.Parse(timeout)
	if err != nil {
		return fmt.Errorf("flag --timeout: %v", err)
	}
	if d <= 0 {
		return fmt.Errorf("flag --timeout: %q: must be more than zero", timeout)
	}
	if u.Scheme == "http" && (caFile != "" || insecure) {
		return fmt.Errorf("flags --ca-file and --insecure-skip-verify are for an https URL, and --url is %s", u.Redacted())
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if caFile != "" {
		pool, err := loadCAFile(caFile)
		if err != nil {
			return fmt.Errorf("flag --ca-file: %v", err)
		}
		tlsConf.RootCAs = pool
	}
	tr := &http.Transport{
		Proxy:             nil, // a health check talks to the node itself, whatever HTTP_PROXY says
		DialContext:       (&net.Dialer{Timeout: d.Std()}).DialContext,
		TLSClientConfig:   tlsConf,
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// A redirect is an answer too: report it, do not follow it somewhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, d.Std())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("flag --url: %v", err)
	}
	req.Header.Set("User-Agent", "outpost-healthcheck")
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return fmt.Errorf("unhealthy: GET %s: no answer within %s", u.Redacted(), d)
		}
		return fmt.Errorf("unhealthy: GET %s: %v", u.Redacted(), unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		detail := oneLine(string(body))
		if detail != "" {
			detail = ": " + clipText(detail)
		}
		return fmt.Errorf("unhealthy: GET %s answered %s%s", u.Redacted(), resp.Status, detail)
	}
	return nil
}

// unwrapURLError drops net/http's "Get \"URL\": " prefix, which the message already carries.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
