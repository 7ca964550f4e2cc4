package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/api"
	"sigs.k8s.io/yaml"
)

func statusCmd() *cobra.Command {
	var output string
	var watch time.Duration
	cmd := &cobra.Command{
		Use:   "status [KIND [NAME]]",
		Short: "Show what the running daemon does",
		Long: `Ask the running daemon on its control socket for its state: VRRP instances
(state, priority, the master by node name and priority, the last transition
and why), pool VIPs (preferred node, and why the VIP is or is not there),
GARP counters, checks, balancers and their backends.

KIND [NAME] shows one kind of thing, or one thing: instance, pool, balancer,
check, service (vigil status balancer api, vigil status instance api).

-o wide adds the masters' addresses, tracked items, advert counts, peers and
pool rankings; -o json and -o yaml print the whole snapshot.

--watch refreshes (every 2s, or --watch=500ms), a timestamp on each frame,
until Ctrl-C; while no daemon answers (a restart) it says so and retries.
The socket is --socket, else api.socket of the -c file (when it reads),
else the default. Without --watch, exit 1 with one line if no daemon
answers.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.MaximumNArgs(2)(cmd, args); err != nil {
				return err
			}
			if len(args) > 0 {
				if _, err := api.Filter(api.Snapshot{}, args[0], ""); err != nil {
					return &exitError{2, err}
				}
			}
			return nil
		},
	}
	socket := socketFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		switch output {
		case "table", "wide", "json", "yaml":
		default:
			return &exitError{2, fmt.Errorf("-o %q: want table, wide, json or yaml", output)}
		}
		var kind, name string
		if len(args) > 0 {
			kind = args[0]
			if _, err := api.Filter(api.Snapshot{}, kind, ""); err != nil {
				return &exitError{2, err}
			}
		}
		if len(args) > 1 {
			name = args[1]
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		w := statusWriter{out: cmd.OutOrStdout(), output: output, kind: kind, name: name, watch: watch, socket: socket}
		if watch <= 0 {
			return w.once(ctx)
		}
		return w.loop(ctx)
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, wide, json or yaml")
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, "refresh at this interval until Ctrl-C (--watch alone: 2s)")
	cmd.Flags().Lookup("watch").NoOptDefVal = "2s"
	return cmd
}

// statusWriter prints status frames.
type statusWriter struct {
	out          io.Writer
	output       string
	kind, name   string
	watch        time.Duration
	socket       func() string
	clearScreen  bool
	notAnswering bool
}

func (w *statusWriter) fetch(ctx context.Context) (api.Snapshot, error) {
	fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return api.Fetch(fctx, w.socket())
}

// once prints one frame; exit 1 when no daemon answers or nothing matches.
func (w *statusWriter) once(ctx context.Context) error {
	snap, err := w.fetch(ctx)
	if err != nil {
		return err
	}
	if snap, err = w.filter(snap); err != nil {
		return &exitError{1, err}
	}
	return w.print(snap)
}

// loop prints a frame every w.watch until ctx ends, with a timestamp on
// each; while no daemon answers it prints that once and keeps trying, so
// a watch outlives a daemon restart.
func (w *statusWriter) loop(ctx context.Context) error {
	if f, ok := w.out.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && (w.output == "table" || w.output == "wide") {
			w.clearScreen = true
		}
	}
	for {
		snap, err := w.fetch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		switch {
		case err != nil:
			if !w.notAnswering || w.clearScreen {
				w.frameHead(now)
				fmt.Fprintf(w.out, "daemon not answering (%v); retrying every %s\n", err, w.watch)
			}
			w.notAnswering = true
		default:
			w.notAnswering = false
			if snap, err = w.filter(snap); err != nil {
				return &exitError{1, err}
			}
			w.frameHead(now)
			if err := w.print(snap); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(w.watch):
		}
	}
}

// frameHead starts a watch frame: the screen cleared on a terminal, and
// the time. JSON and YAML frames carry it in the snapshot's taken field
// and get only a separator, so that they stay parseable.
func (w *statusWriter) frameHead(now time.Time) {
	switch {
	case w.output == "json":
		return
	case w.output == "yaml":
		fmt.Fprintln(w.out, "---")
		return
	case w.clearScreen:
		fmt.Fprint(w.out, "\033[H\033[2J")
	default:
		fmt.Fprintln(w.out)
	}
	fmt.Fprintf(w.out, "%s  every %s\n", now.Format("2006-01-02 15:04:05.000 MST"), w.watch)
}

func (w *statusWriter) filter(snap api.Snapshot) (api.Snapshot, error) {
	if w.kind == "" {
		return snap, nil
	}
	return api.Filter(snap, w.kind, w.name)
}

func (w *statusWriter) print(snap api.Snapshot) error {
	switch w.output {
	case "json":
		enc := json.NewEncoder(w.out)
		enc.SetIndent("", "  ")
		return enc.Encode(snap)
	case "yaml":
		b, err := yaml.Marshal(snap)
		if err != nil {
			return err
		}
		_, err = w.out.Write(b)
		return err
	}
	return api.Table{Wide: w.output == "wide"}.Write(w.out, snap, time.Now())
}
