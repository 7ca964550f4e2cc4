package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/component"
	"github.com/vigil-lb/vigil/internal/config"
)

// settings is the component of the daemon's own settings (api, log): a
// reload moves the control socket and the status page, applies the log
// level, and refuses the log format, which only a restart can change.
type settings struct {
	api    config.API
	server *api.Server
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
	if cfg.Log.Format != s.log.Format {
		return nil, fmt.Errorf("log.format changed (%s -> %s): that needs a restart", s.log.Format, cfg.Log.Format)
	}
	moveAPI, abortAPI := func() {}, func() {}
	if cfg.API != s.api {
		var err error
		if moveAPI, abortAPI, err = s.server.Move(cfg.API.Socket, cfg.API.HTTP); err != nil {
			return nil, err
		}
	}
	return component.Func{OnCommit: func() {
		moveAPI()
		if cfg.API != s.api {
			s.logger.Info("api moved", "socket", cfg.API.Socket, "http", s.server.HTTPAddr())
			s.api = cfg.API
		}
		if cfg.Log.Level != s.log.Level {
			s.logger.Info("log level changed", "from", s.log.Level, "to", cfg.Log.Level)
			s.level.Set(parseLevel(cfg.Log.Level))
			s.log.Level = cfg.Log.Level
		}
	}, OnAbort: abortAPI}, nil
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
