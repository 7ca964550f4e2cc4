package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/demo"
)

func demoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Show a VIP failover in a throw-away namespace lab (needs root)",
		Long: `Build two vigil nodes and a client in network namespaces on a bridge,
show the VIP on the master, kill the master with SIGKILL, and measure how
long the client takes to reach the VIP through the backup. Everything it
creates is removed at the end, also on Ctrl-C.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			self, err := os.Executable()
			if err != nil {
				return err
			}
			return demo.Run(ctx, self, cmd.OutOrStdout())
		},
	}
}
