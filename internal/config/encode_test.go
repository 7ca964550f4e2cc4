package config

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// roundTrip marshals a validated config, parses the result and fails unless
// the model is the same (a nil list and an empty one are the same config)
// and marshalling it again gives the same bytes.
func roundTrip(t testing.TB, c *Config) []byte {
	t.Helper()
	y, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(y)
	if err != nil {
		t.Fatalf("Marshal wrote a config that does not validate: %v\n%s", err, y)
	}
	if d := cmp.Diff(c, c2, cmpopts.IgnoreUnexported(Config{}), cmpopts.EquateEmpty()); d != "" {
		t.Fatalf("Parse(Marshal(c)) differs from c (-c +parsed):\n%s\n%s", d, y)
	}
	y2, err := Marshal(c2)
	if err != nil {
		t.Fatal(err)
	}
	if string(y2) != string(y) {
		t.Fatalf("Marshal is not stable:\n%s\nthen\n%s", y, y2)
	}
	return y
}

func docsExample(t testing.TB) string { return docsBlock(t, "## Example\n\n") }

// docsBlock returns the first yaml block after heading in docs/config.md.
func docsBlock(t testing.TB, heading string) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), heading)
	_, rest, ok2 := strings.Cut(rest, "```yaml\n")
	example, _, ok3 := strings.Cut(rest, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatalf("docs/config.md has no yaml block after %q", heading)
	}
	return example
}

// Every config of the tests, with all its defaults filled in by
// validation, comes back from Marshal and Parse as the same model.
func TestMarshalRoundTrip(t *testing.T) {
	for name, src := range map[string]string{
		"good": good, "balancer": goodBalancer, "bgp": goodBGP, "pool": poolConfig, "kube": goodKube, "docs": docsExample(t),
		"docs-kubernetes": docsBlock(t, "## Kubernetes\n"), "services": goodServices, "docs-services": docsBlock(t, "### `kubernetes.services`\n"),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Parse([]byte(src))
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, c)
		})
	}
}

// Zeros that mean something survive: pointers to zero, an empty check
// mapping, and zero keys the file sets where unset would take a default.
func TestMarshalKeepsMeaningfulZeros(t *testing.T) {
	c, err := Parse([]byte(`cluster: c
vrrp:
  instances:
    - {name: a, interface: eth0, preempt: false, accept: false, vips: [192.0.2.1], garp: {count: 0, refresh: 0s}}
balancers:
  - {name: b, listen: [":80"], backends: [{address: "10.0.0.1:80", weight: 0}], check: {}, retries: 0, drain_timeout: 0s}
api: {http: ""}
`))
	if err != nil {
		t.Fatal(err)
	}
	y := roundTrip(t, c)
	c2, _ := Parse(y)
	in, b := c2.VRRP.Instances[0], c2.Balancers[0]
	if *in.Preempt || *in.Accept || *in.GARP.Count != 0 || *in.GARP.Refresh != 0 || *b.Backends[0].Weight != 0 ||
		b.Check == nil || *b.Retries != 0 || b.DrainTimeout != 0 || c2.API.HTTP != "" {
		t.Fatalf("a zero was lost:\n%s", y)
	}
}

// A Config built in memory is written with only what it sets; what it
// leaves zero takes its default when read.
func TestMarshalWritesOnlyWhatIsSet(t *testing.T) {
	no := false
	c := &Config{
		VRRP: VRRP{Instances: []Instance{{
			Name: "api", Interface: "eth0", VRID: 7, Preempt: &no, AdvertInterval: 1500 * time.Millisecond,
			VIPs: []string{"192.0.2.10/32"}, Track: Track{Interfaces: []TrackRef{{Name: "eth1"}}},
		}}},
		Balancers: []Balancer{{Name: "web", Listen: []string{":443"}, Backends: []Backend{{Address: "10.0.0.1:443"}}}},
		API:       API{Socket: "/run/v.sock"},
	}
	y, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := `vrrp:
  instances:
    - name: api
      interface: eth0
      vrid: 7
      advert_interval: 1.5s
      preempt: false
      vips: [192.0.2.10/32]
      track:
        interfaces: [{name: eth1}]
balancers:
  - name: web
    listen: [':443']
    backends:
      - address: 10.0.0.1:443
api:
  socket: /run/v.sock
`
	if string(y) != want {
		t.Fatalf("got\n%s\nwant\n%s", y, want)
	}
	p, err := Parse(y)
	if err != nil {
		t.Fatal(err)
	}
	if p.API.HTTP != DefaultHTTP || p.VRRP.Instances[0].Priority != DefaultPriority {
		t.Fatalf("unset keys did not take their defaults: %+v %+v", p.API, p.VRRP.Instances[0])
	}
}

func TestMarshalEmpty(t *testing.T) {
	y, err := Marshal(&Config{})
	if err != nil || string(y) != "{}\n" {
		t.Fatalf("%q %v", y, err)
	}
}
