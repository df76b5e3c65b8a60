// Package cli is the outpost command line: it parses commands and flags and hands over to the
// packages that do the work. Every error is one line on stderr; bad input exits 2.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/outpost-registry/outpost/internal/config"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1 // the command failed at run time
	ExitUsage = 2 // bad input: a flag, a config key, a value; fix it and run again
)

// Env is what a command may read from its surroundings.
type Env struct {
	Stdout, Stderr io.Writer
	Environ        []string // KEY=value, as os.Environ returns
}

// usageError marks bad input, which exits 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

// Run executes the command line args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, env Env) int {
	root := newRoot(env)
	root.SetArgs(joinScopeMapActions(args))
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(env.Stderr, "outpost: %s\n", oneLine(err.Error()))
	var ue usageError
	var ce *config.Error
	if errors.As(err, &ue) || errors.As(err, &ce) {
		return ExitUsage
	}
	return ExitError
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func newRoot(env Env) *cobra.Command {
	root := &cobra.Command{
		Use:           "outpost",
		Short:         "Outpost: a connected OCI registry for the edge",
		SilenceErrors: true,
		SilenceUsage:  true,
		// A bare "outpost" prints help; an unknown subcommand is bad input.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newServe(env), newConfigCmd(env), newVersion(env), newSyncCmd(env), newGCCmd(env), newConnectedRegistryCmd(env), newScopeMapCmd(env), newTokenCmd(env), newHealthcheck(env), newMirrorConfigCmd(env))
	markArgsAsUsage(root)
	return root
}

// markArgsAsUsage makes argument-count errors usage errors (exit 2), like flag errors.
func markArgsAsUsage(c *cobra.Command) {
	if c.Args != nil {
		check := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markArgsAsUsage(sub)
	}
}

// nodeFlag is a command-line flag that sets a configuration key.
type nodeFlag struct {
	name, key, usage string
	boolean          bool // given alone, it means true
}

var nodeFlags = []nodeFlag{
	{name: "addr", key: "addr", usage: "listen address, host:port or :port"},
	{name: "data", key: "dataDir", usage: "data directory"},
	{name: "log-level", key: "log.level", usage: "log level: debug, info, warn or error"},
	{name: "log-format", key: "log.format", usage: "log format: json, console or auto"},
	{name: "tls-cert", key: "tls.certFile", usage: "TLS certificate file (PEM); with --tls-key, serve HTTPS"},
	{name: "tls-key", key: "tls.keyFile", usage: "TLS private key file (PEM)"},
	{name: "tls-self-signed", key: "tls.selfSigned", usage: "serve HTTPS with a self-signed certificate generated in the data directory at the first start", boolean: true},
	{name: "shutdown-timeout", key: "shutdownTimeout", usage: "how long in-flight requests may finish after SIGTERM (ISO 8601, e.g. PT30S)"},
	{name: "connection-string", key: "connectionString", usage: "activate as a connected registry under an Outpost parent (also ACR_REGISTRY_CONNECTION_STRING)"},
}

// nodeConfig holds the --config flag and the flags that set keys, for commands that load the
// node's configuration.
type nodeConfig struct {
	file  string
	flags *pflag.FlagSet
}

func addNodeFlags(cmd *cobra.Command) *nodeConfig {
	nc := &nodeConfig{flags: cmd.Flags()}
	cmd.Flags().StringVar(&nc.file, "config", "", "configuration file (YAML); OUTPOST_CONFIG names one too")
	for _, f := range nodeFlags {
		cmd.Flags().String(f.name, "", f.usage+" (config key "+f.key+")")
		if f.boolean {
			cmd.Flags().Lookup(f.name).NoOptDefVal = "true"
		}
	}
	return nc
}

// load reads the configuration: defaults, file, environment, flags; then validates it.
func (nc *nodeConfig) load(env Env) (config.Config, config.Sources, error) {
	file := nc.file
	if file == "" {
		for _, kv := range env.Environ {
			if v, ok := strings.CutPrefix(kv, "OUTPOST_CONFIG="); ok {
				file = v
			}
		}
	}
	var overrides []config.Override
	for _, f := range nodeFlags {
		if fl := nc.flags.Lookup(f.name); fl != nil && fl.Changed {
			overrides = append(overrides, config.Override{Key: f.key, Value: fl.Value.String(), Source: "flag --" + f.name})
		}
	}
	cfg, src, err := config.Load(file, env.Environ, overrides)
	if err != nil {
		return cfg, src, usageError{err}
	}
	if err := cfg.Validate(src); err != nil {
		return cfg, src, err
	}
	return cfg, src, nil
}
