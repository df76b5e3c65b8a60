package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/outpost-registry/outpost/internal/repopattern"
	"github.com/outpost-registry/outpost/pkg/acrapi"
)

// Scope maps and tokens: what clients of the registry may do, and the credentials they do it
// with, shaped like `az acr scope-map` and `az acr token`.

// repositoryFlags are the flags that take a repository and its actions.
var repositoryFlags = []string{"--repository", "--add-repository", "--remove-repository"}

// joinScopeMapActions rewrites az's form of a scope map's repository flags, where the actions
// follow the repository as separate words (--repository app/* content/read content/write), into
// one value (--repository "app/* content/read,content/write"), which a flag can hold. Only
// arguments that name an action exactly are joined, and only in a scope-map or token create
// command line.
func joinScopeMapActions(args []string) []string {
	end := slices.Index(args, "--")
	if end < 0 {
		end = len(args)
	}
	if !slices.Contains(args[:end], "scope-map") && !(slices.Contains(args[:end], "token") && slices.Contains(args[:end], "create")) {
		return args
	}
	out := make([]string, 0, len(args))
	for i := 0; i < end; i++ {
		a := args[i]
		out = append(out, a)
		var value string
		switch {
		case slices.Contains(repositoryFlags, a) && i+1 < end:
			i++
			value = args[i]
		case strings.HasPrefix(a, "--") && strings.Contains(a, "=") && slices.Contains(repositoryFlags, a[:strings.Index(a, "=")]):
			out = out[:len(out)-1]
			a, value, _ = strings.Cut(a, "=")
			out = append(out, a)
		default:
			continue
		}
		var actions []string
		for i+1 < end && slices.Contains(acrapi.ScopeMapActions, strings.ToLower(args[i+1])) {
			i++
			actions = append(actions, args[i])
		}
		if len(actions) > 0 {
			value += " " + strings.Join(actions, ",")
		}
		out = append(out, value)
	}
	return append(out, args[end:]...)
}

// parseRepositoryActions reads the values of a repository flag: "repo action[,action…]",
// "repo=action[,action…]" or "repo action action…". Without actions, needActions refuses it.
func parseRepositoryActions(flag string, values []string, needActions bool) ([]acrapi.RepositoryActions, error) {
	var out []acrapi.RepositoryActions
	for _, v := range values {
		var repo, rest string
		if r, acts, ok := strings.Cut(v, "="); ok {
			repo, rest = strings.TrimSpace(r), acts
		} else {
			fields := strings.Fields(v)
			if len(fields) > 0 {
				repo, rest = fields[0], strings.Join(fields[1:], " ")
			}
		}
		if repo == "" {
			return nil, usageError{fmt.Errorf("flag %s: %q names no repository: expected %s REPO ACTION[,ACTION…]", flag, v, flag)}
		}
		if err := repopattern.Validate(repo); err != nil {
			return nil, usageError{fmt.Errorf("flag %s: %v", flag, err)}
		}
		actions := strings.FieldsFunc(rest, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
		if len(actions) == 0 && needActions {
			return nil, usageError{fmt.Errorf("flag %s: %q has no actions: expected %s %s ACTION[,ACTION…], the actions among %s",
				flag, repo, flag, repo, strings.Join(acrapi.ScopeMapActions, ", "))}
		}
		for i, a := range actions {
			actions[i] = strings.ToLower(a)
			if !slices.Contains(acrapi.ScopeMapActions, actions[i]) {
				return nil, usageError{fmt.Errorf("flag %s: %q on %q is not an action: expected %s", flag, a, repo, strings.Join(acrapi.ScopeMapActions, ", "))}
			}
		}
		out = append(out, acrapi.RepositoryActions{Repository: repo, Actions: actions})
	}
	return out, nil
}

const repositoryUsage = "a repository (exact name, ns/*, ns/** or *) and the actions granted on it, " +
	"as az takes them (--%[1]s app/* content/read content/write) or in one value (--%[1]s 'app/* content/read,content/write' " +
	"or --%[1]s app/*=content/read,content/write); repeat the flag for more repositories. Actions: " +
	"content/read, content/write, content/delete, metadata/read, metadata/write"

// callOn resolves the client of the root and runs f, a call about the kind (connected registry,
// scope map, token) named name, or ""; its error is explained in one line.
func (rf *rootFlags) callOn(cmd *cobra.Command, env Env, kind, name string, f func(ctx context.Context, api *acrapi.Client) error) error {
	c, err := rf.client(env)
	if err != nil {
		return err
	}
	if err := f(cmd.Context(), c.api); err != nil {
		return c.explain(err, kind, name)
	}
	return nil
}

func requireFlag(flag, value, what string) error {
	if strings.TrimSpace(value) == "" {
		return usageError{fmt.Errorf("flag %s: required: %s", flag, what)}
	}
	return nil
}

// checkTokenName checks the name of a scope map or token: 5 to 50 letters, digits and '-'.
func checkTokenName(flag, kind, name string) error {
	if err := requireFlag(flag, name, "the "+kind+"'s name"); err != nil {
		return err
	}
	ok := len(name) >= 5 && len(name) <= 50
	for _, r := range name {
		ok = ok && (r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}
	if !ok {
		return usageError{fmt.Errorf("flag %s: %q is not a %s name: 5 to 50 letters, digits and '-'", flag, name, kind)}
	}
	return nil
}

// --- scope-map ---

func newScopeMapCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scope-map",
		Short: "Manage the scope maps defined on a root: what a token may do on which repositories (like az acr scope-map)",
		Long: "Manage scope maps: each grants actions (content/read, content/write, content/delete, metadata/read,\n" +
			"metadata/write) on repositories (exact names, ns/*, ns/** or *). Tokens name one scope map.\n\n" +
			"Every subcommand calls the root's admin API: --registry (or " + envRegistry + ") is its URL, and the admin's\n" +
			"credentials come from --username/--password or " + envUsername + "/" + envPassword + ".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	rf := addRootFlags(cmd)
	cmd.AddCommand(smCreate(env, rf), smUpdate(env, rf), smShow(env, rf), smList(env, rf), smDelete(env, rf))
	return cmd
}

func smCreate(env Env, rf *rootFlags) *cobra.Command {
	var spec acrapi.ScopeMapSpec
	var repos []string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Define a scope map",
		Example: "  outpost scope-map create --name pullers --repository 'app/*' content/read metadata/read --repository base content/read\n" +
			"  outpost scope-map create --name pushers --repository 'app/**=content/read,content/write' --description 'CI pushes'",
		Args: argsHint(scopeMapHint),
	}
	f := cmd.Flags()
	f.StringVarP(&spec.Name, "name", "n", "", "the scope map's name: 5 to 50 letters, digits and '-' (required)")
	f.StringVar(&spec.Description, "description", "", "what the scope map is for")
	f.StringArrayVar(&repos, "repository", nil, fmt.Sprintf(repositoryUsage, "repository")+" (required)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := checkTokenName("--name", "scope map", spec.Name); err != nil {
			return err
		}
		var err error
		if spec.Actions, err = parseRepositoryActions("--repository", repos, true); err != nil {
			return err
		}
		if len(spec.Actions) == 0 {
			return usageError{fmt.Errorf("flag --repository: required: a repository and its actions, such as --repository 'app/*' content/read")}
		}
		var sm acrapi.ScopeMap
		if err := rf.callOn(cmd, env, "scope map", "", func(ctx context.Context, api *acrapi.Client) (err error) {
			sm, err = api.CreateScopeMap(ctx, spec)
			return err
		}); err != nil {
			return err
		}
		return rf.printScopeMap(cmd.OutOrStdout(), sm)
	}
	return cmd
}

func smUpdate(env Env, rf *rootFlags) *cobra.Command {
	var name, description string
	var repos, add, remove []string
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Change a scope map's description or actions",
		Long: "Change a scope map: --add-repository and --remove-repository add or remove actions on a repository,\n" +
			"as az does; --repository replaces every action of the scope map. A repository left without actions\n" +
			"goes; a scope map keeps at least one.",
		Example: "  outpost scope-map update --name pullers --add-repository tools/** content/read --remove-repository base content/read",
		Args:    argsHint(scopeMapHint),
	}
	f := cmd.Flags()
	f.StringVarP(&name, "name", "n", "", "the scope map's name (required)")
	f.StringVar(&description, "description", "", "what the scope map is for")
	f.StringArrayVar(&repos, "repository", nil, "replaces every action: "+fmt.Sprintf(repositoryUsage, "repository"))
	f.StringArrayVar(&add, "add-repository", nil, "actions to grant: "+fmt.Sprintf(repositoryUsage, "add-repository"))
	f.StringArrayVar(&remove, "remove-repository", nil, "actions to withdraw: "+fmt.Sprintf(repositoryUsage, "remove-repository"))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := requireFlag("--name", name, "the scope map's name"); err != nil {
			return err
		}
		var u acrapi.ScopeMapUpdate
		var err error
		if cmd.Flags().Changed("description") {
			u.Description = &description
		}
		if cmd.Flags().Changed("repository") {
			if u.Actions, err = parseRepositoryActions("--repository", repos, true); err != nil {
				return err
			}
		}
		if u.AddActions, err = parseRepositoryActions("--add-repository", add, true); err != nil {
			return err
		}
		if u.RemoveActions, err = parseRepositoryActions("--remove-repository", remove, true); err != nil {
			return err
		}
		if u.Description == nil && u.Actions == nil && len(u.AddActions)+len(u.RemoveActions) == 0 {
			return usageError{fmt.Errorf("nothing to update: pass at least one of --description, --repository, --add-repository, --remove-repository")}
		}
		var sm acrapi.ScopeMap
		if err := rf.callOn(cmd, env, "scope map", name, func(ctx context.Context, api *acrapi.Client) (err error) {
			sm, err = api.UpdateScopeMap(ctx, name, u)
			return err
		}); err != nil {
			return err
		}
		return rf.printScopeMap(cmd.OutOrStdout(), sm)
	}
	return cmd
}

func smShow(env Env, rf *rootFlags) *cobra.Command {
	return showCmd(env, rf, "scope map", "Show a scope map", scopeMapHint, (*acrapi.Client).GetScopeMap, rf.printScopeMap)
}

func smList(env Env, rf *rootFlags) *cobra.Command {
	return listCmd(env, rf, "scope map", "List the scope maps with the actions they grant", (*acrapi.Client).ListScopeMaps,
		func(tw io.Writer, all []acrapi.ScopeMap) {
			fmt.Fprintln(tw, "NAME\tACTIONS\tDESCRIPTION")
			for _, sm := range all {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", sm.Name, actionsText(sm.Actions), oneLine(orDash(sm.Description)))
			}
		})
}

// showCmd is the show subcommand of kind: --name, get, print.
func showCmd[T any](env Env, rf *rootFlags, kind, short, hint string,
	get func(api *acrapi.Client, ctx context.Context, name string) (T, error), print func(io.Writer, T) error) *cobra.Command {
	var name string
	cmd := &cobra.Command{Use: "show", Short: short, Args: argsHint(hint)}
	cmd.Flags().StringVarP(&name, "name", "n", "", "the "+kind+"'s name (required)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := requireFlag("--name", name, "the "+kind+"'s name"); err != nil {
			return err
		}
		var v T
		if err := rf.callOn(cmd, env, kind, name, func(ctx context.Context, api *acrapi.Client) (err error) {
			v, err = get(api, ctx, name)
			return err
		}); err != nil {
			return err
		}
		return print(cmd.OutOrStdout(), v)
	}
	return cmd
}

// listCmd is the list subcommand of kind: a JSON array, or a table that row writes.
func listCmd[T any](env Env, rf *rootFlags, kind, short string,
	list func(api *acrapi.Client, ctx context.Context) ([]T, error), rows func(io.Writer, []T)) *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: short, Args: cobra.NoArgs}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		var all []T
		if err := rf.callOn(cmd, env, kind, "", func(ctx context.Context, api *acrapi.Client) (err error) {
			all, err = list(api, ctx)
			return err
		}); err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		if rf.json() {
			if all == nil {
				all = []T{}
			}
			return writeJSON(w, all)
		}
		if len(all) == 0 {
			_, err := fmt.Fprintf(w, "no %ss\n", kind)
			return err
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		rows(tw, all)
		return tw.Flush()
	}
	return cmd
}

func smDelete(env Env, rf *rootFlags) *cobra.Command {
	return deleteCmd(env, rf, "scope map", "Delete a scope map that no token uses", func(ctx context.Context, api *acrapi.Client, name string) error {
		return api.DeleteScopeMap(ctx, name)
	})
}

// deleteCmd is the delete subcommand of kind.
func deleteCmd(env Env, rf *rootFlags, kind, short string, del func(ctx context.Context, api *acrapi.Client, name string) error) *cobra.Command {
	var name string
	cmd := &cobra.Command{Use: "delete", Short: short, Long: short + ". It never asks for confirmation; --yes is accepted as az accepts it.",
		Args: argsHint("name the " + kind + " with --name")}
	cmd.Flags().StringVarP(&name, "name", "n", "", "the "+kind+"'s name (required)")
	cmd.Flags().BoolP("yes", "y", false, "do not prompt for confirmation (never needed: delete does not prompt)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := requireFlag("--name", name, "the "+kind+"'s name"); err != nil {
			return err
		}
		if err := rf.callOn(cmd, env, kind, name, func(ctx context.Context, api *acrapi.Client) error { return del(ctx, api, name) }); err != nil {
			return err
		}
		if rf.json() {
			return writeJSON(cmd.OutOrStdout(), map[string][]string{"deleted": {name}})
		}
		_, err := fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", name)
		return err
	}
	return cmd
}

func actionsText(acts []acrapi.RepositoryActions) string {
	var parts []string
	for _, ra := range acts {
		parts = append(parts, ra.Repository+": "+strings.Join(ra.Actions, ","))
	}
	return orDash(strings.Join(parts, "; "))
}

func (rf *rootFlags) printScopeMap(w io.Writer, sm acrapi.ScopeMap) error {
	if rf.json() {
		return writeJSON(w, sm)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, oneLine(v)) }
	row("name", sm.Name)
	row("description", orDash(sm.Description))
	for _, ra := range sm.Actions {
		row("repository", ra.Repository+" "+strings.Join(ra.Actions, ", "))
	}
	row("created", sm.CreatedAt.Format(time.RFC3339))
	row("updated", sm.UpdatedAt.Format(time.RFC3339))
	return tw.Flush()
}

// --- token ---

func newTokenCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage the tokens defined on a root: client credentials limited by a scope map (like az acr token)",
		Long: "Manage tokens: credentials for clients of the registry, each with two passwords (so one can be\n" +
			"rotated while the other is in use) and the scope map that says what it may do. Passwords are\n" +
			"shown once, when generated; the root keeps only their hashes.\n\n" +
			"Every subcommand calls the root's admin API: --registry (or " + envRegistry + ") is its URL, and the admin's\n" +
			"credentials come from --username/--password or " + envUsername + "/" + envPassword + ".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	rf := addRootFlags(cmd)
	credential := &cobra.Command{
		Use:   "credential",
		Short: "Generate a token's passwords",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	credential.AddCommand(tokenCredentialGenerate(env, rf))
	cmd.AddCommand(tokenCreate(env, rf), tokenUpdate(env, rf), tokenShow(env, rf), tokenList(env, rf), tokenDelete(env, rf), credential)
	return cmd
}

// checkStatus returns the status's canonical spelling.
func checkStatus(status string) (string, error) {
	switch s := strings.ToLower(strings.TrimSpace(status)); s {
	case acrapi.TokenStatusEnabled, acrapi.TokenStatusDisabled:
		return s, nil
	}
	return "", usageError{fmt.Errorf("flag --status: %q: expected enabled or disabled", status)}
}

func tokenCreate(env Env, rf *rootFlags) *cobra.Command {
	var req acrapi.TokenCreate
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Define a token and generate its password1, shown this once",
		Example: "  outpost token create --name ci-pusher --scope-map pushers -o json\n" +
			"  outpost token create --name kiosk1 --scope-map pullers --status disabled --no-passwords\n" +
			"  outpost token create --name puller1 --repository 'app/*' content/read metadata/read",
		Args: argsHint("name the token with --name"),
	}
	var repos []string
	f := cmd.Flags()
	f.StringVarP(&req.Name, "name", "n", "", "the token's name, its user name: 5 to 50 letters, digits and '-' (required)")
	f.StringVar(&req.ScopeMap, "scope-map", "", "the scope map that says what the token may do (this or --repository)")
	f.StringArrayVar(&repos, "repository", nil, fmt.Sprintf(repositoryUsage, "repository")+
		": creates the scope map NAME-scope-map with these actions, as az does (this or --scope-map)")
	f.StringVar(&req.Status, "status", acrapi.TokenStatusEnabled, "enabled or disabled")
	f.BoolVar(&req.NoPasswords, "no-passwords", false, "do not generate password1 (token credential generate makes passwords later)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := checkTokenName("--name", "token", req.Name); err != nil {
			return err
		}
		var sm *acrapi.ScopeMapSpec
		switch {
		case len(repos) > 0 && req.ScopeMap != "":
			return usageError{fmt.Errorf("flags --scope-map and --repository: pass one: a token has one scope map, named or made from --repository")}
		case len(repos) > 0:
			actions, err := parseRepositoryActions("--repository", repos, true)
			if err != nil {
				return err
			}
			req.ScopeMap = req.Name + "-scope-map"
			sm = &acrapi.ScopeMapSpec{Name: req.ScopeMap, Description: "made by token create --name " + req.Name, Actions: actions}
		default:
			if err := requireFlag("--scope-map", req.ScopeMap, "the scope map that says what the token may do (or --repository REPO ACTION…)"); err != nil {
				return err
			}
		}
		var err error
		if req.Status, err = checkStatus(req.Status); err != nil {
			return err
		}
		var tok acrapi.Token
		if err := rf.callOn(cmd, env, "token", "", func(ctx context.Context, api *acrapi.Client) (err error) {
			if sm != nil {
				if _, err := api.CreateScopeMap(ctx, *sm); err != nil {
					return err
				}
			}
			if tok, err = api.CreateToken(ctx, req); err != nil && sm != nil {
				_ = api.DeleteScopeMap(ctx, sm.Name) // made for this token only
			}
			return err
		}); err != nil {
			return err
		}
		return rf.printToken(cmd.OutOrStdout(), tok)
	}
	return cmd
}

func tokenUpdate(env Env, rf *rootFlags) *cobra.Command {
	var name, scopeMap, status string
	cmd := &cobra.Command{
		Use:     "update",
		Short:   "Change a token's scope map or status",
		Example: "  outpost token update --name kiosk1 --status enabled --scope-map pullers",
		Args:    argsHint("name the token with --name"),
	}
	f := cmd.Flags()
	f.StringVarP(&name, "name", "n", "", "the token's name (required)")
	f.StringVar(&scopeMap, "scope-map", "", "the scope map that says what the token may do")
	f.StringVar(&status, "status", "", "enabled or disabled")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := requireFlag("--name", name, "the token's name"); err != nil {
			return err
		}
		var u acrapi.TokenUpdate
		if cmd.Flags().Changed("scope-map") {
			if err := requireFlag("--scope-map", scopeMap, "the scope map that says what the token may do"); err != nil {
				return err
			}
			u.ScopeMap = &scopeMap
		}
		if cmd.Flags().Changed("status") {
			s, err := checkStatus(status)
			if err != nil {
				return err
			}
			u.Status = &s
		}
		if u.ScopeMap == nil && u.Status == nil {
			return usageError{fmt.Errorf("nothing to update: pass --scope-map or --status (passwords: token credential generate)")}
		}
		var tok acrapi.Token
		if err := rf.callOn(cmd, env, "token", name, func(ctx context.Context, api *acrapi.Client) (err error) {
			tok, err = api.UpdateToken(ctx, name, u)
			return err
		}); err != nil {
			return err
		}
		return rf.printToken(cmd.OutOrStdout(), tok)
	}
	return cmd
}

func tokenShow(env Env, rf *rootFlags) *cobra.Command {
	return showCmd(env, rf, "token", "Show a token: its scope map, status and passwords' dates (never their values)",
		"name the token with --name", (*acrapi.Client).GetToken, rf.printToken)
}

func tokenList(env Env, rf *rootFlags) *cobra.Command {
	return listCmd(env, rf, "token", "List the tokens with their scope maps and status", (*acrapi.Client).ListTokens,
		func(tw io.Writer, all []acrapi.Token) {
			fmt.Fprintln(tw, "NAME\tSCOPE MAP\tSTATUS\tPASSWORDS")
			for _, t := range all {
				var names []string
				for _, p := range t.Passwords {
					names = append(names, p.Name)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.ScopeMap, t.Status, orDash(strings.Join(names, ",")))
			}
		})
}

func tokenDelete(env Env, rf *rootFlags) *cobra.Command {
	return deleteCmd(env, rf, "token", "Delete a token that no connected registry names as a client token",
		func(ctx context.Context, api *acrapi.Client, name string) error { return api.DeleteToken(ctx, name) })
}

// parseExpiration reads an expiration: RFC 3339, or ISO 8601 without zone (UTC) or a date
// (its midnight UTC).
func parseExpiration(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, usageError{fmt.Errorf("flag --expiration: %q is not a date and time: expected RFC 3339 or ISO 8601, such as 2027-01-31T00:00:00Z or 2027-01-31", v)}
}

func tokenCredentialGenerate(env Env, rf *rootFlags) *cobra.Command {
	var name, expiration string
	var p1, p2 bool
	var days int
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Generate password1 or password2 (or both) of a token, shown this once",
		Long: "Generate a new password in slot 1 or 2 of a token (both with --password1 --password2). The password\n" +
			"in that slot before is no longer valid; the other slot's stays valid, so clients can move to a new\n" +
			"password without downtime. The password is shown this once: the root keeps only its hash.",
		Example: "  outpost token credential generate --name ci-pusher --password2 --expiration 2027-01-31T00:00:00Z\n" +
			"  outpost token credential generate --name ci-pusher --password1 --expiration-in-days 30 -o json",
		Args: argsHint("name the token with --name"),
	}
	f := cmd.Flags()
	f.StringVarP(&name, "name", "n", "", "the token's name (required)")
	f.BoolVar(&p1, "password1", false, "generate password1")
	f.BoolVar(&p2, "password2", false, "generate password2")
	f.StringVar(&expiration, "expiration", "", "when the password expires: RFC 3339 or ISO 8601 (UTC unless it says otherwise); default never")
	f.IntVar(&days, "expiration-in-days", 0, "days from now until the password expires; default never")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := rf.checkOutput(); err != nil {
			return err
		}
		if err := requireFlag("--name", name, "the token's name"); err != nil {
			return err
		}
		if !p1 && !p2 {
			return usageError{fmt.Errorf("flag --password1 or --password2: required: which of the token's two passwords to generate")}
		}
		var expiry *time.Time
		switch {
		case cmd.Flags().Changed("expiration") && cmd.Flags().Changed("expiration-in-days"):
			return usageError{fmt.Errorf("flags --expiration and --expiration-in-days: pass one or the other")}
		case cmd.Flags().Changed("expiration"):
			t, err := parseExpiration(expiration)
			if err != nil {
				return err
			}
			if !t.After(time.Now()) {
				return usageError{fmt.Errorf("flag --expiration: %s is not in the future", t.Format(time.RFC3339))}
			}
			expiry = &t
		case cmd.Flags().Changed("expiration-in-days"):
			if days < 1 {
				return usageError{fmt.Errorf("flag --expiration-in-days: %d: expected 1 or more", days)}
			}
			t := time.Now().UTC().Add(time.Duration(days) * 24 * time.Hour).Truncate(time.Second)
			expiry = &t
		}
		out := acrapi.TokenCredentials{Username: name}
		for _, slot := range []int{1, 2} {
			if (slot == 1 && !p1) || (slot == 2 && !p2) {
				continue
			}
			if err := rf.callOn(cmd, env, "token", name, func(ctx context.Context, api *acrapi.Client) error {
				c, err := api.GenerateTokenPassword(ctx, name, acrapi.TokenCredentialsRequest{Password: slot, Expiry: expiry})
				out.Username = c.Username
				out.Passwords = append(out.Passwords, c.Passwords...)
				return err
			}); err != nil {
				return err
			}
		}
		return rf.printCredentials(cmd.OutOrStdout(), out)
	}
	return cmd
}

func (rf *rootFlags) printCredentials(w io.Writer, c acrapi.TokenCredentials) error {
	if rf.json() {
		return writeJSON(w, c)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "username:\t%s\n", c.Username)
	for _, p := range c.Passwords {
		fmt.Fprintf(tw, "%s:\t%s\n", p.Name, p.Value)
		fmt.Fprintf(tw, "%s expiry:\t%s\n", p.Name, timeText(p.Expiry))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, "passwords are shown this once: store them now")
	return err
}

func (rf *rootFlags) printToken(w io.Writer, t acrapi.Token) error {
	if rf.json() {
		return writeJSON(w, t)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, oneLine(v)) }
	row("name", t.Name)
	row("scope map", t.ScopeMap)
	row("status", t.Status)
	shown := false
	for _, p := range t.Passwords {
		if p.Value != "" {
			row(p.Name, p.Value)
			shown = true
		}
		row(p.Name+" created", p.CreatedAt.Format(time.RFC3339))
		row(p.Name+" expiry", timeText(p.Expiry))
	}
	if len(t.Passwords) == 0 {
		row("passwords", "- (token credential generate makes them)")
	}
	row("created", t.CreatedAt.Format(time.RFC3339))
	row("updated", t.UpdatedAt.Format(time.RFC3339))
	if err := tw.Flush(); err != nil {
		return err
	}
	if shown {
		_, err := fmt.Fprintln(w, "passwords are shown this once: store them now")
		return err
	}
	return nil
}

const scopeMapHint = "name the scope map with --name; give a repository's actions after it (--repository app/* content/read content/write), " +
	"or in one value (--repository 'app/* content/read,content/write')"
