package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/config"
)

// socketFlags adds --socket and -c to a command that talks to the daemon,
// and returns how to find the socket: --socket when given, else -c's
// api.socket when the file reads, else the default.
func socketFlags(cmd *cobra.Command) func() string {
	var socket, path string
	cmd.Flags().StringVar(&socket, "socket", config.DefaultSocket, "the daemon's control socket (default: api.socket of -c)")
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/vigil/vigil.yaml", "config file whose api.socket names the socket")
	return func() string {
		if !cmd.Flags().Changed("socket") {
			if cfg, err := config.Load(path); err == nil {
				return cfg.API.Socket
			}
		}
		return socket
	}
}

func backendCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backend",
		Short: "Drain, disable or enable a proxy balancer's backend at runtime",
		Long: `Set a proxy balancer backend's admin state over the control socket:

  drain    no new connections; established ones go on (as weight 0): DRAIN
  disable  out at once: no new connections and its established ones closed:
           DISABLED (MAINT)
  enable   back to what its config and checks say

The state shows in vigil status and in vigil_backend_state. A reload keeps
it for a backend whose address stays in the config; a restart of the daemon
loses it (every backend starts enabled). Exit 1 with the daemon's reason for
an unknown balancer or backend, or a balancer of mode dsr.`,
	}
	for _, a := range []struct{ action, short string }{
		{api.AdminDrain, "Take no new connections on a backend; keep its established ones"},
		{api.AdminDisable, "Take a backend out at once, closing its connections"},
		{api.AdminEnable, "Put a drained or disabled backend back to its configured state"},
	} {
		sub := &cobra.Command{Use: a.action + " BALANCER IP:PORT", Short: a.short, Args: cobra.ExactArgs(2)}
		socket := socketFlags(sub)
		sub.RunE = func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := api.SetBackend(ctx, socket(), args[0], args[1], a.action); err != nil {
				return &exitError{1, err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "balancer %s: backend %s: %s\n", args[0], args[1], a.action)
			return nil
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

func instanceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "instance",
		Short: "Resign or resume a VRRP instance at runtime",
		Long: `Take a VRRP instance out of the election, or put it back, over the control
socket:

  resign  a master hands over now with a priority-0 advert (the best backup
          takes over after its skew time) and removes its VIPs; the
          instance then stays backup, taking nothing back, until resumed
  resume  normal election again: with preempt, an instance of the highest
          priority takes the VIPs back

maint is another name for resign (keepalived users put a node "in
maintenance" this way): one state, not two, shown by vigil status as
BACKUP (RESIGNED), its last transition "resigned by operator". A reload
keeps it; a restart of the daemon loses it. Exit 1 for an unknown instance.`,
	}
	for _, a := range []struct {
		action, short string
		aliases       []string
	}{
		{api.Resign, "Hand over with a priority-0 advert and stay backup until resumed (alias: maint)", []string{"maint"}},
		{api.Resume, "Take part in the election again", nil},
	} {
		sub := &cobra.Command{Use: a.action + " NAME", Short: a.short, Args: cobra.ExactArgs(1), Aliases: a.aliases}
		socket := socketFlags(sub)
		sub.RunE = func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := api.SetInstance(ctx, socket(), args[0], a.action); err != nil {
				return &exitError{1, err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "instance %s: %s\n", args[0], a.action)
			return nil
		}
		cmd.AddCommand(sub)
	}
	return cmd
}
