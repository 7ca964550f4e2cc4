package supervisor

import (
	"testing"

	"github.com/vigil-lb/vigil/internal/config"
)

const checksYAML = `checks:
  - {name: readyz, http: {url: "https://127.0.0.1:6443/readyz", insecure_skip_verify: true}}
  - {name: script, exec: {script: "true"}}
balancers:
  - name: api
    listen: ["127.0.0.1:9445"]
    backends: [{address: "10.0.0.11:6443"}, {address: "10.0.0.12:6443"}]
    check: {http: {path: /readyz, tls: true}, interval: 1s}
`

func specKeys(t *testing.T, src string) map[string]string {
	t.Helper()
	cfg, err := config.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	specs, err := checkSpecs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range specs {
		out[s.name] = s.key
	}
	return out
}

// A reload of the same file keeps every check runner: keys depend on the
// check's settings only, not on where the parsed config lives in memory.
func TestCheckKeysChangeOnlyWithTheCheck(t *testing.T) {
	a, b := specKeys(t, checksYAML), specKeys(t, checksYAML)
	if len(a) != 4 {
		t.Fatalf("%d specs", len(a))
	}
	for name, k := range a {
		if b[name] != k {
			t.Errorf("%s: key changed between two parses of the same config:\n%s\n%s", name, k, b[name])
		}
	}
	c := specKeys(t, checksYAML[:len(checksYAML)-len("interval: 1s}\n")]+"interval: 2s}\n")
	if c["balancer/api/10.0.0.11:6443"] == a["balancer/api/10.0.0.11:6443"] || c["readyz"] != a["readyz"] {
		t.Error("a changed balancer check must change only its backends' keys")
	}
}
