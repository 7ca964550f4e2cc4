package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/proxy"
	"github.com/vigil-lb/vigil/internal/sdnotify"
	"github.com/vigil-lb/vigil/internal/supervisor"
)

const defaultPidFile = "/run/vigil/vigil.pid"

func runCmd() *cobra.Command {
	var path, pidFile string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon",
		Long: `Run the daemon with the given config until SIGINT or SIGTERM, then shut
down cleanly: masters send priority-0 adverts and remove their VIPs, and
balancers drain their connections. SIGHUP (or vigil reload) re-reads the
config: balancers and checks change without dropping connections; an
invalid config is refused and the running one stays.
Needs CAP_NET_ADMIN and CAP_NET_RAW (root).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				return &exitError{2, err}
			}
			log, level := newLogger(cfg.Log)
			loops := setProcs()
			if n, err := proxy.RaiseFileLimit(); err != nil {
				log.Warn("could not raise the open file limit", "limit", n, "err", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			sup, err := supervisor.New(cfg, supervisor.Options{EventLoops: loops}, log)
			if err != nil {
				return fmt.Errorf("start: %w", err)
			}
			sup.Version = version()
			srv, err := api.Listen(cfg.API.Socket, cfg.API.HTTP, sup.Snapshot, log)
			if err != nil {
				sup.Close()
				return fmt.Errorf("start: %w", err)
			}
			sup.Also(&settings{api: cfg.API, server: srv, log: cfg.Log, level: level, logger: log})
			apiCtx, stopAPI := context.WithCancel(context.Background())
			apiDone := make(chan struct{})
			go func() { srv.Run(apiCtx); close(apiDone) }()
			defer func() { stopAPI(); <-apiDone }()
			if pidFile != "" {
				if err := writePidFile(pidFile); err != nil {
					log.Warn("pid file", "err", err)
				}
				defer removePidFile(pidFile)
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for range hup {
					reload(ctx, sup, path, log)
				}
			}()
			if err := sdnotify.Notify("READY=1"); err != nil {
				log.Warn("systemd notify", "err", err)
			}
			go sdnotify.Watchdog(apiCtx, func(ctx context.Context) error {
				done := make(chan struct{})
				go func() { sup.Snapshot(); close(done) }() // every component's lock, taken once
				select {
				case <-done:
					return nil
				case <-ctx.Done():
					if apiCtx.Err() == nil { // not merely shutting down
						log.Error("watchdog: the daemon did not answer in time; not pinging systemd")
					}
					return ctx.Err()
				}
			})
			log.Info("vigil started", "version", version(), "node", cfg.Node,
				"instances", len(cfg.VRRP.All()), "balancers", len(cfg.Balancers), "checks", len(cfg.Checks), "event_loops", loops,
				"socket", cfg.API.Socket, "http", srv.HTTPAddr())
			go func() {
				<-ctx.Done()
				sdnotify.Notify("STOPPING=1")
			}()
			if err := sup.Run(ctx); err != nil {
				return err
			}
			log.Info("vigil stopped")
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/vigil/vigil.yaml", "config file")
	cmd.Flags().StringVar(&pidFile, "pid-file", defaultPidFile, "write the daemon's pid here (empty: none); vigil reload reads it")
	return cmd
}

// setProcs sets the daemon's processor policy and returns the number of
// event loops it is for. The proxy balancers' event loops get every
// processor the process may use (GOMAXPROCS as the runtime found it: the CPU
// count or cgroup limit, or $GOMAXPROCS), one loop each, and the runtime one
// processor more, so that checks, VRRP, the API and the netpoller always
// have one however busy the loops are (see proxy.Loops); the supervisor
// passes the count to proxy.NewFleet. It is set even without proxy
// balancers, since a reload may add some. Set once: the runtime no longer
// follows a later change of the CPU limit.
func setProcs() (loops int) {
	loops = runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(loops + 1)
	return loops
}

// reload re-reads the config file and applies it; failures are logged and
// leave the running config alone.
func reload(ctx context.Context, sup *supervisor.Supervisor, path string, log *slog.Logger) {
	log.Info("reload requested", "config", path)
	cfg, err := config.Load(path)
	if err != nil {
		log.Error("reload refused: config is invalid; the running config stays", "err", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	sdnotify.Notify("RELOADING=1")
	defer sdnotify.Notify("READY=1")
	if err := sup.Reload(ctx, cfg); err != nil {
		log.Error("reload refused; the running config stays", "err", err)
	}
}

func writePidFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

// removePidFile removes the pid file only if it is still ours.
func removePidFile(path string) {
	if pid, err := readPidFile(path); err == nil && pid == os.Getpid() {
		os.Remove(path)
	}
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("%s does not hold a pid", path)
	}
	return pid, nil
}

func reloadCmd() *cobra.Command {
	var path, pidFile string
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Validate the config and tell the running daemon to re-read it",
		Long: `Validate the config file first (exit 2 with every problem if it is invalid,
without touching the daemon), then send SIGHUP to the daemon named by the pid
file. The daemon logs whether it applied the new config.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := config.Load(path); err != nil {
				return &exitError{2, err}
			}
			pid, err := readPidFile(pidFile)
			if err != nil {
				return fmt.Errorf("no running daemon: %w", err)
			}
			if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
				if errors.Is(err, syscall.ESRCH) {
					return fmt.Errorf("no running daemon: pid %d from %s is gone", pid, pidFile)
				}
				return fmt.Errorf("signal pid %d: %w", pid, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok, reload sent to pid %d\n", path, pid)
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/vigil/vigil.yaml", "config file the daemon reads")
	cmd.Flags().StringVar(&pidFile, "pid-file", defaultPidFile, "the daemon's pid file")
	return cmd
}
