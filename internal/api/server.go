package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vigil-lb/vigil/internal/history"
)

// Server serves the control socket and, when configured, HTTP. A reload
// can move either (Move) without a restart.
type Server struct {
	src Source
	log *slog.Logger
	ctl http.Handler // the control socket's
	pub http.Handler // HTTP's: metrics, status page, liveness
	// hosts are the names HTTP answers to (DNS rebinding); AllowHosts
	// and Move replace it under mu, requests read it.
	hosts atomic.Pointer[hostCheck]

	// reload is set by OnReload before Run; nil answers 501.
	reload func(ctx context.Context) ReloadResult
	// control is set by OnControl before Run; nil answers 501.
	control Control
	// history is set by OnHistory before Run; nil answers 404.
	history func() history.View

	mu     sync.Mutex
	socket string
	unix   net.Listener
	http   net.Listener // nil when off
	srvs   map[net.Listener]*http.Server
	wg     sync.WaitGroup
	closed bool
}

// Listen opens the control socket (mode 0600) and the HTTP listener, so that
// errors come before the daemon changes anything. A socket file left by a
// dead daemon is replaced; one a live daemon answers on is an error, and so
// is any other file at the path (it is left alone).
func Listen(socket, httpAddr string, src Source, log *slog.Logger) (*Server, error) {
	s := &Server{src: src, log: log, socket: socket, srvs: map[net.Listener]*http.Server{}}
	ctl := http.NewServeMux()
	ctl.HandleFunc("GET /v1/status", s.status)
	ctl.HandleFunc("POST /v1/reload", s.doReload)
	ctl.HandleFunc("POST /v1/backend", s.doBackend)
	ctl.HandleFunc("POST /v1/instance", s.doInstance)
	s.ctl = ctl
	pub := http.NewServeMux()
	pub.Handle("GET /metrics", promhttp.HandlerFor(NewRegistry(src), promhttp.HandlerOpts{}))
	pub.HandleFunc("GET /api/v1/status", s.status)
	pub.HandleFunc("GET /api/v1/history", s.doHistory)
	// Liveness: a snapshot takes every component's lock once, so a hung
	// daemon does not answer.
	pub.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { s.src(); fmt.Fprintln(w, "ok") })
	pub.Handle("GET /", pageHandler())
	s.hosts.Store(newHostCheck(httpAddr))
	s.pub = s.checkHost(pub)
	var err error
	if s.unix, err = listenSocket(socket); err != nil {
		return nil, err
	}
	if s.http, err = listenHTTP(httpAddr); err != nil {
		s.unix.Close()
		os.Remove(socket)
		return nil, err
	}
	return s, nil
}

func listenSocket(socket string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return nil, fmt.Errorf("api socket %s: %w", socket, err)
	}
	if c, err := net.DialTimeout("unix", socket, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("api socket %s: another vigil answers on it (set api.socket to run a second one)", socket)
	}
	if err := removeStale(socket); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("api socket %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("api socket %s: %w", socket, err)
	}
	return l, nil
}

// removeStale removes the socket file a dead daemon left, once nobody
// answers on it (the caller dialled). Anything else at the path is an error
// and stays: api.socket naming the config file must not delete it.
func removeStale(socket string) error {
	fi, err := os.Lstat(socket)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("api.socket: %w", err)
	case fi.Mode().Type() != os.ModeSocket:
		return fmt.Errorf("api.socket: %s exists and is not a socket (%s); remove it or choose another path", socket, fileKind(fi.Mode()))
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("api.socket: removing the stale socket %s: %w", socket, err)
	}
	return nil
}

// fileKind names a file's type for an error.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "a " + m.Type().String() + " file"
}

func listenHTTP(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	h, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("api.http %s: %w", addr, err)
	}
	return h, nil
}

// HTTPAddr is the address HTTP listens on, "" when off.
func (s *Server) HTTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.http == nil {
		return ""
	}
	return s.http.Addr().String()
}

// Run serves until ctx ends, then closes.
func (s *Server) Run(ctx context.Context) {
	s.mu.Lock()
	s.serveLocked(s.unix, s.ctl)
	if s.http != nil {
		s.serveLocked(s.http, s.pub)
	}
	s.mu.Unlock()
	<-ctx.Done()
	s.Close()
	s.wg.Wait()
}

// serveLocked serves h on l. The caller holds s.mu.
func (s *Server) serveLocked(l net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	s.srvs[l] = srv
	s.wg.Go(func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("api server stopped", "listen", l.Addr().String(), "err", err)
		}
	})
}

// stopLocked stops serving on l and closes it. The caller holds s.mu.
func (s *Server) stopLocked(l net.Listener) {
	if srv := s.srvs[l]; srv != nil {
		srv.Close() // closes l too
		delete(s.srvs, l)
	}
	l.Close()
}

// Move opens the listeners a changed api section asks for; nothing
// changes until commit, which serves on them and closes the old ones, in
// flight requests on those included. abort closes what Move opened.
func (s *Server) Move(socket, httpAddr string) (commit, abort func(), err error) {
	s.mu.Lock()
	oldSocket, oldHTTP := s.socket, ""
	if s.http != nil {
		oldHTTP = s.http.Addr().String()
	}
	s.mu.Unlock()
	var unix, web net.Listener
	if socket != oldSocket {
		if unix, err = listenSocket(socket); err != nil {
			return nil, nil, err
		}
	}
	httpMoves := httpAddr != oldHTTP && !sameTCPAddr(httpAddr, oldHTTP)
	if httpMoves {
		if web, err = listenHTTP(httpAddr); err != nil {
			if unix != nil {
				unix.Close()
				os.Remove(socket)
			}
			return nil, nil, err
		}
	}
	abort = func() {
		if unix != nil {
			unix.Close()
			os.Remove(socket)
		}
		if web != nil {
			web.Close()
		}
	}
	commit = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			abort()
			return
		}
		if unix != nil {
			s.stopLocked(s.unix)
			os.Remove(s.socket)
			s.unix, s.socket = unix, socket
			s.serveLocked(unix, s.ctl)
		}
		if httpMoves {
			if s.http != nil {
				s.stopLocked(s.http)
			}
			s.http = web
			if web != nil {
				s.allowHostsLocked(hostOf(httpAddr)...)
				s.serveLocked(web, s.pub)
			}
		}
	}
	return commit, abort, nil
}

// sameTCPAddr reports whether a configured address names the listener's
// (a configured port 0 matches the port the kernel chose).
func sameTCPAddr(configured, listening string) bool {
	if configured == "" || listening == "" {
		return false
	}
	ch, cp, err1 := net.SplitHostPort(configured)
	lh, lp, err2 := net.SplitHostPort(listening)
	return err1 == nil && err2 == nil && ch == lh && (cp == lp || cp == "0")
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

// OnHistory sets what GET /api/v1/history answers: the last hour of
// events, states and samples the status page draws. Call it before Run.
func (s *Server) OnHistory(f func() history.View) { s.history = f }

func (s *Server) doHistory(w http.ResponseWriter, _ *http.Request) {
	if s.history == nil {
		http.Error(w, "this daemon keeps no history", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err := json.NewEncoder(w).Encode(s.history()); err != nil {
		s.log.Debug("api: writing history", "err", err)
	}
}

// OnReload sets what a POST /v1/reload on the control socket runs: the
// daemon re-reads its config file and answers applied or refused, and why,
// once it is done. Call it before Run.
func (s *Server) OnReload(f func(ctx context.Context) ReloadResult) { s.reload = f }

func (s *Server) doReload(w http.ResponseWriter, r *http.Request) {
	if s.reload == nil {
		http.Error(w, "this daemon does not reload over its socket", http.StatusNotImplemented)
		return
	}
	res := s.reload(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if !res.Applied {
		w.WriteHeader(http.StatusConflict)
	}
	if err := json.NewEncoder(w).Encode(res); err != nil {
		s.log.Debug("api: writing reload result", "err", err)
	}
}

// Close stops serving and removes the socket file.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for l := range s.srvs {
		s.stopLocked(l)
	}
	if s.unix != nil {
		s.unix.Close()
	}
	if s.http != nil {
		s.http.Close()
	}
	os.Remove(s.socket)
}

// Control is what the runtime commands change in the daemon (vigil
// backend, vigil instance): a proxy balancer backend's admin state and a
// VRRP instance's resignation. Both are runtime state: a reload keeps
// them, a restart loses them. An error for a name that is not running
// wraps ErrUnknown and names it.
type Control interface {
	// SetBackendAdmin sets the backend at addr (IP:PORT) of a proxy
	// balancer to AdminDrain, AdminDisable or AdminEnable.
	SetBackendAdmin(balancer, addr, action string) error
	// SetResigned resigns (true) or resumes (false) a VRRP instance.
	SetResigned(instance string, resigned bool) error
}

// Runtime command actions.
const (
	AdminDrain   = "drain"
	AdminDisable = "disable"
	AdminEnable  = "enable"
	Resign       = "resign"
	Resume       = "resume"
)

// ErrUnknown is wrapped by Control's errors for a balancer, backend or
// instance the daemon does not run; the socket answers 404.
var ErrUnknown = errors.New("unknown")

// BackendRequest is the body of POST /v1/backend.
type BackendRequest struct {
	Balancer string `json:"balancer"`
	Backend  string `json:"backend"` // IP:PORT
	Action   string `json:"action"`  // drain, disable or enable
}

// InstanceRequest is the body of POST /v1/instance.
type InstanceRequest struct {
	Instance string `json:"instance"`
	Action   string `json:"action"` // resign or resume
}

// OnControl sets what POST /v1/backend and /v1/instance on the control
// socket act on. Call it before Run.
func (s *Server) OnControl(c Control) { s.control = c }

func (s *Server) doBackend(w http.ResponseWriter, r *http.Request) {
	var req BackendRequest
	if !s.controlRequest(w, r, &req) {
		return
	}
	switch req.Action {
	case AdminDrain, AdminDisable, AdminEnable:
	default:
		http.Error(w, fmt.Sprintf("backend action %q: want drain, disable or enable", req.Action), http.StatusBadRequest)
		return
	}
	s.controlAnswer(w, s.control.SetBackendAdmin(req.Balancer, req.Backend, req.Action))
}

func (s *Server) doInstance(w http.ResponseWriter, r *http.Request) {
	var req InstanceRequest
	if !s.controlRequest(w, r, &req) {
		return
	}
	if req.Action != Resign && req.Action != Resume {
		http.Error(w, fmt.Sprintf("instance action %q: want resign or resume", req.Action), http.StatusBadRequest)
		return
	}
	s.controlAnswer(w, s.control.SetResigned(req.Instance, req.Action == Resign))
}

// controlRequest decodes a runtime command's body into v, or answers why
// not.
func (s *Server) controlRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	if s.control == nil {
		http.Error(w, "this daemon takes no runtime commands", http.StatusNotImplemented)
		return false
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(v); err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func (s *Server) controlAnswer(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrUnknown):
		http.Error(w, err.Error(), http.StatusNotFound)
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// SetBackend asks the daemon on socket to drain, disable or enable a
// proxy balancer's backend. A refusal (an unknown balancer or backend) is
// an error with the daemon's reason.
func SetBackend(ctx context.Context, socket, balancer, backend, action string) error {
	return command(ctx, socket, "/v1/backend", BackendRequest{Balancer: balancer, Backend: backend, Action: action})
}

// SetInstance asks the daemon on socket to resign or resume a VRRP
// instance. A refusal (an unknown instance) is an error with the daemon's
// reason.
func SetInstance(ctx context.Context, socket, instance, action string) error {
	return command(ctx, socket, "/v1/instance", InstanceRequest{Instance: instance, Action: action})
}

func command(ctx context.Context, socket, path string, req any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	resp, err := doBody(ctx, socket, http.MethodPost, path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK {
		return nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if m := strings.TrimSpace(string(msg)); m != "" {
		return errors.New(m)
	}
	return fmt.Errorf("vigil daemon on %s answered %s", socket, resp.Status)
}

// do sends one request to the daemon on socket.
func do(ctx context.Context, socket, method, path string) (*http.Response, error) {
	return doBody(ctx, socket, method, path, nil)
}

// doBody sends one request with a body to the daemon on socket.
func doBody(ctx context.Context, socket, method, path string, body io.Reader) (*http.Response, error) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	req, err := http.NewRequestWithContext(ctx, method, "http://vigil"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		// The dial's own error ("connect: no such file or directory"), not
		// the HTTP client's wrapping of it.
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err
		}
		return nil, fmt.Errorf("no vigil daemon answers on %s: %w", socket, err)
	}
	return resp, nil
}

// Reload asks the daemon on socket to re-read its config file and waits
// for its answer: applied, or refused and why (ReloadResult.Error). The
// error is for a daemon that did not answer.
func Reload(ctx context.Context, socket string) (ReloadResult, error) {
	resp, err := do(ctx, socket, http.MethodPost, "/v1/reload")
	if err != nil {
		return ReloadResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusConflict {
		return ReloadResult{}, fmt.Errorf("vigil daemon on %s answered %s", socket, resp.Status)
	}
	var res ReloadResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return ReloadResult{}, fmt.Errorf("vigil daemon on %s: bad reload answer: %w", socket, err)
	}
	return res, nil
}

// Fetch asks the daemon on socket for its status.
func Fetch(ctx context.Context, socket string) (Snapshot, error) {
	resp, err := do(ctx, socket, http.MethodGet, "/v1/status")
	if err != nil {
		return Snapshot{}, err
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
