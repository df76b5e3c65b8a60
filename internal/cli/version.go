package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/outpost-registry/outpost/internal/version"
)

func newVersion(env Env) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := map[string]string{"version": version.Version, "commit": version.Commit, "go": version.GoVersion()}
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			case "text", "":
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "outpost %s (commit %s, %s)\n", v["version"], v["commit"], v["go"])
				return err
			default:
				return usageError{fmt.Errorf("flag -o/--output: %q is not an output format: expected text or json", output)}
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
