package api

import (
	_ "embed"
	"net/http"
)

//go:embed page.html
var page []byte

// pageHandler serves the status page: one self-contained HTML file that
// polls /api/v1/status every second, with no external assets.
func pageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(page)
	})
}
