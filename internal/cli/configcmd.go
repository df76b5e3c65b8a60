package cli

import (
	"github.com/spf13/cobra"
)

func newConfigCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect the node's configuration",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration (defaults, file, OUTPOST_* environment, flags), secrets masked",
		Args:  cobra.NoArgs,
	}
	nc := addNodeFlags(print)
	print.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, _, err := nc.load(env)
		if err != nil {
			return err
		}
		out, err := cfg.YAML()
		if err != nil {
			return err
		}
		_, err = cmd.OutOrStdout().Write(out)
		return err
	}
	cmd.AddCommand(print)
	return cmd
}
