package config

import (
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// A clone equals the original and shares no memory with it, for every
// config of the tests (which between them set every pointer of the schema).
func TestCloneIsDeep(t *testing.T) {
	for name, src := range map[string]string{
		"good": good, "balancer": goodBalancer, "bgp": goodBGP, "pool": poolConfig, "kube": goodKube, "docs": docsExample(t),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Parse([]byte(src))
			if err != nil {
				t.Fatal(err)
			}
			cl := c.Clone()
			if d := cmp.Diff(c, cl, cmpopts.IgnoreUnexported(Config{})); d != "" {
				t.Fatalf("clone differs (-orig +clone):\n%s", d)
			}
			if cl.Line("vrrp") != c.Line("vrrp") {
				t.Fatal("clone lost the line index")
			}
			noSharing(t, "Config", reflect.ValueOf(c).Elem(), reflect.ValueOf(cl).Elem())
		})
	}
	if (*Config)(nil).Clone() != nil {
		t.Fatal("nil.Clone() != nil")
	}
}

// noSharing fails where a and b hold the same pointer or slice array.
func noSharing(t *testing.T, path string, a, b reflect.Value) {
	t.Helper()
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() {
			return
		}
		if a.Pointer() == b.Pointer() {
			t.Errorf("%s: pointer shared", path)
		}
		noSharing(t, path, a.Elem(), b.Elem())
	case reflect.Slice:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			t.Errorf("%s: slice shared", path)
		}
		for i := range a.Len() {
			noSharing(t, path+"[]", a.Index(i), b.Index(i))
		}
	case reflect.Map:
		if !a.IsNil() && a.Pointer() == b.Pointer() {
			t.Errorf("%s: map shared", path)
		}
	case reflect.Struct:
		for i := range a.NumField() {
			if a.Type().Field(i).IsExported() {
				noSharing(t, path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))
			}
		}
	}
}
