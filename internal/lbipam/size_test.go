package lbipam

import (
	"net/netip"
	"testing"
)

func TestPoolSize(t *testing.T) {
	r := func(a, b string) Range { return Range{netip.MustParseAddr(a), netip.MustParseAddr(b)} }
	cases := []struct {
		p    Pool
		want float64
	}{
		{Pool{Ranges: []Range{r("192.0.2.10", "192.0.2.20")}}, 11},
		{Pool{Ranges: []Range{r("192.0.2.250", "192.0.3.5"), r("2001:db8::", "2001:db8::ff")}}, 12 + 256},
		{Pool{Ranges: []Range{r("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff")}}, 18446744073709551616},
		{Pool{}, 0},
	}
	for _, c := range cases {
		if got := c.p.Size(); got != c.want {
			t.Errorf("%v: size %v, want %v", c.p.Ranges, got, c.want)
		}
	}
}
