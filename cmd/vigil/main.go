// Command vigil keeps a cluster's front door open: VRRP virtual IPs with
// fast failover, health checks and an L4 load balancer (BGP to come).
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "vigil:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "vigil",
		Short:         "VRRP virtual IPs, health checks and an L4 load balancer, in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), reloadCmd(), statusCmd(), backendCmd(), instanceCmd(), checkCmd(), importCmd(), manifestCmd(), realserverCmd(), versionCmd(), manCmd(), demoCmd(), scanCmd(), arpAuditCmd(), dnsCmd())
	refuseArgs(root)
	return root
}

// refuseArgs makes every command that takes no arguments refuse them: an
// argument a command ignores (vigil status api, vigil reload n1.yaml) reads
// as if it had been used. A command that takes arguments says so with its
// own Args. A group of subcommands (vigil manifest) names an unknown one
// instead of printing its help and succeeding.
func refuseArgs(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseArgs(sub)
	}
	if !c.HasParent() || c.Args != nil {
		return // the root already refuses unknown commands
	}
	if c.Runnable() {
		c.Args = cobra.NoArgs
		return
	}
	if c.HasSubCommands() {
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %q", args[0], c.CommandPath())
			}
			return c.Help()
		}
	}
}
