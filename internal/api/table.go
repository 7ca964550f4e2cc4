package api

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints a snapshot as vigil status shows it. now fixes the
// "ago" columns, so output can be compared in tests.
func WriteTable(out io.Writer, s Snapshot, now time.Time) error { return Table{}.Write(out, s, now) }

// Table is how vigil status prints a snapshot.
type Table struct {
	// Wide adds columns: each master's address, tracked items, adverts
	// and transition counts, unicast peers, a pool VIP's ranking.
	Wide bool
}

// Write prints s; now fixes the "ago" columns, so output can be compared
// in tests.
func (t Table) Write(out io.Writer, s Snapshot, now time.Time) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "node %s", s.Node)
	if s.Cluster != "" {
		fmt.Fprintf(w, "  cluster %s", s.Cluster)
	}
	fmt.Fprintf(w, "  %s  up %s\n", s.Version, round(now.Sub(s.Started)))
	t.instances(w, s.Instances, now)
	if len(s.Interfaces) > 0 {
		fmt.Fprintln(w, "\nINTERFACE\tGARP SENT\tGARP SUPPRESSED")
		for _, i := range s.Interfaces {
			fmt.Fprintf(w, "%s\t%d\t%d\n", i.Name, i.GARPSent, i.GARPSuppressed)
		}
	}
	if len(s.Checks) > 0 {
		fmt.Fprintln(w, "\nCHECK\tSTATE\tLATENCY\tPROBES\tFAILURES\tLAST ERROR")
		for _, c := range s.Checks {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\n", c.Name, upDown(c.Up), c.Latency.Round(100*time.Microsecond), c.Probes, c.Failures, dash(c.LastError))
		}
	}
	for _, b := range s.Balancers {
		if b.Mode == "dsr" && b.Error != "" {
			fmt.Fprintf(w, "\nBALANCER %s  dsr  listen %s  NOT RUNNING: %s\n", b.Name, strings.Join(b.Listen, ","), b.Error)
		} else if b.Mode == "dsr" {
			fmt.Fprintf(w, "\nBALANCER %s  dsr (xdp %s)  %s  listen %s  packets %d  bytes %d\n",
				b.Name, b.XDPMode, b.Algorithm, strings.Join(b.Listen, ","), b.Packets, b.Bytes)
		} else {
			fmt.Fprintf(w, "\nBALANCER %s  %s  listen %s  active %d  accepted %d  refused %d  no backend %d\n",
				b.Name, b.Algorithm, strings.Join(b.Listen, ","), b.Active, b.Accepted, b.Refused, b.NoBackend)
		}
		// FROM only when the cluster adds backends, so static configs read as before.
		from, fromHead := func(Backend) string { return "" }, ""
		if s.Kubernetes != nil {
			from, fromHead = func(be Backend) string { return "\t" + dash(be.Source) }, "\tFROM"
		}
		if b.Mode == "dsr" {
			fmt.Fprintln(w, "  BACKEND\tSTATE\tWEIGHT\tPACKETS\tBYTES"+fromHead)
			for _, be := range b.Backends {
				fmt.Fprintf(w, "  %s\t%s\t%d\t%d\t%d%s\n", be.Address, backendState(be), be.Weight, be.Packets, be.BytesIn, from(be))
			}
			for _, n := range b.Notes {
				fmt.Fprintf(w, "  NOTE: %s\n", n)
			}
			continue
		}
		fmt.Fprintln(w, "  BACKEND\tSTATE\tWEIGHT\tACTIVE\tTOTAL\tCONNECT ERRORS\tBYTES IN\tBYTES OUT"+fromHead)
		for _, be := range b.Backends {
			fmt.Fprintf(w, "  %s\t%s\t%d\t%d\t%d\t%d\t%d\t%d%s\n", be.Address, backendState(be), be.Weight, be.Active,
				be.Connections, be.ConnectErrors, be.BytesIn, be.BytesOut, from(be))
		}
	}
	if len(s.Redirects) > 0 {
		fmt.Fprintln(w, "\nREDIRECT\tTO\tBALANCER\tSTATE\tREASON")
		for _, r := range s.Redirects {
			state := "off"
			if r.Installed {
				state = "on"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.From, r.To, r.Balancer, state, dash(r.Reason))
		}
	}
	if len(s.Pools) > 0 {
		fmt.Fprintln(w, "\nPOOL\tANNOUNCE\tIN USE\tSIZE")
		for _, p := range s.Pools {
			fmt.Fprintf(w, "%s\t%s\t%d\t%.0f\n", p.Name, p.Announce, p.InUse, p.Size)
		}
	}
	if a := s.Allocator; a != nil {
		leader := dash(a.Leader)
		if a.Leading {
			leader += " (this node)"
		}
		fmt.Fprintf(w, "\nALLOCATOR leader %s  synced %v  services %d  held back %d\n", leader, a.Synced, a.Services, a.Held)
		if a.WatchError != "" {
			fmt.Fprintf(w, "  error: %s\n", a.WatchError)
		}
		for _, f := range a.Failures {
			fmt.Fprintf(w, "  %s: %s\n", f.Service, f.Reason)
		}
	}
	if len(s.Services) > 0 {
		fmt.Fprintln(w, "\nSERVICE\tADDRESS\tPOOL\tANNOUNCE\tOWNER\tHERE\tENDPOINTS")
		for _, sv := range s.Services {
			here := "-"
			if sv.Here {
				here = "yes"
			}
			ann := sv.Announce
			if sv.Local {
				ann += " (Local)"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", sv.Service, sv.Address, sv.Pool, ann, dash(sv.Owner), here, sv.Endpoints)
		}
	}
	if k := s.Kubernetes; k != nil {
		watch := "down"
		if k.WatchUp {
			watch = "up"
		}
		lastSync := "never"
		if !k.LastSync.IsZero() {
			lastSync = round(now.Sub(k.LastSync)).String() + " ago"
		}
		fmt.Fprintf(w, "\nKUBERNETES %s  watch %s  synced %v  members from %s  nodes %d  endpoint slices %d  last change read %s  changes applied %d\n",
			dash(k.Server), watch, k.Synced, k.Origin, k.Nodes, k.Slices, lastSync, k.ChangesApplied)
		if k.LastError != "" {
			fmt.Fprintf(w, "  error: %s\n", k.LastError)
		}
		if k.StateFileError != "" {
			fmt.Fprintf(w, "  state file: %s\n", k.StateFileError)
		}
		for _, n := range k.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
	if s.BGP != nil {
		fmt.Fprintf(w, "\nBGP NEIGHBOR\tASN\tSTATE\tSINCE\tLAST ERROR\n")
		for _, ss := range s.BGP.Sessions {
			since := "-"
			if !ss.Since.IsZero() {
				since = round(now.Sub(ss.Since)).String() + " ago"
			}
			lastError := dash(ss.LastError)
			if ss.Failures > 0 {
				lastError += fmt.Sprintf(" (%d in a row", ss.Failures)
				if !ss.RetryAt.IsZero() {
					lastError += ", retry in " + round(ss.RetryAt.Sub(now)).String()
				}
				lastError += ")"
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", ss.Neighbor, ss.ASN, ss.State, since, lastError)
		}
		fmt.Fprintf(w, "announced: %s\n", dash(strings.Join(s.BGP.Announced, ", ")))
	}
	if s.BFD != nil {
		fmt.Fprintf(w, "\nBFD NEIGHBOR\tSTATE\tREMOTE\tDISCRIMINATORS\tTX/RX\tDETECT\tSINCE\tFLAPS\tDIAG\n")
		for _, b := range s.BFD.Sessions {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d/%d\t%v/%v\t%v\t%s ago\t%d\t%s\n", b.Neighbor, b.State, b.RemoteState, b.LocalDiscr, b.RemoteDiscr,
				b.TxInterval, b.RxInterval, b.DetectionTime, round(now.Sub(b.Since)), b.Flaps, b.Diag)
		}
	}
	return w.Flush()
}

// instances prints the VRRP instances, and the pool VIPs among them.
func (t Table) instances(w io.Writer, ins []Instance, now time.Time) {
	if len(ins) == 0 {
		return
	}
	conflicts := false
	for _, in := range ins {
		conflicts = conflicts || conflict(in, now) != "-"
	}
	head := "\nVRRP INSTANCE\tIFACE\tVRID\tSTATE\tPRIO\tMASTER\tVIPS\tSINCE"
	if t.Wide {
		head += "\tTRANSITIONS\tADVERTS OUT/IN\tPEERS\tTRACKED"
	}
	if conflicts {
		head += "\tCONFLICT"
	}
	fmt.Fprintln(w, head+"\tLAST TRANSITION")
	for _, in := range ins {
		state := in.State
		if in.Resigned {
			state += " (RESIGNED)"
		}
		prio := fmt.Sprint(in.EffectivePriority)
		if in.EffectivePriority != in.Priority {
			prio += fmt.Sprintf(" (%d)", in.Priority)
		}
		fmt.Fprintf(w, "%s\t%s\t%d v%d\t%s\t%s\t%s\t%s\t%s ago", in.Name, in.Interface, in.VRID, in.Version,
			state, prio, master(in, t.Wide), strings.Join(in.VIPs, ","), round(now.Sub(in.Since)))
		if t.Wide {
			fmt.Fprintf(w, "\t%d\t%d/%d\t%s\t%s", in.Transitions, in.AdvertsSent, in.AdvertsReceived,
				dash(strings.Join(in.UnicastPeers, ",")), dash(strings.Join(in.Tracked, "; ")))
		}
		if conflicts {
			fmt.Fprintf(w, "\t%s", conflict(in, now))
		}
		fmt.Fprintf(w, "\t%s\n", lastTransition(in.LastTransition))
	}
	var pools []Instance
	for _, in := range ins {
		if in.Pool != nil {
			pools = append(pools, in)
		}
	}
	if len(pools) == 0 {
		return
	}
	head = "\nVRRP POOL\tVIP\tPREFERRED\tON PREFERRED"
	if t.Wide {
		head += "\tRANKING"
	}
	fmt.Fprintln(w, head+"\tWHY")
	for _, in := range pools {
		on := "NO"
		if in.Pool.OnPreferred {
			on = "yes"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s", in.Pool.Pool, strings.Join(in.VIPs, ","), in.Pool.Preferred, on)
		if t.Wide {
			fmt.Fprintf(w, "\t%s", strings.Join(in.Pool.Ranking, " > "))
		}
		fmt.Fprintf(w, "\t%s\n", in.Pool.Why)
	}
}

// master names the master by node and priority, with its address when
// wide or when its node is unknown.
func master(in Instance, wide bool) string {
	switch {
	case in.Master == "":
		return "-"
	case in.MasterNode == "":
		return fmt.Sprintf("%s (%d)", in.Master, in.MasterPriority)
	case wide:
		return fmt.Sprintf("%s %s (%d)", in.MasterNode, in.Master, in.MasterPriority)
	}
	return fmt.Sprintf("%s (%d)", in.MasterNode, in.MasterPriority)
}

// lastTransition reads "BACKUP>MASTER: why".
func lastTransition(t *Transition) string {
	if t == nil {
		return "-"
	}
	return t.PrevState + ">" + t.State + ": " + t.Reason
}

func conflict(in Instance, now time.Time) string {
	var parts []string
	if f := in.Foreign; f != nil {
		others := ""
		if n := len(f.Sources); n > 1 {
			others = fmt.Sprintf(" and %d other sources", n-1)
		}
		parts = append(parts, fmt.Sprintf("VRID used by %s%s (%s, VIPs %s, %s ago)", f.Source, others, f.Reason,
			strings.Join(f.VIPs, ","), round(now.Sub(f.LastSeen))))
	}
	// Only the conflicts of now: the counter (JSON, metrics) keeps the past.
	for _, c := range in.ARPConflictsNow {
		who := strings.Join(c.MACs, ",")
		switch {
		case c.Peer != "":
			who += " (peer " + c.Peer + ")"
		case len(c.Others) > 0:
			who += " (" + strings.Join(c.Others, ",") + ")"
		}
		parts = append(parts, fmt.Sprintf("ARP %s also answered by %s, %s ago", c.VIP, who, round(now.Sub(c.LastSeen))))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

func round(d time.Duration) time.Duration {
	if d < time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(time.Minute)
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "DOWN"
}

// backendState is up in lower case and the states that need a look (DOWN,
// DRAIN) in capitals, as checks show DOWN.
func backendState(be Backend) string {
	st := be.State
	if st == "" { // a daemon from before the state field
		st = BackendState(be.Up, be.Weight, be.Admin)
	}
	if st == BackendUp {
		return st
	}
	st = strings.ToUpper(st)
	if st == "DISABLED" {
		st += " (MAINT)" // HAProxy's word for it
	}
	if be.Admin == BackendDrain && be.State != BackendDrain {
		st += " (drain set)" // down now; drained once it is back
	}
	return st
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
