package vip

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// GuardTable is the nftables table vigil owns for accept mode.
const GuardTable = "vigil_accept"

// Guard implements VRRP Accept_Mode False (RFC 5798 section 6.1): a master
// that does not own its VIPs must not accept packets addressed to them. The
// kernel accepts anything sent to a local address, so an nftables rule drops
// IP traffic to the VIPs; ARP and neighbour discovery are not affected, so the
// segment still learns where the VIPs are. keepalived does the same in
// vrrp_strict mode.
type Guard struct {
	conn  *nftables.Conn
	table *nftables.Table
}

// NewGuard replaces vigil's accept-mode table with one that drops packets to
// vips. A table left by a crashed run is replaced, never added to.
func NewGuard(vips []netip.Addr) (*Guard, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("accept mode: nftables: %w", err)
	}
	g := &Guard{conn: conn, table: &nftables.Table{Family: nftables.TableFamilyINet, Name: GuardTable}}
	removeTable(conn, g.table)
	conn.AddTable(g.table)
	prio := nftables.ChainPriorityFilter
	chain := conn.AddChain(&nftables.Chain{Name: "input", Table: g.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: prio})
	for _, a := range vips {
		conn.AddRule(&nftables.Rule{Table: g.table, Chain: chain, Exprs: dropTo(a)})
	}
	if err := conn.Flush(); err != nil {
		return nil, fmt.Errorf("accept mode: install drop rules for %v: %w", vips, permission(err))
	}
	return g, nil
}

// dropTo matches packets whose destination is a and drops them, counting.
func dropTo(a netip.Addr) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if a.Is6() {
		proto, off, n = unix.NFPROTO_IPV6, 24, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// removeTable deletes t if it exists.
func removeTable(conn *nftables.Conn, t *nftables.Table) {
	tables, err := conn.ListTablesOfFamily(t.Family)
	if err != nil {
		return
	}
	for _, x := range tables {
		if x.Name == t.Name {
			conn.DelTable(t)
			_ = conn.Flush()
			return
		}
	}
}

// Close removes the table.
func (g *Guard) Close() error {
	g.conn.DelTable(g.table)
	if err := g.conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("accept mode: remove table %s: %w", GuardTable, err)
	}
	return nil
}

// RemoveStaleGuard deletes a table a crashed run left, when no instance
// wants accept mode off any more.
func RemoveStaleGuard() {
	if conn, err := nftables.New(); err == nil {
		removeTable(conn, &nftables.Table{Family: nftables.TableFamilyINet, Name: GuardTable})
	}
}
