package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
)

// settings is the component of the daemon's own settings (api, log): a
// reload applies the log level at once and refuses, with the reason, what
// only a restart can change.
type settings struct {
	api    config.API
	log    config.Log
	level  *slog.LevelVar
	logger *slog.Logger
}

func (s *settings) Name() string { return "settings" }

// Run holds nothing: the API server runs beside the supervisor.
func (s *settings) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func (s *settings) Plan(cfg *config.Config) (component.Change, error) {
	switch {
	case cfg.API != s.api:
		return nil, fmt.Errorf("api.socket or api.http changed (%s, %q -> %s, %q): the control socket and the status page move only with a restart",
			s.api.Socket, s.api.HTTP, cfg.API.Socket, cfg.API.HTTP)
	case cfg.Log.Format != s.log.Format:
		return nil, fmt.Errorf("log.format changed (%s -> %s): that needs a restart", s.log.Format, cfg.Log.Format)
	case cfg.Log.Level == s.log.Level:
		return component.None{}, nil
	}
	level := parseLevel(cfg.Log.Level)
	return component.Func{OnCommit: func() {
		s.logger.Info("log level changed", "from", s.log.Level, "to", cfg.Log.Level)
		s.level.Set(level)
		s.log.Level = cfg.Log.Level
	}}, nil
}

// parseLevel reads a validated level name; unknown names are info.
func parseLevel(name string) slog.Level {
	var level slog.Level
	_ = level.UnmarshalText([]byte(name))
	return level
}

// newLogger builds the daemon's logger; its level can change at run time.
func newLogger(c config.Log) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	level.Set(parseLevel(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), level
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), level
}
