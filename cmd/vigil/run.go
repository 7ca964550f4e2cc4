package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/supervisor"
)

func runCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon",
		Long: `Run the daemon with the given config until SIGINT or SIGTERM, then shut
down cleanly: masters send priority-0 adverts and remove their VIPs.
Needs CAP_NET_ADMIN and CAP_NET_RAW (root).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				return &exitError{2, err}
			}
			log := newLogger(cfg.Log)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			sup, err := supervisor.New(cfg, log)
			if err != nil {
				return fmt.Errorf("start: %w", err)
			}
			log.Info("vigil started", "version", version(), "node", cfg.Node, "instances", len(cfg.VRRP.Instances))
			if err := sup.Run(ctx); err != nil {
				return err
			}
			log.Info("vigil stopped")
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/vigil/vigil.yaml", "config file")
	return cmd
}

func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
