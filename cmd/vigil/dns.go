package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/config"
)

func dnsCmd() *cobra.Command {
	var (
		path string
		zone string
		ttl  int
	)
	cmd := &cobra.Command{
		Use:   "dns --zone ZONE NAME",
		Short: "Print A/AAAA records spreading NAME over the VIPs of the pool or instance NAME",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				return &exitError{2, err}
			}
			name := args[0]
			var vips []string
			for _, p := range cfg.VRRP.Pools {
				if p.Name == name {
					vips = p.VIPs
				}
			}
			for _, in := range cfg.VRRP.Instances {
				if in.Name == name {
					vips = in.VIPs
				}
			}
			if vips == nil {
				return &exitError{2, fmt.Errorf("no pool or instance named %q in %s", name, path)}
			}
			fqdn := name + "." + strings.Trim(zone, ".") + "."
			for _, v := range vips {
				p, _ := config.ParseVIP(v) // validated by Load
				kind := "A"
				if p.Addr().Is6() {
					kind = "AAAA"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%d\tIN\t%s\t%s\n", fqdn, ttl, kind, p.Addr())
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/vigil/vigil.yaml", "config file")
	cmd.Flags().StringVar(&zone, "zone", "", "DNS zone, e.g. example.com (required)")
	cmd.Flags().IntVar(&ttl, "ttl", 60, "record TTL in seconds")
	_ = cmd.MarkFlagRequired("zone")
	return cmd
}
