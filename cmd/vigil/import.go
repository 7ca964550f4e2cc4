package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/importer"
)

func importCmd() *cobra.Command {
	var out string
	var ml importer.MetalLBOptions
	cmd := &cobra.Command{
		Use:   "import [keepalived|haproxy FILE]... [metallb FILE...]",
		Short: "Convert keepalived.conf, haproxy.cfg and MetalLB's objects into one vigil.yaml",
		Long: `Convert keepalived.conf (vrrp_instance, vrrp_script, track_script,
track_interface, virtual_ipaddress, unicast_peer, authentication, notify,
vrrp_sync_group) and haproxy.cfg (frontend/backend/listen in mode tcp,
balance, server ... check, option httpchk, check-ssl, inter/fall/rise,
monitor-uri) into one vigil config, printed or written with -o.

metallb takes every remaining argument as a file of MetalLB objects
(multi-document YAML or a List, as kubectl get -o yaml gives; - is stdin),
read together: IPAddressPool, L2Advertisement, BGPAdvertisement, BGPPeer
and Community become kubernetes.services pools and the bgp section.
--interface is required when an L2Advertisement names no interfaces;
--router-id when the BGPPeers set no routerID.

Track scripts that are curl GETs (inline, or a script file of them joined
by &&, as OpenShift's chk_ocp) become built-in http checks. Other scripts
and notify hooks are kept, and listed as NOT IN THE CONTAINER IMAGE: the
image is distroless, with no shell or curl to run them. A file of the wrong
kind (an haproxy.cfg given as keepalived, YAML) is refused in one line.

Every line not converted is listed with its file and line on stderr and in
the output's header. The result is validated as vigil check would.
Exit 0 if nothing was lost, 3 if some behaviour was not converted, 2 if
an input cannot be read or the result does not validate.`,
		Args: func(_ *cobra.Command, args []string) error {
			for i := 0; i < len(args); i += 2 {
				if args[i] == "metallb" {
					if i+1 == len(args) {
						return &exitError{2, fmt.Errorf("metallb: want at least one FILE")}
					}
					return nil
				}
				if i+1 == len(args) {
					return &exitError{2, fmt.Errorf("want pairs of keepalived|haproxy FILE, then metallb FILE...")}
				}
			}
			if len(args) == 0 {
				return &exitError{2, fmt.Errorf("want keepalived|haproxy FILE or metallb FILE...")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			all := &importer.Result{}
			for i := 0; i < len(args); i += 2 {
				kind, file := args[i], args[i+1]
				if kind == "metallb" {
					r, err := importMetalLB(cmd, args[i+1:], ml)
					if err != nil {
						return &exitError{2, err}
					}
					all.Merge(r)
					break
				}
				src, err := os.ReadFile(file)
				if err != nil {
					return &exitError{2, err}
				}
				var r *importer.Result
				switch kind {
				case "keepalived":
					// Script files are read where vigil import runs: on the
					// node, OpenShift's chk_ocp scripts become http checks.
					r, err = importer.KeepalivedWith(file, string(src), os.ReadFile)
				case "haproxy":
					r, err = importer.HAProxy(file, string(src))
				default:
					return &exitError{2, fmt.Errorf("%q: want keepalived, haproxy or metallb", kind)}
				}
				if err != nil {
					return &exitError{2, err}
				}
				all.Merge(r)
			}
			y, err := all.YAML()
			if err != nil {
				return err
			}
			for _, n := range all.Notes {
				fmt.Fprintln(cmd.ErrOrStderr(), n)
			}
			if _, err := config.Parse(y); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s", y)
				return &exitError{2, fmt.Errorf("the converted config does not validate:\n%w", err)}
			}
			if out == "" || out == "-" {
				cmd.OutOrStdout().Write(y)
			} else if err := os.WriteFile(out, y, 0o644); err != nil {
				return err
			}
			if all.Lost() {
				return &exitError{3, fmt.Errorf("some lines were not converted (listed above)")}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the config here instead of stdout")
	cmd.Flags().StringVar(&ml.Interface, "interface", "", "metallb: interface of l2 pools whose L2Advertisements name none")
	cmd.Flags().StringVar(&ml.RouterID, "router-id", "", "metallb: bgp.router_id (MetalLB takes the node's address)")
	return cmd
}

// importMetalLB reads the MetalLB files (- is stdin) and converts them
// together: advertisements in one file select pools in another.
func importMetalLB(cmd *cobra.Command, files []string, opts importer.MetalLBOptions) (*importer.Result, error) {
	var in []importer.MetalLBFile
	for _, f := range files {
		var src []byte
		var err error
		if f == "-" {
			src, err = io.ReadAll(cmd.InOrStdin())
			f = "stdin"
		} else {
			src, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, err
		}
		in = append(in, importer.MetalLBFile{Name: f, Src: string(src)})
	}
	return importer.MetalLB(in, opts)
}
