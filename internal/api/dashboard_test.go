package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// richSample is sample with what it leaves out (a reload), so that it
// exports every metric family vigil has.
func richSample() Snapshot {
	s := sample()
	s.LastReload = &ReloadStatus{At: t0.Add(-time.Minute), Successful: true, LastSuccess: t0.Add(-time.Minute)}
	return s
}

// dashboardUncharted lists the families the Grafana dashboard may leave out
// of its panels, each with the reason. Everything else vigil exports must be
// in some panel's query, so a new metric comes with a chart.
var dashboardUncharted = map[string]string{
	// Not charted on its own: every query joins on it for the node and
	// cluster labels, and the variables read their values from it.
	"vigil_info": "the join that names node and cluster, and the variables' source",
}

// Every metric family vigil exports is charted by a panel of the Grafana
// dashboard in docs/, or listed in dashboardUncharted with its reason. The
// families are those of a served /metrics of richSample, which must hold
// every desc(...) of metrics.go (a family missing from it would escape
// this check).
func TestDashboardChartsEveryFamily(t *testing.T) {
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(NewRegistry(richSample), promhttp.HandlerOpts{}).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", rec.Code, rec.Body.String())
	}
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (vigil_\w+) `).FindAllStringSubmatch(rec.Body.String(), -1) {
		exported[m[1]] = true
	}
	src, err := os.ReadFile("metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	declared := regexp.MustCompile(`\bdesc\("(\w+)"`).FindAllStringSubmatch(string(src), -1)
	if len(declared) < 10 {
		t.Fatalf("found only %d desc(...) calls in metrics.go", len(declared))
	}
	for _, m := range declared {
		if !exported["vigil_"+m[1]] {
			t.Errorf("vigil_%s is declared in metrics.go but the sample snapshot does not export it: extend richSample()", m[1])
		}
	}

	b, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []dashboardPanel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	charted := map[string][]string{} // family: titles of the panels that query it
	metricRE := regexp.MustCompile(`\bvigil_\w+`)
	var visit func(ps []dashboardPanel)
	visit = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, q := range p.Targets {
				for _, m := range metricRE.FindAllString(q.Expr, -1) {
					charted[m] = append(charted[m], p.Title)
				}
			}
			visit(p.Panels) // a collapsed row holds its panels
		}
	}
	visit(d.Panels)
	// vigil_info is in every query as the join; it counts as charted only
	// through the allowlist.
	delete(charted, "vigil_info")

	var missing []string
	for f := range exported {
		if charted[f] == nil && dashboardUncharted[f] == "" {
			missing = append(missing, f)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%d metric families are in no panel of docs/grafana-dashboard.json (chart them or add them to dashboardUncharted with the reason):\n  %s",
			len(missing), strings.Join(missing, "\n  "))
	}
	for f := range dashboardUncharted {
		if !exported[f] {
			t.Errorf("dashboardUncharted lists %s, which vigil does not export", f)
		}
	}
}

// dashboardPanel is the part of a Grafana panel the tests read.
type dashboardPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}
