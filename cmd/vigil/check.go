package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/config"
)

func checkCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check [FILE]",
		Short: "Validate a config file",
		Long: `Validate a config file (FILE, or -c; default /etc/vigil/vigil.yaml) and
print every problem with its key path and line. Exit status 2 on any error.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				// Both ways of naming the file, naming two files: which one
				// the operator meant is a guess, and a wrong "ok" is worse
				// than a refusal.
				if f := cmd.Flags().Lookup("config"); f.Changed && path != args[0] {
					return &exitError{2, fmt.Errorf("check: two files named: %s (argument) and %s (-c)", args[0], path)}
				}
				path = args[0]
			}
			cfg, err := config.Load(path)
			if err != nil {
				return &exitError{2, err}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s: ok\n", path)
			for _, in := range cfg.VRRP.All() {
				fmt.Fprintf(out, "  instance %s: %s vrid %d v%d priority %d interval %v vips %v\n",
					in.Name, in.Interface, in.VRID, in.Version, in.Priority, in.AdvertInterval, in.VIPs)
			}
			for _, c := range cfg.Checks {
				fmt.Fprintf(out, "  check %s: every %v, rise %d fall %d\n", c.Name, c.Interval, c.Rise, c.Fall)
			}
			for _, b := range cfg.Balancers {
				fmt.Fprintf(out, "  balancer %s: %s listen %v, %d backends, %s\n",
					b.Name, b.Mode, b.Listen, len(b.Backends), b.Algorithm)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/vigil/vigil.yaml", "config file (or give it as the argument)")
	return cmd
}
