package api

import (
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// hostCheck guards the HTTP API against DNS rebinding: a web page whose
// name an attacker makes resolve to the node would otherwise read status
// and metrics from a browser inside the network. Its requests carry the
// attacker's name in Host, so the API answers only Hosts that are an IP
// address (no name, nothing to rebind), a localhost name, the listen
// address, or one of the node's names; anything else gets 403.
type hostCheck struct {
	names []string // lower case, without a trailing dot
}

// allowedHost reports whether a Host header (with or without a port) names
// this node. An empty Host (HTTP/1.0) is no browser's and passes.
func (c *hostCheck) allowedHost(host string) bool {
	if host == "" {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true // RFC 6761: always loopback
	}
	return slices.Contains(c.names, host)
}

// hostName normalises a name for hostCheck.names.
func hostName(n string) string { return strings.TrimSuffix(strings.ToLower(n), ".") }

// newHostCheck knows the node by its host name (and its first label) and
// by the host of the HTTP listen address, when that is a name.
func newHostCheck(httpAddr string) *hostCheck {
	c := &hostCheck{}
	if h, err := os.Hostname(); err == nil && h != "" {
		c.add(h)
	}
	for _, h := range hostOf(httpAddr) {
		c.add(h)
	}
	return c
}

// hostOf is the host of a listen address, none if it has no host.
func hostOf(addr string) []string {
	if h, _, err := net.SplitHostPort(addr); err == nil && h != "" {
		return []string{h}
	}
	return nil
}

// add adds a name and, for a dotted name, its first label: a node called
// lb1.example.net is asked for as lb1 too.
func (c *hostCheck) add(name string) {
	for _, n := range []string{name, strings.Split(name, ".")[0]} {
		if n = hostName(n); n != "" && !slices.Contains(c.names, n) {
			c.names = append(c.names, n)
		}
	}
}

// checkHost answers 403 to requests whose Host does not name this node.
// The answer does not echo the Host back.
func (s *Server) checkHost(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hosts.Load().allowedHost(r.Host) {
			http.Error(w, "vigil: the Host header does not name this node: ask for it by its address, localhost or its name", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// AllowHosts adds names the HTTP API answers to, such as the node name of
// the config; the host name and the listen address are known already.
func (s *Server) AllowHosts(names ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allowHostsLocked(names...)
}

// allowHostsLocked is AllowHosts for a caller holding s.mu.
func (s *Server) allowHostsLocked(names ...string) {
	c := &hostCheck{names: slices.Clone(s.hosts.Load().names)}
	for _, n := range names {
		c.add(n)
	}
	s.hosts.Store(c)
}
