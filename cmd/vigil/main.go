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
	root.AddCommand(runCmd(), reloadCmd(), statusCmd(), checkCmd(), importCmd(), manifestCmd(), realserverCmd(), versionCmd(), demoCmd(), scanCmd(), arpAuditCmd(), dnsCmd())
	return root
}
