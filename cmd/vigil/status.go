package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/api"
)

func statusCmd() *cobra.Command {
	var output string
	var watch time.Duration
	var socket func() string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the running daemon does",
		Long: `Ask the running daemon on its control socket for its state: VRRP instances
(state, priority, master, VIPs, conflicts), GARP counters, checks, balancers
and their backends. The socket is --socket, else api.socket of the -c file
(when it reads), else the default. Exit 1 with one line if no daemon answers.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return &exitError{2, fmt.Errorf("-o %q: want table or json", output)}
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			out, sock := cmd.OutOrStdout(), socket()
			for {
				fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				snap, err := api.Fetch(fctx, sock)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return err
				}
				if watch > 0 && output == "table" {
					fmt.Fprint(out, "\033[H\033[2J")
				}
				if output == "json" {
					enc := json.NewEncoder(out)
					enc.SetIndent("", "  ")
					err = enc.Encode(snap)
				} else {
					err = api.WriteTable(out, snap, time.Now())
				}
				if err != nil || watch <= 0 {
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(watch):
				}
			}
		},
	}
	socket = socketFlags(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, "refresh at this interval until Ctrl-C (e.g. 1s)")
	return cmd
}
