package kube

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

func sampleSnapshot() Snapshot {
	return Snapshot{
		Nodes: []Node{
			{
				Name:   "cp-0",
				Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""},
				Addresses: []NodeAddress{
					{Type: "InternalIP", Address: netip.MustParseAddr("10.0.0.10")},
					{Type: "InternalIP", Address: netip.MustParseAddr("2001:db8::10")},
				},
				Ready: true,
			},
			{Name: "worker-1", Addresses: []NodeAddress{{Type: "InternalIP", Address: netip.MustParseAddr("10.0.0.21")}}},
		},
		Slices: []Slice{{
			Namespace:   "openshift-ingress",
			Name:        "router-default-abc12",
			Service:     "router-default",
			AddressType: "IPv4",
			Ports:       []Port{{Name: "https", Port: 443, Protocol: "TCP"}},
			Endpoints: []Endpoint{
				{Addresses: []netip.Addr{netip.MustParseAddr("10.128.0.5")}, Ready: true, NodeName: "worker-1"},
				{Addresses: []netip.Addr{netip.MustParseAddr("10.128.0.6")}, Ready: false},
			},
		}},
	}
}

func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "kubernetes.json") // dirs created
	want := sampleSnapshot()
	if err := writeState(path, want); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read back\n%+v\nwant\n%+v", got, want)
	}
	eps := got.ReadyEndpoints(ServiceRef{"openshift-ingress", "router-default"}, "https")
	if len(eps) != 1 || eps[0].Address != netip.MustParseAddrPort("10.128.0.5:443") {
		t.Errorf("ready endpoints of the read snapshot: %v", eps)
	}
}

func TestStateAtomicReplace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kubernetes.json")
	first := sampleSnapshot()
	if err := writeState(path, first); err != nil {
		t.Fatal(err)
	}
	second := Snapshot{Nodes: []Node{{Name: "only", Addresses: []NodeAddress{{Type: "InternalIP", Address: netip.MustParseAddr("192.0.2.1")}}}}}
	if err := writeState(path, second); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, second) {
		t.Errorf("after replace: %+v, want %+v", got, second)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the state file (no temp files left)", len(entries))
	}

	// A write that cannot rename (the path is a non-empty directory)
	// fails naming the path and leaves no temp file behind.
	blocked := filepath.Join(dir, "blocked")
	if err := os.MkdirAll(filepath.Join(blocked, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	err = writeState(blocked, first)
	if err == nil || !strings.Contains(err.Error(), "state file "+blocked) {
		t.Fatalf("error %v, want one naming %s", err, blocked)
	}
	entries, _ = os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temp file %s left after a failed write", e.Name())
		}
	}
}

func TestReadStateErrors(t *testing.T) {
	good, err := marshalState(sampleSnapshot())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, data, want string
	}{
		{"empty", "", "state file: empty"},
		{"blank", " \n", "state file: empty"},
		{"truncated", string(good[:len(good)/2]), "state file: "},
		{"not JSON", "{nodes: 1}", "state file: not JSON at byte 2"},
		{"wrong type", `{"version":1,"nodes":{}}`, "state file: json: cannot unmarshal"},
		{"no version", `{"nodes":[]}`, "state file: version 0, want 1"},
		{"future version", `{"version":2}`, "state file: version 2, want 1"},
		{"bad address", `{"version":1,"nodes":[{"name":"a","addresses":[{"type":"InternalIP","address":"10.0.0.300"}]}]}`, "state file: "},
		{"empty address", `{"version":1,"nodes":[{"name":"a","addresses":[{"type":"InternalIP","address":""}]}]}`, "state file: nodes[0] a: addresses[0]: no address"},
		{"node without name", `{"version":1,"nodes":[{"name":""}]}`, "state file: nodes[0]: no name"},
		{"node twice", `{"version":1,"nodes":[{"name":"a"},{"name":"a"}]}`, "state file: nodes[1] a: listed twice"},
		{"slice without name", `{"version":1,"slices":[{"namespace":"ns"}]}`, "state file: slices[0]: no namespace/name"},
		{"port out of range", `{"version":1,"slices":[{"namespace":"ns","name":"s","ports":[{"port":70000}]}]}`, "state file: slices[0] ns/s: ports[0]: 70000 is out of range 1..65535"},
		{"endpoint empty address", `{"version":1,"slices":[{"namespace":"ns","name":"s","endpoints":[{"addresses":[""]}]}]}`, "state file: slices[0] ns/s: endpoints[0]: addresses[0]: no address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadState([]byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ReadState: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadStateCorruptNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubernetes.json")
	if err := os.WriteFile(path, []byte(`{"version":1,"nodes":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadState(path)
	if err == nil || !strings.HasPrefix(err.Error(), "kubernetes: "+path+": state file: ") {
		t.Fatalf("error %v, want it to start with the path", err)
	}
}

func TestReadStateSorts(t *testing.T) {
	data := `{"version":1,"nodes":[{"name":"b"},{"name":"a"}],"slices":[{"namespace":"y","name":"a"},{"namespace":"x","name":"b"}]}`
	s, err := ReadState([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if s.Nodes[0].Name != "a" || s.Slices[0].Namespace != "x" {
		t.Errorf("not sorted: %+v", s)
	}
}

func FuzzReadState(f *testing.F) {
	good, err := marshalState(sampleSnapshot())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	if golden, err := os.ReadFile(filepath.Join("testdata", "state-v1.json")); err == nil {
		f.Add(golden)
	}
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"nodes":[{"name":"a","labels":{},"addresses":[{"type":"x","address":"fe80::1%eth0"}]}]}`))
	f.Add([]byte(`{"version":1,"slices":[{"namespace":"n","name":"s","ports":[{"port":1}],"endpoints":[{"addresses":["::ffff:1.2.3.4"]}]}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ReadState(data)
		if err != nil {
			return
		}
		// What ReadState accepts survives a write and a read unchanged.
		b1, err := marshalState(s)
		if err != nil {
			t.Fatalf("marshal of an accepted snapshot: %v", err)
		}
		s2, err := ReadState(b1)
		if err != nil {
			t.Fatalf("re-read of a written snapshot: %v\n%s", err, b1)
		}
		b2, err := marshalState(s2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b1, b2) {
			t.Fatalf("round trip changed the snapshot:\n%s\n%s", b1, b2)
		}
		_ = s2.ReadyEndpoints(ServiceRef{"n", "s"}, "1")
	})
}

// The format is a contract with the next version of vigil, which reads
// the file this one wrote: testdata/state-v1.json is what v1 writes.
func TestStateGolden(t *testing.T) {
	golden := filepath.Join("testdata", "state-v1.json")
	got, err := marshalState(sampleSnapshot())
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("state file format changed (go test -run TestStateGolden -update rewrites %s):\n%s", golden, got)
	}
	snap, err := ReadState(want)
	if err != nil || !reflect.DeepEqual(snap, sampleSnapshot()) {
		t.Errorf("golden file reads as %+v, %v", snap, err)
	}
}
