package check

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

// HTTP is up when a request answers with a status in Expect and, when
// BodyContains is set, a body holding it. Each probe opens a new connection,
// as HAProxy's httpchk does, so a dead server cannot hide behind a kept one.
type HTTP struct {
	URL          string
	Method       string
	Host         string
	Expect       []StatusRange
	BodyContains string
	client       *http.Client
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Lo, Hi int }

// TLSOptions configure HTTPS probes.
type TLSOptions struct {
	InsecureSkipVerify bool
	CAFile             string
	ClientCert         string
	ClientKey          string
}

// NewHTTP prepares a prober; it reads the CA and client certificate files
// now, so a missing file is an error at start rather than a down check.
func NewHTTP(url, method, host string, expect []StatusRange, body string, to TLSOptions) (*HTTP, error) {
	tc := &tls.Config{InsecureSkipVerify: to.InsecureSkipVerify} //nolint:gosec // the user's choice, as HAProxy's verify none
	if to.CAFile != "" {
		pem, err := os.ReadFile(to.CAFile)
		if err != nil {
			return nil, fmt.Errorf("http check %s: ca_file: %w", url, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("http check %s: ca_file %s holds no PEM certificate", url, to.CAFile)
		}
		tc.RootCAs = pool
	}
	if to.ClientCert != "" {
		cert, err := tls.LoadX509KeyPair(to.ClientCert, to.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("http check %s: client certificate: %w", url, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if host != "" {
		h, _, err := net.SplitHostPort(host)
		if err != nil {
			h = host
		}
		tc.ServerName = h
	}
	tr := &http.Transport{
		TLSClientConfig:   tc,
		DisableKeepAlives: true,
		Proxy:             nil,
		DialContext:       (&net.Dialer{}).DialContext,
	}
	return &HTTP{URL: url, Method: method, Host: host, Expect: expect, BodyContains: body,
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is a status, not a new target
		}}}, nil
}

// maxBody is how much of a body BodyContains searches.
const maxBody = 64 << 10

// Probe sends one request.
func (h *HTTP) Probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, h.Method, h.URL, nil)
	if err != nil {
		return fmt.Errorf("http %s: %w", h.URL, err)
	}
	if h.Host != "" {
		req.Host = h.Host
	}
	req.Header.Set("User-Agent", "vigil-check")
	resp, err := h.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("http %s: timed out", h.URL)
		}
		return fmt.Errorf("http %s: %w", h.URL, cause(err))
	}
	defer resp.Body.Close()
	if !h.expected(resp.StatusCode) {
		return fmt.Errorf("http %s: status %d", h.URL, resp.StatusCode)
	}
	if h.BodyContains != "" {
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err != nil {
			return fmt.Errorf("http %s: reading body: %w", h.URL, err)
		}
		if !bytes.Contains(body, []byte(h.BodyContains)) {
			return fmt.Errorf("http %s: body does not contain %q", h.URL, h.BodyContains)
		}
	}
	return nil
}

func (h *HTTP) expected(code int) bool {
	for _, r := range h.Expect {
		if code >= r.Lo && code <= r.Hi {
			return true
		}
	}
	return false
}

// Close releases idle resources.
func (h *HTTP) Close() { h.client.CloseIdleConnections() }
