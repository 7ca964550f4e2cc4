package main

import (
	"fmt"
	"net"
	"os"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vishvananda/netlink"
)

// realserverLabel marks the VIPs `vigil realserver` puts on the loopback.
const realserverLabel = "lo:vdsr"

// arpSysctls make a real server keep quiet about a VIP on its loopback: it
// answers ARP only for addresses of the asking interface (arp_ignore=1) and
// never announces the VIP as a source (arp_announce=2). "all" wins over
// every interface's own value for both.
var arpSysctls = map[string]string{
	"/proc/sys/net/ipv4/conf/all/arp_ignore":   "1",
	"/proc/sys/net/ipv4/conf/all/arp_announce": "2",
}

func realserverCmd() *cobra.Command {
	var vips []string
	var undo bool
	cmd := &cobra.Command{
		Use:   "realserver --vip VIP [--vip VIP...] [--undo]",
		Short: "Prepare this host as a real server behind a dsr balancer (LVS-DR style)",
		Long: `Put each VIP on the loopback (as a host route, so the server accepts packets
for it) and set arp_ignore=1 and arp_announce=2, so it never answers ARP for
the VIP or uses it as an ARP source: the balancer alone owns the VIP on the
wire. --undo removes the VIPs, and the ARP settings once no such VIP is left.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(vips) == 0 {
				return &exitError{2, fmt.Errorf("--vip is required")}
			}
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return fmt.Errorf("loopback: %w", err)
			}
			for _, v := range vips {
				p, err := config.ParseVIP(v)
				if err != nil || p.Bits() != p.Addr().BitLen() {
					return &exitError{2, fmt.Errorf("--vip %q is not an address (a host route)", v)}
				}
				a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
				if p.Addr().Is4() {
					a.Label = realserverLabel
				} else {
					a.Flags = 0x02 // IFA_F_NODAD
				}
				if undo {
					if err := netlink.AddrDel(lo, a); err != nil && !os.IsNotExist(err) {
						fmt.Fprintf(cmd.ErrOrStderr(), "remove %s from lo: %v\n", p, err)
					}
					continue
				}
				if err := netlink.AddrReplace(lo, a); err != nil {
					return fmt.Errorf("add %s to lo: %w", p, err)
				}
			}
			left := 0
			if undo {
				addrs, _ := netlink.AddrList(lo, netlink.FAMILY_V4)
				for _, a := range addrs {
					if a.Label == realserverLabel {
						left++
					}
				}
			}
			for path, v := range arpSysctls {
				switch {
				case undo && left > 0:
					continue
				case undo:
					v = "0"
				}
				if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
					return fmt.Errorf("sysctl %s: %w", path, err)
				}
			}
			state := "prepared"
			if undo {
				state = "restored"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "real server %s for %v\n", state, vips)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&vips, "vip", nil, "VIP the balancer sends to this host")
	cmd.Flags().BoolVar(&undo, "undo", false, "remove the VIPs and, when none is left, the ARP settings")
	return cmd
}
