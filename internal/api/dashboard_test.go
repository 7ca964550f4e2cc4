package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
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
// dashboard in docs/, or listed in dashboardUncharted with its reason, and
// every panel's legend names the node. The
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

	charted := map[string]bool{}
	metricRE := regexp.MustCompile(`\bvigil_\w+`)
	for _, q := range dashboardTargets(t) {
		for _, m := range metricRE.FindAllString(q.Expr, -1) {
			charted[m] = true
		}
		if !strings.Contains(q.LegendFormat, "{{node}}") {
			t.Errorf("%s: legend %q does not name the node", q.Panel, q.LegendFormat)
		}
	}
	// vigil_info is in every query as the join; it counts as charted only
	// through the allowlist.
	delete(charted, "vigil_info")

	var missing []string
	for f := range exported {
		if !charted[f] && dashboardUncharted[f] == "" {
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

// dashboardTarget is one query of a panel of the Grafana dashboard.
type dashboardTarget struct {
	Panel        string // its title
	Expr         string
	LegendFormat string
}

// dashboardTargets reads docs/grafana-dashboard.json and returns the queries
// of its panels, also those inside a collapsed row.
func dashboardTargets(t *testing.T) []dashboardTarget {
	t.Helper()
	b, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []dashboardPanel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	var out []dashboardTarget
	var visit func(ps []dashboardPanel)
	visit = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, q := range p.Targets {
				out = append(out, dashboardTarget{Panel: p.Title, Expr: q.Expr, LegendFormat: q.LegendFormat})
			}
			visit(p.Panels)
		}
	}
	visit(d.Panels)
	if len(out) < 10 {
		t.Fatalf("docs/grafana-dashboard.json has only %d queries", len(out))
	}
	return out
}

// dashboardPanel is the part of a Grafana panel the tests read.
type dashboardPanel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

// Every panel query of the dashboard returns series for each node when
// Prometheus evaluates it over two scraped vigils (richSample as lb1 and
// lb2, constant for 20 minutes): promtool test rules runs the real PromQL
// engine, so a join that matches nothing or many-to-many, a selector of a
// label value that never occurs, or a comparison that filters everything
// fails here, where promtool check rules only parses.
func TestDashboardQueriesReturnSeriesPerNode(t *testing.T) {
	promtool := needPromtool(t)
	mfs, err := NewRegistry(richSample).Gather()
	if err != nil {
		t.Fatal(err)
	}
	var f strings.Builder
	f.WriteString("tests:\n  - interval: 1m\n    input_series:\n")
	nodes := []string{"lb1", "lb2"}
	for _, node := range nodes {
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "vigil_") {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := []string{`instance="` + node + `:9093"`, `job="vigil"`}
				for _, l := range m.GetLabel() {
					v := l.GetValue()
					if mf.GetName() == "vigil_info" && l.GetName() == "node" {
						v = node
					}
					labels = append(labels, l.GetName()+"="+strconv.Quote(v))
				}
				v := m.GetGauge().GetValue()
				if m.GetCounter() != nil {
					v = m.GetCounter().GetValue()
				}
				series := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
				fmt.Fprintf(&f, "      - series: %s\n        values: '%s+0x20'\n", strconv.Quote(series), strconv.FormatFloat(v, 'f', -1, 64))
			}
		}
	}
	f.WriteString("    promql_expr_test:\n")
	vars := strings.NewReplacer("$cluster", ".*", "$node", ".*")
	for _, q := range dashboardTargets(t) {
		// One sample per node and cluster when the query returns anything
		// for that node; none when it returns nothing.
		expr := "count by (node, cluster) (" + vars.Replace(q.Expr) + ") > bool 0"
		fmt.Fprintf(&f, "      - expr: %s\n        eval_time: 15m\n        exp_samples:\n", strconv.Quote(expr))
		for _, node := range nodes {
			fmt.Fprintf(&f, "          - labels: %s\n            value: 1\n", strconv.Quote(`{cluster="prod-east", node="`+node+`"}`))
		}
	}
	path := filepath.Join(t.TempDir(), "dashboard.test.yaml")
	if err := os.WriteFile(path, []byte(f.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "test", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", path, err, out)
	}
}

// The dashboard is one Grafana can lay out: panels of a known type with
// distinct ids, inside the 24-column grid, none over another, and a row
// before every chart.
func TestDashboardLayout(t *testing.T) {
	b, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	type grid struct{ X, Y, W, H int }
	var d struct {
		SchemaVersion int `json:"schemaVersion"`
		Panels        []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			GridPos grid   `json:"gridPos"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.SchemaVersion != 39 {
		t.Errorf("schemaVersion %d, want 39", d.SchemaVersion)
	}
	ids := map[int]string{}
	var placed []grid
	rows := 0
	for _, p := range d.Panels {
		switch p.Type {
		case "row":
			rows++
		case "timeseries", "state-timeline", "stat":
			if rows == 0 {
				t.Errorf("%s: before the first row", p.Title)
			}
		default:
			t.Errorf("%s: panel type %q", p.Title, p.Type)
		}
		if other, ok := ids[p.ID]; ok || p.ID <= 0 {
			t.Errorf("%s: id %d (also %q)", p.Title, p.ID, other)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for _, o := range placed {
			if g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
				t.Errorf("%s: gridPos %+v overlaps %+v", p.Title, g, o)
			}
		}
		placed = append(placed, g)
	}
}
