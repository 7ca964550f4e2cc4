package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/importer"
)

func importCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "import keepalived|haproxy FILE [keepalived|haproxy FILE]",
		Short: "Convert keepalived.conf and haproxy.cfg into one vigil.yaml",
		Long: `Convert keepalived.conf (vrrp_instance, vrrp_script, track_script,
track_interface, virtual_ipaddress, unicast_peer, authentication, notify,
vrrp_sync_group) and haproxy.cfg (frontend/backend/listen in mode tcp,
balance, server ... check, option httpchk, check-ssl, inter/fall/rise,
monitor-uri) into one vigil config, printed or written with -o. Every line
not converted is listed with its file and line on stderr and in the
output's header. The result is validated as vigil check would.
Exit 0 if nothing was lost, 3 if some behaviour was not converted, 2 if
the result does not validate.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 || len(args)%2 != 0 {
				return &exitError{2, fmt.Errorf("want pairs of keepalived|haproxy FILE")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			all := &importer.Result{}
			for i := 0; i < len(args); i += 2 {
				kind, file := args[i], args[i+1]
				src, err := os.ReadFile(file)
				if err != nil {
					return &exitError{2, err}
				}
				var r *importer.Result
				switch kind {
				case "keepalived":
					r, err = importer.Keepalived(file, string(src))
				case "haproxy":
					r, err = importer.HAProxy(file, string(src))
				default:
					return &exitError{2, fmt.Errorf("%q: want keepalived or haproxy", kind)}
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
	return cmd
}
