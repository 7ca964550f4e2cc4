package redirect

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Table is the nftables table vigil owns for the redirects (family inet).
const Table = "vigil_redirect"

// nft keeps the rules in Table: a nat chain on prerouting for traffic
// that arrives and one on output for traffic the node sends itself, both
// at the dstnat priority, each holding one DNAT rule per installed Rule.
type nft struct {
	netns int // -1: the namespace of the calling thread
	table *nftables.Table
}

func newNFT(netns int) *nft {
	return &nft{netns: netns, table: &nftables.Table{Family: nftables.TableFamilyINet, Name: Table}}
}

func (n *nft) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if n.netns >= 0 {
		opts = append(opts, nftables.WithNetNSFd(n.netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

func (n *nft) chains() []*nftables.Chain {
	return []*nftables.Chain{
		{Name: "prerouting", Table: n.table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest},
		{Name: "output", Table: n.table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest},
	}
}

// Sync creates the table and chains when missing, then empties the chains
// and adds rules, all in one batch: the kernel applies it whole or not at
// all, so no rule is ever seen half-installed and no rule set half-changed.
func (n *nft) Sync(rules []Rule) error {
	c, err := n.conn()
	if err != nil {
		return err
	}
	c.AddTable(n.table)
	for _, ch := range n.chains() {
		ch = c.AddChain(ch)
		c.FlushChain(ch)
		for _, r := range rules {
			c.AddRule(&nftables.Rule{Table: n.table, Chain: ch, Exprs: dnat(r)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table inet %s: %w", Table, permission(err))
	}
	return nil
}

// Remove deletes the table when it exists.
func (n *nft) Remove() error {
	c, err := n.conn()
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(n.table.Family)
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", permission(err))
	}
	for _, t := range tables {
		if t.Name != Table {
			continue
		}
		c.DelTable(n.table)
		if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nftables: delete table inet %s: %w", Table, permission(err))
		}
	}
	return nil
}

// dnat is `meta nfproto ipvX ip[6] daddr VIP meta l4proto tcp tcp dport
// From counter dnat ip[6] to VIP:To`.
func dnat(r Rule) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if r.VIP.Is6() {
		proto, off, n = unix.NFPROTO_IPV6, 24, 16
	}
	port := func(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: r.VIP.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port(r.From)},
		&expr.Counter{},
		&expr.Immediate{Register: 1, Data: r.VIP.AsSlice()},
		&expr.Immediate{Register: 2, Data: port(r.To)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(proto), RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

func permission(err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (vigil needs CAP_NET_ADMIN)", err)
	}
	return err
}
