package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/outpost-registry/outpost/internal/cronexpr"
	"github.com/outpost-registry/outpost/internal/duration"
	"github.com/outpost-registry/outpost/internal/repopattern"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// newConnectedRegistryCmd is `outpost connected-registry`: the root's admin API (/acr/v1) from
// the command line, shaped like `az acr connected-registry` so that its flags carry over.
func newConnectedRegistryCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "connected-registry",
		Short: "Manage the connected registries defined on a root (like az acr connected-registry)",
		Long: "Manage the connected registries defined on a root: the tree of sites that sync from it.\n\n" +
			"Every subcommand calls the root's admin API: --registry (or " + envRegistry + ") is its URL, and the admin's\n" +
			"credentials come from --username/--password or " + envUsername + "/" + envPassword + ".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	rf := addRootFlags(cmd)
	cmd.AddCommand(crCreate(env, rf), crUpdate(env, rf), crShow(env, rf), crList(env, rf), crDelete(env, rf),
		crDeactivate(env, rf), crGetSettings(env, rf), crRepo(env, rf))
	return cmd
}

// call is callOn for a call about connected registry name, or "".
func (rf *rootFlags) call(cmd *cobra.Command, env Env, name string, f func(ctx context.Context, api *acrapi.Client) error) error {
	return rf.callOn(cmd, env, "connected registry", name, f)
}

func crCreate(env Env, rf *rootFlags) *cobra.Command {
	var spec acrapi.ConnectedRegistrySpec
	var repos, tokens, notifications []string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Define a connected registry below the root or below another one",
		Example: "  outpost connected-registry create --name factory1 --repository 'app/*' --repository base --mode ReadWrite\n" +
			"  outpost connected-registry create --name line1 --parent factory1 --repository app/web,base --sync-window PT3H --sync-schedule '0 */6 * * *'",
		Args: argsHint(listHint),
	}
	f := cmd.Flags()
	f.StringVarP(&spec.Name, "name", "n", "", "the connected registry's name: 5 to 40 letters and digits, a letter first (required)")
	f.StringVarP(&spec.Parent, "parent", "p", "", "the connected registry it syncs from; empty: the root")
	f.StringArrayVar(&repos, "repository", nil, "repositories it syncs: exact names, ns/* or ns/**; repeat the flag or separate with commas (required)")
	f.StringVarP(&spec.Mode, "mode", "m", "", "ReadOnly (pull only) or ReadWrite (pushes too); default ReadOnly")
	f.StringVar(&spec.SyncSchedule, "sync-schedule", "", "when it syncs: 5-field cron expression in UTC; default \"* * * * *\"")
	f.StringVar(&spec.SyncWindow, "sync-window", "", "how long each sync may last, ISO 8601 (PT3H); default: no window, continuous sync")
	f.StringVar(&spec.SyncMessageTTL, "sync-message-ttl", "", "how long sync messages are kept, ISO 8601 (P2D); default P2D")
	f.StringVar(&spec.LogLevel, "log-level", "", "the node's log level: "+strings.Join(acrapi.LogLevels, ", ")+"; default Information")
	f.StringVar(&spec.DeltaSync, "delta-sync", "", "Enabled or Disabled: whether layers may come as deltas against layers it holds; default Enabled")
	f.StringArrayVar(&tokens, "client-tokens", nil, "client tokens allowed on it; repeat the flag or separate with commas")
	f.StringArrayVar(&notifications, "notifications", nil, "notifications it sends, such as repo:tag:push; repeat the flag or separate with commas")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := checkName("--name", spec.Name); err != nil {
			return err
		}
		if spec.Parent != "" {
			if err := checkName("--parent", spec.Parent); err != nil {
				return err
			}
		}
		spec.Repositories = listValues(repos)
		if len(spec.Repositories) == 0 {
			return usageError{fmt.Errorf("flag --repository: required: the repositories it syncs (exact names, ns/* or ns/**)")}
		}
		if err := checkRepositories(spec.Repositories); err != nil {
			return err
		}
		var err error
		if spec.Mode, err = checkMode(spec.Mode); err != nil {
			return err
		}
		if spec.SyncSchedule != "" {
			if err := checkSchedule(spec.SyncSchedule); err != nil {
				return err
			}
		}
		if spec.SyncWindow != "" {
			if err := checkDuration("--sync-window", spec.SyncWindow); err != nil {
				return err
			}
		}
		if spec.SyncMessageTTL != "" {
			if err := checkDuration("--sync-message-ttl", spec.SyncMessageTTL); err != nil {
				return err
			}
		}
		if spec.LogLevel != "" {
			if spec.LogLevel, err = checkLogLevel(spec.LogLevel); err != nil {
				return err
			}
		}
		if spec.DeltaSync != "" {
			if spec.DeltaSync, err = checkDeltaSync(spec.DeltaSync); err != nil {
				return err
			}
		}
		spec.ClientTokens, spec.Notifications = listValues(tokens), listValues(notifications)
		var cr acrapi.ConnectedRegistry
		if err := rf.call(cmd, env, "", func(ctx context.Context, api *acrapi.Client) (err error) {
			cr, err = api.CreateConnectedRegistry(ctx, spec)
			return err
		}); err != nil {
			return err
		}
		return rf.printRegistry(cmd.OutOrStdout(), cr)
	}
	return cmd
}

func crUpdate(env Env, rf *rootFlags) *cobra.Command {
	var name, schedule, window, ttl, logLevel, delta string
	var addTokens, removeTokens, addNotifications, removeNotifications []string
	cmd := &cobra.Command{
		Use:     "update",
		Short:   "Change a connected registry's schedule, window, TTL, log level, client tokens or notifications",
		Example: "  outpost connected-registry update --name line1 --sync-schedule '0 2 * * *' --sync-window PT2H --add-client-tokens pullers",
		Args:    argsHint(listHint),
	}
	f := cmd.Flags()
	f.StringVarP(&name, "name", "n", "", "the connected registry's name (required)")
	f.StringVar(&schedule, "sync-schedule", "", "when it syncs: 5-field cron expression in UTC")
	f.StringVar(&window, "sync-window", "", "how long each sync may last, ISO 8601 (PT3H); \"\": no window, continuous sync")
	f.StringVar(&ttl, "sync-message-ttl", "", "how long sync messages are kept, ISO 8601 (P2D)")
	f.StringVar(&logLevel, "log-level", "", "the node's log level: "+strings.Join(acrapi.LogLevels, ", "))
	f.StringVar(&delta, "delta-sync", "", "Enabled or Disabled: whether layers may come as deltas against layers it holds")
	f.StringArrayVar(&addTokens, "add-client-tokens", nil, "client tokens to allow; repeat the flag or separate with commas")
	f.StringArrayVar(&removeTokens, "remove-client-tokens", nil, "client tokens to remove; repeat the flag or separate with commas")
	f.StringArrayVar(&addNotifications, "add-notifications", nil, "notifications to add; repeat the flag or separate with commas")
	f.StringArrayVar(&removeNotifications, "remove-notifications", nil, "notifications to remove; repeat the flag or separate with commas")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := requireName(name); err != nil {
			return err
		}
		var u acrapi.ConnectedRegistryUpdate
		changed := cmd.Flags().Changed
		if changed("sync-schedule") {
			if err := checkSchedule(schedule); err != nil {
				return err
			}
			u.SyncSchedule = &schedule
		}
		if changed("sync-window") {
			if window != "" {
				if err := checkDuration("--sync-window", window); err != nil {
					return err
				}
			}
			u.SyncWindow = &window
		}
		if changed("sync-message-ttl") {
			if err := checkDuration("--sync-message-ttl", ttl); err != nil {
				return err
			}
			u.SyncMessageTTL = &ttl
		}
		if changed("log-level") {
			level, err := checkLogLevel(logLevel)
			if err != nil {
				return err
			}
			u.LogLevel = &level
		}
		if changed("delta-sync") {
			d, err := checkDeltaSync(delta)
			if err != nil {
				return err
			}
			u.DeltaSync = &d
		}
		u.AddClientTokens, u.RemoveClientTokens = listValues(addTokens), listValues(removeTokens)
		u.AddNotifications, u.RemoveNotifications = listValues(addNotifications), listValues(removeNotifications)
		if u.SyncSchedule == nil && u.SyncWindow == nil && u.SyncMessageTTL == nil && u.LogLevel == nil && u.DeltaSync == nil &&
			len(u.AddClientTokens)+len(u.RemoveClientTokens)+len(u.AddNotifications)+len(u.RemoveNotifications) == 0 {
			return usageError{fmt.Errorf("nothing to update: pass at least one of --sync-schedule, --sync-window, --sync-message-ttl, --log-level, --delta-sync, " +
				"--add-client-tokens, --remove-client-tokens, --add-notifications, --remove-notifications (repositories: connected-registry repo)")}
		}
		return rf.update(cmd, env, name, u)
	}
	return cmd
}

// update sends u and prints the result.
func (rf *rootFlags) update(cmd *cobra.Command, env Env, name string, u acrapi.ConnectedRegistryUpdate) error {
	var cr acrapi.ConnectedRegistry
	if err := rf.call(cmd, env, name, func(ctx context.Context, api *acrapi.Client) (err error) {
		cr, err = api.UpdateConnectedRegistry(ctx, name, u)
		return err
	}); err != nil {
		return err
	}
	return rf.printRegistry(cmd.OutOrStdout(), cr)
}

func crShow(env Env, rf *rootFlags) *cobra.Command {
	return crByName(env, rf, "show", "Show a connected registry's definition and state",
		func(ctx context.Context, api *acrapi.Client, name string) (acrapi.ConnectedRegistry, error) {
			return api.GetConnectedRegistry(ctx, name)
		},
		func(cmd *cobra.Command, cr acrapi.ConnectedRegistry) error {
			return rf.printRegistry(cmd.OutOrStdout(), cr)
		})
}

// crByName is a command that takes --name, calls op on the root and prints its answer.
func crByName(env Env, rf *rootFlags, use, short string,
	op func(ctx context.Context, api *acrapi.Client, name string) (acrapi.ConnectedRegistry, error),
	print func(cmd *cobra.Command, cr acrapi.ConnectedRegistry) error) *cobra.Command {
	var name string
	cmd := &cobra.Command{Use: use, Short: short, Args: argsHint(nameHint)}
	cmd.Flags().StringVarP(&name, "name", "n", "", "the connected registry's name (required)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := requireName(name); err != nil {
			return err
		}
		var cr acrapi.ConnectedRegistry
		if err := rf.call(cmd, env, name, func(ctx context.Context, api *acrapi.Client) (err error) {
			cr, err = op(ctx, api, name)
			return err
		}); err != nil {
			return err
		}
		return print(cmd, cr)
	}
	return cmd
}

func crList(env Env, rf *rootFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the connected registries as a tree, each below its parent, with mode, state, activation and last sync",
		Args:  cobra.NoArgs,
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		var all []acrapi.ConnectedRegistry
		if err := rf.call(cmd, env, "", func(ctx context.Context, api *acrapi.Client) (err error) {
			all, err = api.ListConnectedRegistries(ctx)
			return err
		}); err != nil {
			return err
		}
		if rf.json() {
			if all == nil {
				all = []acrapi.ConnectedRegistry{}
			}
			return writeJSON(cmd.OutOrStdout(), all)
		}
		return printTree(cmd.OutOrStdout(), all)
	}
	return cmd
}

func crDelete(env Env, rf *rootFlags) *cobra.Command {
	var name string
	var cascade bool
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Delete a connected registry (with --cascade, the ones below it too)",
		Long: "Delete a connected registry and its sync token. One with connected registries below it is refused\n" +
			"unless --cascade deletes them too. It never asks for confirmation; --yes is accepted as az accepts it.",
		Args: argsHint(nameHint),
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "the connected registry's name (required)")
	cmd.Flags().BoolVar(&cascade, "cascade", false, "delete the connected registries below it too")
	cmd.Flags().BoolP("yes", "y", false, "do not prompt for confirmation (never needed: delete does not prompt)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := requireName(name); err != nil {
			return err
		}
		var deleted []string
		if err := rf.call(cmd, env, name, func(ctx context.Context, api *acrapi.Client) (err error) {
			deleted, err = api.DeleteConnectedRegistry(ctx, name, cascade)
			return err
		}); err != nil {
			return err
		}
		if deleted == nil {
			deleted = []string{}
		}
		if rf.json() {
			return writeJSON(cmd.OutOrStdout(), map[string][]string{"deleted": deleted})
		}
		for _, d := range deleted {
			if _, err := fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", d); err != nil {
				return err
			}
		}
		return nil
	}
	return cmd
}

func crDeactivate(env Env, rf *rootFlags) *cobra.Command {
	return crByName(env, rf, "deactivate", "Deactivate a connected registry, so that another instance may activate it",
		func(ctx context.Context, api *acrapi.Client, name string) (acrapi.ConnectedRegistry, error) {
			return api.DeactivateConnectedRegistry(ctx, name)
		},
		func(cmd *cobra.Command, cr acrapi.ConnectedRegistry) error {
			if rf.json() {
				return writeJSON(cmd.OutOrStdout(), cr)
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "deactivated %s: another instance may activate it now\n", cr.Name)
			return err
		})
}

func crGetSettings(env Env, rf *rootFlags) *cobra.Command {
	var name, protocol, generate, endpoint string
	cmd := &cobra.Command{
		Use:   "get-settings",
		Short: "Generate a sync token password and print the connection string a connected registry starts with",
		Long: "Generate a new password in slot 1 or 2 of the connected registry's sync token and print the\n" +
			"connection string that carries it, as ACR_REGISTRY_CONNECTION_STRING=…, ready for an environment\n" +
			"file or an IoT Edge deployment manifest. The password in that slot before is no longer valid; the\n" +
			"other slot's stays valid, so a running node can be moved to a new password without downtime.",
		Example: "  outpost connected-registry get-settings --name line1 --parent-protocol https --generate-password 1",
		Args:    argsHint(nameHint),
	}
	f := cmd.Flags()
	f.StringVarP(&name, "name", "n", "", "the connected registry's name (required)")
	f.StringVar(&protocol, "parent-protocol", "", "http or https: how the connected registry reaches its parent (required)")
	f.StringVar(&generate, "generate-password", "", "1 or 2: which of the sync token's two passwords to generate (required)")
	f.StringVar(&endpoint, "parent-endpoint", "", "host[:port] the connected registry reaches its parent at; default: the host of --registry")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := requireName(name); err != nil {
			return err
		}
		req := acrapi.SettingsRequest{ParentProtocol: strings.ToLower(strings.TrimSpace(protocol)), ParentEndpoint: strings.TrimSpace(endpoint)}
		switch req.ParentProtocol {
		case "http", "https":
		case "":
			return usageError{fmt.Errorf("flag --parent-protocol: required: http or https, how the connected registry reaches its parent")}
		default:
			return usageError{fmt.Errorf("flag --parent-protocol: %q: expected http or https", protocol)}
		}
		switch strings.TrimSpace(generate) {
		case "1":
			req.GeneratePassword = 1
		case "2":
			req.GeneratePassword = 2
		case "":
			return usageError{fmt.Errorf("flag --generate-password: required, 1 or 2: sync token passwords are stored hashed, " +
				"so a connection string can only carry a newly generated one (the other slot stays valid)")}
		default:
			return usageError{fmt.Errorf("flag --generate-password: %q: expected 1 or 2, the sync token's password slot to regenerate", generate)}
		}
		if req.ParentEndpoint != "" {
			probe := acrapi.ConnectionString{ConnectedRegistryName: "probe", SyncTokenName: "probe", SyncTokenPassword: "probe",
				ParentGatewayEndpoint: req.ParentEndpoint, ParentEndpointProtocol: req.ParentProtocol}
			if _, err := acrapi.ParseConnectionString(probe.String()); err != nil {
				return usageError{fmt.Errorf("flag --parent-endpoint: %q: expected host or host:port, without scheme, path or ';' (the scheme is --parent-protocol)", endpoint)}
			}
		}
		var s acrapi.Settings
		if err := rf.call(cmd, env, name, func(ctx context.Context, api *acrapi.Client) (err error) {
			s, err = api.GetSettings(ctx, name, req)
			return err
		}); err != nil {
			return err
		}
		if s.ConnectionString == "" {
			return fmt.Errorf("the root answered without a connection string")
		}
		if rf.json() {
			return writeJSON(cmd.OutOrStdout(), s)
		}
		_, err := fmt.Fprintf(cmd.OutOrStdout(), "ACR_REGISTRY_CONNECTION_STRING=%s\n", s.ConnectionString)
		return err
	}
	return cmd
}

func crRepo(env Env, rf *rootFlags) *cobra.Command {
	var name string
	var add, remove []string
	cmd := &cobra.Command{
		Use:   "repo",
		Short: "Add or remove repositories a connected registry syncs",
		Long: "Add or remove repositories a connected registry syncs: `repo add` and `repo remove`, or, as az\n" +
			"does it, `repo --name N --add a,b --remove c`. A repository must lie within its parent's, and one\n" +
			"that a connected registry below still syncs cannot be removed.",
		Example: "  outpost connected-registry repo add --name line1 --repository app/api\n" +
			"  outpost connected-registry repo --name line1 --add app/api --remove app/legacy",
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "the connected registry's name (required)")
	cmd.Flags().StringArrayVar(&add, "add", nil, "repositories to add; repeat the flag or separate with commas")
	cmd.Flags().StringArrayVar(&remove, "remove", nil, "repositories to remove; repeat the flag or separate with commas")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if !cmd.Flags().Changed("name") && !cmd.Flags().Changed("add") && !cmd.Flags().Changed("remove") {
			return cmd.Help()
		}
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := requireName(name); err != nil {
			return err
		}
		u := acrapi.ConnectedRegistryUpdate{AddRepositories: listValues(add), RemoveRepositories: listValues(remove)}
		if len(u.AddRepositories)+len(u.RemoveRepositories) == 0 {
			return usageError{fmt.Errorf("flag --add or --remove: required: the repositories to add or remove")}
		}
		if err := checkRepositoriesFlag("--add", u.AddRepositories); err != nil {
			return err
		}
		if err := checkRepositoriesFlag("--remove", u.RemoveRepositories); err != nil {
			return err
		}
		return rf.update(cmd, env, name, u)
	}
	cmd.AddCommand(crRepoChange(env, rf, true), crRepoChange(env, rf, false))
	return cmd
}

// crRepoChange is `repo add` or `repo remove`.
func crRepoChange(env Env, rf *rootFlags, add bool) *cobra.Command {
	var name string
	var repos []string
	use, short := "add", "Add repositories a connected registry syncs (within its parent's)"
	if !add {
		use, short = "remove", "Stop syncing repositories (none that a connected registry below still syncs)"
	}
	cmd := &cobra.Command{Use: use, Short: short, Args: argsHint(listHint)}
	cmd.Flags().StringVarP(&name, "name", "n", "", "the connected registry's name (required)")
	cmd.Flags().StringArrayVar(&repos, "repository", nil, "repositories: exact names, ns/* or ns/**; repeat the flag or separate with commas (required)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := requireName(name); err != nil {
			return err
		}
		list := listValues(repos)
		if len(list) == 0 {
			return usageError{fmt.Errorf("flag --repository: required: the repositories to %s", cmd.Name())}
		}
		if err := checkRepositories(list); err != nil {
			return err
		}
		var u acrapi.ConnectedRegistryUpdate
		if add {
			u.AddRepositories = list
		} else {
			u.RemoveRepositories = list
		}
		return rf.update(cmd, env, name, u)
	}
	return cmd
}

// Hints for a positional argument, which these commands do not take.
const (
	listHint = "to give a flag several values, repeat it (--repository a --repository b) or separate them with commas (--repository a,b)"
	nameHint = "name the connected registry with --name"
)

// argsHint refuses positional arguments with hint.
func argsHint(hint string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unexpected argument %q: %s", args[0], hint)
		}
		return nil
	}
}

// listValues reads a repeatable flag's values, each of which may hold several separated by
// commas or spaces ("a,b" or, quoted, "a b").
func listValues(in []string) []string {
	var out []string
	for _, v := range in {
		for _, item := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) {
			if !slices.Contains(out, item) {
				out = append(out, item)
			}
		}
	}
	return out
}

func requireName(name string) error {
	if strings.TrimSpace(name) == "" {
		return usageError{fmt.Errorf("flag --name: required: the connected registry's name")}
	}
	return nil
}

// checkName checks a name flag that defines a connected registry.
func checkName(flag, name string) error {
	if flag == "--name" {
		if err := requireName(name); err != nil {
			return err
		}
	}
	if err := acrapi.ValidateRegistryName(name); err != nil {
		return usageError{fmt.Errorf("flag %s: %v", flag, err)}
	}
	return nil
}

// checkMode returns the mode's canonical spelling; "" stays "" (the root's default).
func checkMode(mode string) (string, error) {
	for _, m := range []string{acrapi.ModeReadOnly, acrapi.ModeReadWrite} {
		if strings.EqualFold(mode, m) {
			return m, nil
		}
	}
	if mode == "" {
		return "", nil
	}
	return "", usageError{fmt.Errorf("flag --mode: %q: expected ReadOnly or ReadWrite", mode)}
}

// checkDeltaSync returns the setting's canonical spelling.
func checkDeltaSync(v string) (string, error) {
	for _, d := range []string{acrapi.DeltaEnabled, acrapi.DeltaDisabled} {
		if strings.EqualFold(v, d) {
			return d, nil
		}
	}
	return "", usageError{fmt.Errorf("flag --delta-sync: %q: expected Enabled or Disabled", v)}
}

// checkLogLevel returns the level's canonical spelling.
func checkLogLevel(level string) (string, error) {
	for _, l := range acrapi.LogLevels {
		if strings.EqualFold(level, l) {
			return l, nil
		}
	}
	return "", usageError{fmt.Errorf("flag --log-level: %q: expected one of %s", level, strings.Join(acrapi.LogLevels, ", "))}
}

func checkSchedule(expr string) error {
	if _, err := cronexpr.Parse(expr); err != nil {
		return usageError{fmt.Errorf("flag --sync-schedule: %v", err)}
	}
	return nil
}

func checkDuration(flag, value string) error {
	if _, err := duration.Parse(value); err != nil {
		return usageError{fmt.Errorf("flag %s: %v", flag, err)}
	}
	return nil
}

func checkRepositories(repos []string) error { return checkRepositoriesFlag("--repository", repos) }

func checkRepositoriesFlag(flag string, repos []string) error {
	for _, r := range repos {
		if err := repopattern.Validate(r); err != nil {
			return usageError{fmt.Errorf("flag %s: %v", flag, err)}
		}
	}
	return nil
}

// printRegistry prints one connected registry: its definition and state.
func (rf *rootFlags) printRegistry(w io.Writer, cr acrapi.ConnectedRegistry) error {
	if rf.json() {
		return writeJSON(w, cr)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, oneLine(v)) }
	row("name", cr.Name)
	row("parent", orText(cr.Parent, "- (the root)"))
	row("mode", cr.Mode)
	row("repositories", listText(cr.Repositories))
	row("sync schedule", cr.SyncSchedule+" (UTC)")
	row("sync window", orText(cr.SyncWindow, "- (continuous)"))
	row("sync message TTL", cr.SyncMessageTTL)
	row("log level", cr.LogLevel)
	row("client tokens", listText(cr.ClientTokens))
	row("notifications", listText(cr.Notifications))
	row("sync token", cr.SyncTokenName)
	row("activation", cr.ActivationStatus)
	row("connection state", cr.ConnectionState)
	row("last sync", timeText(cr.LastSyncTime))
	row("last activity", timeText(cr.LastActivityTime))
	if st := cr.Status; st != nil {
		row("version", orDash(st.Version))
		row("storage used", bytesText(st.StorageUsedBytes))
		row("images held", strconv.Itoa(st.ImagesHeld))
		for _, d := range st.StatusDetails {
			row("status", fmt.Sprintf("%s %s: %s (%s)", d.Type, d.Code, d.Description, d.Timestamp.Format(time.RFC3339)))
		}
	}
	row("created", cr.CreatedAt.Format(time.RFC3339))
	row("updated", cr.UpdatedAt.Format(time.RFC3339))
	return tw.Flush()
}

// printTree prints the connected registries as a tree: each below its parent, indented.
func printTree(w io.Writer, all []acrapi.ConnectedRegistry) error {
	if len(all) == 0 {
		_, err := fmt.Fprintln(w, "no connected registries")
		return err
	}
	key := strings.ToLower // names are case-insensitive
	known := map[string]bool{}
	for _, cr := range all {
		known[key(cr.Name)] = true
	}
	children := map[string][]acrapi.ConnectedRegistry{}
	var top []acrapi.ConnectedRegistry
	for _, cr := range all {
		if p := key(cr.Parent); p != "" && known[p] && p != key(cr.Name) {
			children[p] = append(children[p], cr)
		} else {
			top = append(top, cr)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMODE\tSTATE\tACTIVATION\tLAST SYNC")
	printed := map[string]bool{}
	var walk func(level []acrapi.ConnectedRegistry, depth int)
	walk = func(level []acrapi.ConnectedRegistry, depth int) {
		for _, cr := range level {
			if printed[key(cr.Name)] {
				continue
			}
			printed[key(cr.Name)] = true
			fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\n", strings.Repeat("  ", depth), cr.Name, cr.Mode, cr.ConnectionState,
				cr.ActivationStatus, timeText(cr.LastSyncTime))
			walk(children[key(cr.Name)], depth+1)
		}
	}
	walk(top, 0)
	walk(all, 0) // a cycle, which the root never stores, would otherwise hide its members
	return tw.Flush()
}

func listText(l []string) string {
	if len(l) == 0 {
		return "-"
	}
	return strings.Join(l, ", ")
}

func timeText(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
