package api

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// The VRRP table names the master by node and priority, falls back to its
// address when the node is unknown, and says what the last transition was
// and why; wide adds the address, tracking and counters.
func TestInstanceRows(t *testing.T) {
	unknown := sample()
	unknown.Instances[1].MasterNode = ""
	none := sample()
	none.Instances[0].Master, none.Instances[0].MasterNode, none.Instances[0].LastTransition = "", "", nil
	for _, c := range []struct {
		name string
		snap Snapshot
		wide bool
		want []string // regexps, each must match
		not  []string // substrings that must not appear
	}{
		{"by node", sample(), false, []string{
			`(?m)^api +eth0 +51 v3 +MASTER +150 +lb1 \(150\) +192\.0\.2\.10 .*BACKUP>MASTER: master down timer expired: lb2 \(10\.0\.0\.2\) \(priority 200\) silent for 3\.609s$`,
			`(?m)^ingress .* BACKUP +50 \(100\) +lb2 \(90\) .*MASTER>BACKUP: tracking lowered our priority 100 to 50: .*check api-readyz down \(weight -50\)$`,
		}, []string{"TRACKED", "10.0.0.2 (90)"}},
		{"node unknown", unknown, false, []string{`(?m)^ingress .* BACKUP +50 \(100\) +10\.0\.0\.2 \(90\) `}, nil},
		{"no master, no transition yet", none, false, []string{`(?m)^api +eth0 +51 v3 +MASTER +150 +- +192\.0\.2\.10 .* -$`}, nil},
		{"wide", sample(), true, []string{
			`(?m)^VRRP INSTANCE .*TRANSITIONS +ADVERTS OUT/IN +PEERS +TRACKED +CONFLICT +LAST TRANSITION$`,
			`(?m)^ingress .* lb2 10\.0\.0\.2 \(90\) .* 1 +0/300 +- +check api-readyz down \(weight -50\) `,
			`(?m)^web +192\.0\.2\.101/32 +lb2 +NO +lb2 > lb1 +here \(choice 2 of 2\)`,
		}, nil},
		{"pools", sample(), false, []string{
			`(?m)^VRRP POOL +VIP +PREFERRED +ON PREFERRED +WHY$`,
			`(?m)^web +192\.0\.2\.101/32 +lb2 +NO +here \(choice 2 of 2\): lb2 is not advertising`,
			`(?m)^web +192\.0\.2\.102/32 +lb1 +yes +here, its preferred node$`,
		}, []string{"RANKING"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := (Table{Wide: c.wide}).Write(&out, c.snap, t0); err != nil {
				t.Fatal(err)
			}
			for _, re := range c.want {
				if !regexp.MustCompile(re).MatchString(out.String()) {
					t.Errorf("no match for %s in:\n%s", re, out.String())
				}
			}
			for _, s := range c.not {
				if strings.Contains(out.String(), s) {
					t.Errorf("%q in:\n%s", s, out.String())
				}
			}
		})
	}
}

// The conflict column is there only while some instance has a conflict.
func TestConflictColumnOnlyWithConflicts(t *testing.T) {
	snap := sample()
	snap.Instances[0].Foreign, snap.Instances[1].ARPConflictsNow = nil, nil
	var out bytes.Buffer
	WriteTable(&out, snap, t0)
	if strings.Contains(out.String(), "CONFLICT") {
		t.Fatalf("a CONFLICT column without conflicts:\n%s", out.String())
	}
}

func TestFilter(t *testing.T) {
	names := func(s Snapshot) string {
		var out []string
		for _, in := range s.Instances {
			out = append(out, "instance "+in.Name)
		}
		for _, b := range s.Balancers {
			out = append(out, "balancer "+b.Name)
		}
		for _, c := range s.Checks {
			out = append(out, "check "+c.Name)
		}
		for _, sv := range s.Services {
			out = append(out, "service "+sv.Service)
		}
		if s.BGP != nil || s.Kubernetes != nil || len(s.Interfaces) > 0 || len(s.Pools) > 0 || s.Allocator != nil {
			out = append(out, "other sections")
		}
		return strings.Join(out, ", ")
	}
	for _, c := range []struct{ kind, name, want, err string }{
		{"instance", "api", "instance api", ""},
		{"instances", "", "instance api, instance ingress, instance web-192.0.2.101, instance web-192.0.2.102", ""},
		{"vrrp", "ingress", "instance ingress", ""},
		{"pool", "web", "instance web-192.0.2.101, instance web-192.0.2.102", ""},
		{"balancer", "api", "balancer api, check balancer/api/10.0.0.12:6443", ""},
		{"balancers", "", "balancer api, balancer web, balancer udp, check balancer/api/10.0.0.12:6443", ""},
		{"check", "api-readyz", "check api-readyz", ""},
		{"service", "web/db", "service web/db", ""},
		{"instance", "nope", "", `no instance "nope" (known: api, ingress, web-192.0.2.101, web-192.0.2.102)`},
		{"pool", "nope", "", `no pool "nope" (known: web)`},
		{"bogus", "", "", `status "bogus": want one of instance, pool, balancer, check, service`},
	} {
		got, err := Filter(sample(), c.kind, c.name)
		switch {
		case c.err != "":
			if err == nil || err.Error() != c.err {
				t.Errorf("Filter(%s, %s): err %v, want %q", c.kind, c.name, err, c.err)
			}
		case err != nil:
			t.Errorf("Filter(%s, %s): %v", c.kind, c.name, err)
		case names(got) != c.want:
			t.Errorf("Filter(%s, %s) = %s, want %s", c.kind, c.name, names(got), c.want)
		case got.Node != "lb1" || got.Version == "":
			t.Errorf("Filter(%s, %s) lost the header: %+v", c.kind, c.name, got)
		}
	}
}
