package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/garp"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

func scanCmd() *cobra.Command {
	var (
		ifname   string
		duration time.Duration
		ipv6     bool
	)
	cmd := &cobra.Command{
		Use:   "scan",
		Short: "List the VRRP groups heard on an interface (passive) and suggest free VRIDs",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			gs, err := vrrp.Scan(ctx, ifname, ipv6, duration, slog.New(slog.DiscardHandler))
			if err != nil && ctx.Err() == nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VRID\tVERSION\tSOURCE\tPRIORITY\tINTERVAL\tADVERTS\tBAD\tVIPS")
			for _, g := range gs {
				fmt.Fprintf(w, "%d\tv%d\t%s\t%d\t%v\t%d\t%d\t%v\n", g.VRID, g.Version, g.Source, g.Priority, g.Interval, g.Adverts, g.Bad, g.VIPs)
			}
			w.Flush()
			fmt.Fprintf(cmd.OutOrStdout(), "%d speakers in %v on %s; free VRIDs: %v\n", len(gs), duration, ifname, vrrp.FreeVRIDs(gs, 5))
			return nil
		},
	}
	cmd.Flags().StringVarP(&ifname, "interface", "i", "", "interface to listen on (required)")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "how long to listen")
	cmd.Flags().BoolVar(&ipv6, "ipv6", false, "listen for IPv6 VRRP (ff02::12) instead of IPv4")
	_ = cmd.MarkFlagRequired("interface")
	return cmd
}

func arpAuditCmd() *cobra.Command {
	var (
		ifname string
		wait   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "arp-audit -i IFACE VIP...",
		Short: "Ask the wire which MACs answer ARP for each VIP; exit 3 if any VIP has more than one",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vips := make([]netip.Addr, len(args))
			for i, a := range args {
				ip, err := netip.ParseAddr(a)
				if err != nil || !ip.Is4() {
					return &exitError{2, fmt.Errorf("%q is not an IPv4 address", a)}
				}
				vips[i] = ip
			}
			answers := make([]string, len(vips))
			counts := make([]int, len(vips))
			malformed := make([]int, len(vips))
			errs := make([]error, len(vips))
			var wg sync.WaitGroup
			for i, ip := range vips {
				wg.Go(func() {
					r, err := garp.Probe(context.Background(), ifname, ip, wait)
					var s []string
					for _, m := range r.MACs {
						s = append(s, m.String())
					}
					answers[i], counts[i], malformed[i], errs[i] = strings.Join(s, ","), len(r.MACs), r.Malformed, err
				})
			}
			wg.Wait()
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "VIP\tANSWERED BY\tMALFORMED ARP IGNORED\tVERDICT")
			conflicts := 0
			for i, ip := range vips {
				verdict := "ok"
				switch {
				case errs[i] != nil:
					verdict = "error: " + errs[i].Error()
				case counts[i] == 0:
					verdict, answers[i] = "no answer", "-"
				case counts[i] > 1:
					verdict = "CONFLICT: several hosts answer"
					conflicts++
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", ip, answers[i], malformed[i], verdict)
			}
			w.Flush()
			for _, err := range errs {
				if err != nil {
					return err
				}
			}
			if conflicts > 0 {
				return &exitError{3, fmt.Errorf("%d VIPs answered by more than one MAC", conflicts)}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&ifname, "interface", "i", "", "interface to ask on (required)")
	cmd.Flags().DurationVar(&wait, "wait", time.Second, "how long to collect answers")
	_ = cmd.MarkFlagRequired("interface")
	return cmd
}
