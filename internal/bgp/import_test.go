package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// A neighbor that sends vigil routes (here a second GoBGP speaker over
// loopback, sending 100) gets them counted and rejected: vigil's global
// RIB holds only its own announcement, which the neighbor receives.
func TestImportRejectsEveryRoute(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)

	router := server.NewBgpServer(server.LoggerOption(log, nil))
	go router.Serve()
	defer router.Stop()
	if err := router.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 64500, RouterId: "10.0.0.254",
		ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"}}}); err != nil {
		t.Fatal(err)
	}
	defer router.StopBgp(ctx, &api.StopBgpRequest{})
	if err := router.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 64512},
		Transport: &api.Transport{PassiveMode: true},
	}}); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		r := Route{Prefix: netip.MustParsePrefix(fmt.Sprintf("10.200.%d.0/24", i))}
		p, err := r.path()
		if err != nil {
			t.Fatal(err)
		}
		p.Attrs[1], _ = bgp.NewPathAttributeNextHop(netip.MustParseAddr("127.0.0.1"))
		if _, err := router.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}}); err != nil {
			t.Fatal(err)
		}
	}

	sp, err := Start(ctx, Config{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.1"), Listen: -1,
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 64500, Port: uint16(port), HoldTime: 9 * time.Second}}}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Stop(ctx)
	own := netip.MustParsePrefix("192.0.2.10/32")
	if err := sp.Announce(Route{Prefix: own}); err != nil {
		t.Fatal(err)
	}
	var ss []Session
	for t0 := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		ss = sp.Sessions(ctx)
		if len(ss) == 1 && ss[0].State == "established" && ss[0].RoutesReceived == 100 {
			break
		}
		if time.Since(t0) > 60*time.Second {
			t.Fatalf("sessions %+v: want established with 100 routes received", ss)
		}
	}
	var rib []string
	err = sp.s.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC},
		func(prefix bgp.NLRI, _ []*apiutil.Path) { rib = append(rib, prefix.String()) })
	if err != nil {
		t.Fatal(err)
	}
	if len(rib) != 1 || rib[0] != own.String() {
		t.Fatalf("vigil's global RIB %v: want only its own %s", rib, own)
	}
	got := 0
	for t0 := time.Now(); got == 0 && time.Since(t0) < 30*time.Second; time.Sleep(50 * time.Millisecond) {
		router.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_IN, Name: "127.0.0.1", Family: bgp.RF_IPv4_UC},
			func(prefix bgp.NLRI, _ []*apiutil.Path) {
				if prefix.String() == own.String() {
					got++
				}
			})
	}
	if got != 1 {
		t.Fatal("the neighbor did not receive vigil's announcement")
	}
	t.Logf("session %+v; vigil's RIB %v", ss[0], rib)
}
