package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server serves the control socket and, when configured, HTTP.
type Server struct {
	src    Source
	log    *slog.Logger
	socket string
	unix   net.Listener
	http   net.Listener
	srvs   []*http.Server
}

// Listen opens the control socket (mode 0600) and the HTTP listener, so that
// errors come before the daemon changes anything. A socket file left by a
// dead daemon is replaced; one a live daemon answers on is an error.
func Listen(socket, httpAddr string, src Source, log *slog.Logger) (*Server, error) {
	s := &Server{src: src, log: log, socket: socket}
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return nil, fmt.Errorf("api socket %s: %w", socket, err)
	}
	if c, err := net.DialTimeout("unix", socket, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("api socket %s: another vigil answers on it (set api.socket to run a second one)", socket)
	}
	os.Remove(socket)
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("api socket %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("api socket %s: %w", socket, err)
	}
	s.unix = l
	if httpAddr != "" {
		h, err := net.Listen("tcp", httpAddr)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("api.http %s: %w", httpAddr, err)
		}
		s.http = h
	}
	return s, nil
}

// HTTPAddr is the address HTTP listens on, "" when off.
func (s *Server) HTTPAddr() string {
	if s.http == nil {
		return ""
	}
	return s.http.Addr().String()
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) {
	ctl := http.NewServeMux()
	ctl.HandleFunc("GET /v1/status", s.status)
	s.srvs = append(s.srvs, &http.Server{Handler: ctl, ReadHeaderTimeout: 5 * time.Second})
	listeners := []net.Listener{s.unix}
	if s.http != nil {
		pub := http.NewServeMux()
		pub.Handle("GET /metrics", promhttp.HandlerFor(NewRegistry(s.src), promhttp.HandlerOpts{}))
		pub.HandleFunc("GET /api/v1/status", s.status)
		// Liveness: a snapshot takes every component's lock once, so a hung
		// daemon does not answer.
		pub.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { s.src(); fmt.Fprintln(w, "ok") })
		pub.Handle("GET /", pageHandler())
		s.srvs = append(s.srvs, &http.Server{Handler: pub, ReadHeaderTimeout: 5 * time.Second})
		listeners = append(listeners, s.http)
	}
	var wg sync.WaitGroup
	for i, srv := range s.srvs {
		l := listeners[i]
		wg.Go(func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Warn("api server stopped", "listen", l.Addr().String(), "err", err)
			}
		})
	}
	<-ctx.Done()
	s.Close()
	wg.Wait()
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s.src()); err != nil {
		s.log.Debug("api: writing status", "err", err)
	}
}

// Close stops serving and removes the socket file.
func (s *Server) Close() {
	for _, srv := range s.srvs {
		srv.Close()
	}
	if s.unix != nil {
		s.unix.Close()
	}
	if s.http != nil {
		s.http.Close()
	}
	os.Remove(s.socket)
}

// Fetch asks the daemon on socket for its status.
func Fetch(ctx context.Context, socket string) (Snapshot, error) {
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://vigil/v1/status", nil)
	if err != nil {
		return Snapshot{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		// The dial's own error ("connect: no such file or directory"), not
		// the HTTP client's wrapping of it.
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err
		}
		return Snapshot{}, fmt.Errorf("no vigil daemon answers on %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Snapshot{}, fmt.Errorf("vigil daemon on %s answered %s", socket, resp.Status)
	}
	var snap Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		return Snapshot{}, fmt.Errorf("vigil daemon on %s: bad status: %w", socket, err)
	}
	return snap, nil
}
