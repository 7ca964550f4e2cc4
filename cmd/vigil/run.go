package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

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
			if abs, err := filepath.Abs(path); err == nil {
				path = abs // status reports it; vigil reload compares its -c with it
			}
			sup, err := supervisor.New(cfg, supervisor.Options{EventLoops: loops, ConfigPath: path}, log)
			if err != nil {
				return fmt.Errorf("start: %w", err)
			}
			sup.Version = version()
			srv, err := api.Listen(cfg.API.Socket, cfg.API.HTTP, sup.Snapshot, log)
			if err != nil {
				sup.Close()
				return fmt.Errorf("start: %w", err)
			}
			srv.OnReload(func(context.Context) api.ReloadResult {
				// The daemon's context, not the request's: a client that
				// goes away does not cut a reload short.
				changes, err := reload(ctx, sup)
				res := api.ReloadResult{Config: sup.ConfigPath(), Applied: err == nil, Changed: changes}
				if err != nil {
					res.Error = err.Error()
				}
				return res
			})
			srv.AllowHosts(cfg.Node) // and the host name: the names the HTTP API answers to
			srv.OnControl(sup)       // vigil backend, vigil instance
			srv.OnHistory(sup.History)
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
					reload(ctx, sup) // ReloadFile logs the outcome
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

// reload re-reads the daemon's config file and applies it (SIGHUP and
// vigil reload), telling systemd while it does; a refusal is logged and
// leaves the running config alone.
func reload(ctx context.Context, sup *supervisor.Supervisor) ([]string, error) {
	sdnotify.Notify("RELOADING=1")
	defer sdnotify.Notify("READY=1")
	return sup.ReloadFile(ctx)
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
	var path, socket, pidFile string
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Tell the running daemon to re-read its config file, and wait for the answer",
		Long: `Ask the daemon on its control socket to re-read the config file it was
started with, and wait until it has applied it or refused it. Prints what
changed, or why it was refused (an invalid file: every problem; a change
that needs a restart, such as the cluster name): exit 0 when applied, 1 when
refused or when no daemon answers. The daemon always reads its own file: -c
is used to find the socket (its api.socket) and, when it names another file,
vigil reload warns that it is not the one reloaded.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if !cmd.Flags().Changed("socket") {
				if cfg, err := config.Load(path); err == nil {
					socket = cfg.API.Socket
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			snap, err := api.Fetch(ctx, socket)
			cancel()
			if err != nil {
				return err
			}
			if abs, err := filepath.Abs(path); err == nil && cmd.Flags().Changed("config") && snap.Config != "" && abs != snap.Config {
				fmt.Fprintf(errOut, "warning: the daemon reads %s, not %s: it reloads its own file\n", snap.Config, abs)
			}
			// A reload plans every component (listeners, BPF, BGP): give it time.
			ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := api.Reload(ctx, socket)
			if err != nil {
				return err
			}
			if !res.Applied {
				return &exitError{1, fmt.Errorf("%s: reload refused, the running config stays: %s", res.Config, res.Error)}
			}
			changed := "nothing changed"
			if len(res.Changed) > 0 {
				changed = strings.Join(res.Changed, "; ")
			}
			fmt.Fprintf(out, "%s: applied: %s\n", res.Config, changed)
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/vigil/vigil.yaml", "config file (its api.socket names the socket; the daemon reloads the file it started with)")
	cmd.Flags().StringVar(&socket, "socket", config.DefaultSocket, "the daemon's control socket (default: api.socket of -c)")
	cmd.Flags().StringVar(&pidFile, "pid-file", "", "")
	cmd.Flags().MarkDeprecated("pid-file", "vigil reload uses the control socket; the flag is ignored")
	return cmd
}
