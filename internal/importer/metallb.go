package importer

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vigil-lb/vigil/internal/config"
	"k8s.io/apimachinery/pkg/labels"
)

// MetalLBOptions give what MetalLB's objects leave to each node but a
// vigil config must say.
type MetalLBOptions struct {
	// Interface is where an l2 pool answers ARP and NDP when its
	// L2Advertisements name no interfaces (MetalLB then answers on all).
	Interface string
	// RouterID is bgp.router_id; it overrides the BGPPeers' routerID.
	// MetalLB takes the node's address when they set none.
	RouterID string
}

// MetalLB converts MetalLB's configuration objects (metallb.io/v1beta1 and
// v1beta2), read from all files together, into kubernetes.services pools
// and a bgp section. Every field it cannot carry over is a note; a document
// it cannot read is a *DocumentError.
func MetalLB(files []MetalLBFile, opts MetalLBOptions) (*Result, error) {
	objs, err := readMetalLB(files)
	if err != nil {
		return nil, err
	}
	m := &mlConv{r: &Result{}, opts: opts, communities: map[string]string{}, secrets: map[string]*mlObject{},
		bfdProfiles: map[string]*mlBFD{}}
	if err := m.convert(objs); err != nil {
		return nil, err
	}
	return m.r, nil
}

type mlConv struct {
	r           *Result
	opts        MetalLBOptions
	communities map[string]string
	secrets     map[string]*mlObject
	bfdProfiles map[string]*mlBFD
	bfdOrder    []*mlBFD // in input order, for notes
	pools       []*mlPool
	peers       []*mlPeer
	bgpAdvs     []*mlAdv
}

type mlPool struct {
	o       *mlObject
	out     config.ServicePool
	l2, bgp []*mlAdv
}

// mlAdv is an L2Advertisement or a BGPAdvertisement.
type mlAdv struct {
	o          *mlObject
	bgp        bool
	poolNames  []string
	poolSels   []labels.Selector
	nodes      []labels.Selector
	interfaces []string
	ifLine     int
	attrs      config.ServicePoolBGP
	peers      []string
	peersLine  int
}

type mlPeer struct {
	o        *mlObject
	nb       config.Neighbor
	myASN    uint32
	routerID string
	line     int
}

func (m *mlConv) note(o *mlObject, line int, lost bool, format string, args ...any) {
	if line == 0 {
		line = o.line
	}
	m.r.note(o.file, line, lost, "%s: %s", o.ref(), fmt.Sprintf(format, args...))
}

func (m *mlConv) unknown(o *mlObject, f mlField) {
	m.note(o, f.line, true, "spec.%s is not converted", f.key)
}

func (m *mlConv) convert(objs []*mlObject) error {
	var l2, bgp []*mlObject
	others := map[string][]string{}
	var otherFiles []string
	otherLine := map[string]int{}
	seen := map[string]*mlObject{}
	for _, o := range objs {
		if isMetalLB(o) {
			if prev := seen[o.ref()]; prev != nil {
				return o.errAt("metadata.name", o.line, fmt.Errorf("%s is also document %d of %s", o.ref(), prev.doc, prev.file))
			}
			seen[o.ref()] = o
		}
		switch {
		case o.kind == "Secret":
			m.secrets[o.name] = o
		case !isMetalLB(o) && o.kind == "ConfigMap" && o.name == "config" && strings.Contains(o.namespace, "metallb"):
			m.note(o, 0, true, "MetalLB's ConfigMap configuration (before v0.13) is not read: convert it to IPAddressPool, L2Advertisement, BGPAdvertisement and BGPPeer objects first")
		case !isMetalLB(o):
			if others[o.file] == nil {
				otherFiles = append(otherFiles, o.file)
				otherLine[o.file] = o.line
			}
			others[o.file] = append(others[o.file], o.ref())
		case o.kind == "Community":
			if err := m.community(o); err != nil {
				return err
			}
		case o.kind == "BFDProfile":
			if err := m.bfdProfile(o); err != nil {
				return err
			}
		}
	}
	for _, o := range objs {
		if !isMetalLB(o) {
			continue
		}
		var err error
		switch o.kind {
		case "IPAddressPool":
			err = m.pool(o)
		case "L2Advertisement":
			l2 = append(l2, o)
		case "BGPAdvertisement":
			bgp = append(bgp, o)
		case "BGPPeer":
			err = m.peer(o)
		case "Community", "BFDProfile":
		case "AddressPool":
			m.note(o, 0, true, "the deprecated AddressPool is not converted: write it as an IPAddressPool and an L2Advertisement or BGPAdvertisement")
		case "ServiceL2Status", "ServiceBGPStatus", "ConfigurationState":
			m.note(o, 0, false, "status written by MetalLB, not configuration")
		default:
			m.note(o, 0, true, "kind %s is not known to vigil import", o.kind)
		}
		if err != nil {
			return err
		}
	}
	for _, o := range l2 {
		if err := m.advertisement(o, false); err != nil {
			return err
		}
	}
	for _, o := range bgp {
		if err := m.advertisement(o, true); err != nil {
			return err
		}
	}
	for _, f := range otherFiles {
		m.r.note(f, otherLine[f], false, "not MetalLB configuration: %s", strings.Join(others[f], ", "))
	}
	m.bgpSection()
	m.unusedBFDProfiles()
	for _, a := range m.bgpAdvs {
		m.peersOf(a)
	}
	var pools []config.ServicePool
	for _, p := range m.pools {
		m.announce(p)
		pools = append(pools, p.out)
	}
	if len(pools) > 0 {
		m.r.Config.Kubernetes = &config.Kubernetes{Services: &config.Services{Pools: pools}}
	}
	return nil
}

func (m *mlConv) community(o *mlObject) error {
	for _, f := range o.spec {
		if f.key != "communities" {
			m.unknown(o, f)
			continue
		}
		var cs []struct {
			Name  string `yaml:"name"`
			Value string `yaml:"value"`
		}
		if err := o.decode(f, &cs); err != nil {
			return err
		}
		for _, c := range cs {
			m.communities[c.Name] = c.Value
		}
	}
	m.note(o, 0, false, "its names are replaced by their values in the pools' bgp.communities")
	return nil
}

// pool converts an IPAddressPool.
func (m *mlConv) pool(o *mlObject) error {
	p := &mlPool{o: o}
	p.out.Name = o.name
	if strings.Contains(o.name, ".") {
		p.out.Name = strings.ReplaceAll(o.name, ".", "-")
		m.note(o, 0, false, "named %s: a vigil pool name is a DNS label (Services name it in vigil.io/pool)", p.out.Name)
	}
	var avoid *bool
	avoidLine := 0
	var ranges []config.AddressRange
	for _, f := range o.spec {
		switch f.key {
		case "addresses":
			var as []string
			if err := o.decode(f, &as); err != nil {
				return err
			}
			for i, a := range as {
				line := f.line
				if i < len(f.val.Content) {
					line = f.val.Content[i].Line
				}
				s, r, note, err := mlAddress(a)
				if err != nil {
					return o.errAt(fmt.Sprintf("spec.addresses[%d]", i), line, err)
				}
				if note != "" {
					m.note(o, line, false, "%s", note)
				}
				p.out.Addresses = append(p.out.Addresses, s)
				ranges = append(ranges, r)
			}
		case "autoAssign":
			if err := o.decode(f, &p.out.AutoAssign); err != nil {
				return err
			}
		case "avoidBuggyIPs":
			if err := o.decode(f, &avoid); err != nil {
				return err
			}
			avoidLine = f.line
		case "serviceAllocation":
			var sa struct {
				Priority           int          `yaml:"priority"`
				Namespaces         []string     `yaml:"namespaces"`
				NamespaceSelectors []mlSelector `yaml:"namespaceSelectors"`
				ServiceSelectors   []mlSelector `yaml:"serviceSelectors"`
			}
			if err := o.decode(f, &sa); err != nil {
				return err
			}
			var what []string
			if sa.Priority != 0 {
				what = append(what, fmt.Sprintf("priority %d among the pools a Service may use", sa.Priority))
			}
			if len(sa.Namespaces) > 0 {
				what = append(what, "only Services in namespaces "+strings.Join(sa.Namespaces, ", "))
			}
			if len(sa.NamespaceSelectors) > 0 {
				what = append(what, fmt.Sprintf("only Services in namespaces matching %d selectors", len(sa.NamespaceSelectors)))
			}
			if len(sa.ServiceSelectors) > 0 {
				what = append(what, fmt.Sprintf("only Services matching %d label selectors", len(sa.ServiceSelectors)))
			}
			m.note(o, f.line, true, "serviceAllocation (%s) is not converted: any Service may use a vigil pool; it names one with vigil.io/pool, and pools are tried in config order", strings.Join(what, "; "))
		default:
			m.unknown(o, f)
		}
	}
	if len(p.out.Addresses) == 0 {
		return o.errAt("spec.addresses", o.line, fmt.Errorf("needs at least one CIDR or range"))
	}
	// MetalLB's default is false, vigil's true: say false unless asked.
	on := avoid != nil && *avoid
	p.out.AvoidBuggyIPs = &on
	if on {
		for _, r := range ranges {
			if a, ok := buggyLeft(r); ok {
				m.note(o, avoidLine, true, "avoidBuggyIPs: MetalLB leaves out every address ending in .0 or .255; vigil only the network and broadcast address of a CIDR shorter than /31, so it may hand out %s of %s", a, r)
				break
			}
		}
	}
	m.pools = append(m.pools, p)
	return nil
}

// mlAddress converts one entry of spec.addresses: a single-address range
// becomes ADDRESS/32 (or /128); a CIDR with host bits set is written as
// its network, with a note.
func mlAddress(s string) (string, config.AddressRange, string, error) {
	s = strings.TrimSpace(s)
	note := ""
	if !strings.Contains(s, "-") {
		if p, err := netip.ParsePrefix(s); err == nil && p.Masked() != p {
			note = fmt.Sprintf("%s has host bits set: written as the network %s", s, p.Masked())
			s = p.Masked().String()
		}
	}
	r, err := config.ParseAddressRange(s)
	if err != nil {
		return "", r, "", err
	}
	if r.Bits < 0 && r.First == r.Last {
		return netip.PrefixFrom(r.First, r.First.BitLen()).String(), r, note, nil
	}
	return r.String(), r, note, nil
}

// buggyLeft returns the first IPv4 address of r ending in .0 or .255 that
// vigil's avoid_buggy_ips still hands out.
func buggyLeft(r config.AddressRange) (netip.Addr, bool) {
	if !r.First.Is4() {
		return netip.Addr{}, false
	}
	lo, hi := r.First, r.Last
	if r.Bits >= 0 && r.Bits < 31 {
		lo, hi = lo.Next(), hi.Prev()
	}
	b := lo.As4()
	if b[3] != 0 && b[3] != 255 {
		b[3] = 255
	}
	a := netip.AddrFrom4(b)
	if hi.Less(a) {
		return netip.Addr{}, false
	}
	return a, true
}

// advertisement reads an L2Advertisement or BGPAdvertisement and attaches
// it to the pools it selects.
func (m *mlConv) advertisement(o *mlObject, bgp bool) error {
	a := &mlAdv{o: o, bgp: bgp}
	poolsLine := o.line
	for _, f := range o.spec {
		var err error
		switch {
		case f.key == "ipAddressPools":
			err = o.decode(f, &a.poolNames)
			poolsLine = f.line
		case f.key == "ipAddressPoolSelectors":
			a.poolSels, err = o.selectors(f)
		case f.key == "nodeSelectors":
			a.nodes, err = o.selectors(f)
		case f.key == "interfaces" && !bgp:
			err = o.decode(f, &a.interfaces)
			a.ifLine = f.line
		case f.key == "communities" && bgp:
			err = m.communitiesOf(a, f)
		case f.key == "localPref" && bgp:
			err = o.decode(f, &a.attrs.LocalPref)
		case (f.key == "aggregationLength" || f.key == "aggregationLengthV6") && bgp:
			var n int
			if err = o.decode(f, &n); err == nil && n != 32 && n != 128 {
				m.note(o, f.line, true, "%s %d is not converted: vigil announces each address as a host route", f.key, n)
			}
		case f.key == "peers" && bgp:
			err = o.decode(f, &a.peers)
			a.peersLine = f.line
		default:
			m.unknown(o, f)
		}
		if err != nil {
			return err
		}
	}
	if bgp {
		m.bgpAdvs = append(m.bgpAdvs, a)
	}
	byName := map[string]bool{}
	for _, p := range m.pools {
		byName[p.o.name] = true
	}
	for _, n := range a.poolNames {
		if !byName[n] {
			m.note(o, poolsLine, true, "ipAddressPools names %s, which is not in the input", n)
		}
	}
	any := false
	for _, p := range m.pools {
		if !a.selects(p) {
			continue
		}
		any = true
		if bgp {
			p.bgp = append(p.bgp, a)
		} else {
			p.l2 = append(p.l2, a)
		}
	}
	if !any {
		m.note(o, 0, false, "selects no IPAddressPool of the input")
	}
	return nil
}

// peersOf notes a BGPAdvertisement limited to some peers: vigil
// announces to every neighbor.
func (m *mlConv) peersOf(a *mlAdv) {
	if len(a.peers) == 0 {
		return
	}
	for _, p := range m.peers {
		if !slices.Contains(a.peers, p.o.name) {
			m.note(a.o, a.peersLine, true, "peers [%s]: vigil announces a pool to every neighbor, %s included", strings.Join(a.peers, ", "), p.o.name)
			return
		}
	}
}

func (a *mlAdv) selects(p *mlPool) bool {
	if len(a.poolNames) == 0 && len(a.poolSels) == 0 {
		return true
	}
	if slices.Contains(a.poolNames, p.o.name) {
		return true
	}
	for _, s := range a.poolSels {
		if s.Matches(labels.Set(p.o.labels)) {
			return true
		}
	}
	return false
}

// communitiesOf reads a BGPAdvertisement's communities: ASN:VALUE, the
// name of a Community alias, or a large community (not converted).
func (m *mlConv) communitiesOf(a *mlAdv, f mlField) error {
	var cs []string
	if err := a.o.decode(f, &cs); err != nil {
		return err
	}
	for i, c := range cs {
		line := f.line
		if i < len(f.val.Content) {
			line = f.val.Content[i].Line
		}
		v := c
		if alias, ok := m.communities[c]; ok {
			v = alias
		}
		switch {
		case strings.HasPrefix(v, "large:"):
			m.note(a.o, line, true, "large community %s is not converted: vigil sends standard communities only", v)
		case !strings.Contains(v, ":"):
			m.note(a.o, line, true, "community %s: no Community in the input defines it", c)
		default:
			if _, err := config.ParseCommunity(v); err != nil {
				return a.o.errAt(fmt.Sprintf("spec.communities[%d]", i), line, err)
			}
			if !slices.Contains(a.attrs.Communities, v) {
				a.attrs.Communities = append(a.attrs.Communities, v)
			}
		}
	}
	return nil
}

// announce decides how a pool is announced, from the advertisements that
// select it. A pool both L2- and BGP-advertised is announced by BGP; one
// that nothing advertises (MetalLB gives out its addresses but announces
// none) is announced by L2 anyway, with a note: vigil announces every pool.
func (m *mlConv) announce(p *mlPool) {
	o := p.o
	switch {
	case len(p.bgp) > 0:
		p.out.Announce = "bgp"
		if len(p.l2) > 0 {
			m.note(o, 0, true, "also advertised by L2Advertisement %s: vigil announces a pool one way, here bgp", p.l2[0].o.name)
		}
		first := p.bgp[0]
		attrs := first.attrs
		for _, a := range p.bgp[1:] {
			if !slices.Equal(a.attrs.Communities, attrs.Communities) || a.attrs.LocalPref != attrs.LocalPref {
				m.note(a.o, 0, true, "attributes for pool %s are not converted: vigil announces a pool with one set of attributes, those of BGPAdvertisement %s", o.name, first.o.name)
			}
		}
		if len(attrs.Communities) > 0 || attrs.LocalPref != 0 {
			p.out.BGP = &attrs
		}
		m.nodes(p, p.bgp)
		if len(m.peers) == 0 {
			m.note(o, 0, true, "advertised by BGP, but the input has no BGPPeer: add the bgp section")
		}
		return
	case len(p.l2) > 0:
		m.nodes(p, p.l2)
	default:
		m.note(o, 0, true, "advertised by no L2Advertisement or BGPAdvertisement: MetalLB gives out its addresses but announces none; vigil announces every pool, this one by L2")
	}
	p.out.Announce = "l2"
	var ifaces []string
	var from *mlAdv
	for _, a := range p.l2 {
		for _, i := range a.interfaces {
			if !slices.Contains(ifaces, i) {
				ifaces = append(ifaces, i)
			}
			if from == nil {
				from = a
			}
		}
	}
	switch {
	case len(ifaces) > 0:
		p.out.Interface = ifaces[0]
		if len(ifaces) > 1 {
			m.note(from.o, from.ifLine, true, "interfaces [%s]: vigil answers for pool %s on one interface, %s", strings.Join(ifaces, ", "), p.out.Name, ifaces[0])
		}
	case m.opts.Interface != "":
		p.out.Interface = m.opts.Interface
		m.note(o, 0, false, "MetalLB answers ARP/NDP on every interface; vigil on %s (--interface)", m.opts.Interface)
	default:
		m.note(o, 0, true, "no L2Advertisement names an interface (MetalLB answers on all): vigil needs one, give --interface")
	}
}

// nodes sets the pool's nodes to those any of its advertisements allows.
func (m *mlConv) nodes(p *mlPool, advs []*mlAdv) {
	var sels []labels.Selector
	for _, a := range advs {
		if len(a.nodes) == 0 {
			return // this advertisement: every node
		}
		sels = append(sels, a.nodes...)
	}
	sel, exact := anyOf(sels)
	p.out.Nodes = sel
	if !exact {
		var all []string
		for _, s := range sels {
			all = append(all, s.String())
		}
		m.note(p.o, 0, true, "nodeSelectors %q: vigil takes one label selector per pool, %q", all, sel)
	}
}

// peer converts a BGPPeer (v1beta1 and v1beta2 share these fields).
func (m *mlConv) peer(o *mlObject) error {
	p := &mlPeer{o: o, line: o.line}
	var peerASN uint32
	var dynamic, addr, iface string
	var keepalive time.Duration
	keepaliveLine := 0
	for _, f := range o.spec {
		var err error
		switch f.key {
		case "myASN":
			err = o.decode(f, &p.myASN)
		case "peerASN":
			err = o.decode(f, &peerASN)
		case "dynamicASN":
			err = o.decode(f, &dynamic)
		case "peerAddress":
			err = o.decode(f, &addr)
			if a, perr := netip.ParseAddr(addr); err == nil && (perr != nil || a.Zone() != "") {
				err = o.errAt("spec.peerAddress", f.line, fmt.Errorf("%q is not an IP address", addr))
			}
		case "interface":
			err = o.decode(f, &iface)
		case "peerPort":
			err = o.decode(f, &p.nb.Port)
			if err == nil && p.nb.Port == 179 {
				p.nb.Port = 0
			}
		case "holdTime", "keepaliveTime":
			var s string
			if err = o.decode(f, &s); err != nil {
				break
			}
			d, perr := time.ParseDuration(s)
			if perr != nil {
				err = o.errAt("spec."+f.key, f.line, fmt.Errorf("%q is not a duration", s))
				break
			}
			if f.key == "keepaliveTime" {
				keepalive, keepaliveLine = d, f.line
			} else if d == 0 {
				m.note(o, f.line, true, "holdTime 0 (no keepalives) is not converted: vigil's default hold time %v applies", config.DefaultHoldTime)
			} else {
				p.nb.HoldTime = d
			}
		case "routerID":
			err = o.decode(f, &p.routerID)
		case "password":
			err = o.decode(f, &p.nb.Password)
		case "passwordSecret":
			err = m.password(o, f, p)
		case "bfdProfile":
			var s string
			if err = o.decode(f, &s); err == nil && s != "" {
				m.bfdOf(o, f.line, s, p)
			}
		case "ebgpMultiHop":
			var b bool
			if err = o.decode(f, &b); err == nil && b {
				m.note(o, f.line, true, "ebgpMultiHop is not converted: vigil's neighbors have no multihop setting")
			}
		case "nodeSelectors":
			var sels []labels.Selector
			if sels, err = o.selectors(f); err == nil && len(sels) > 0 {
				m.note(o, f.line, true, "nodeSelectors are not converted: every node that runs this config peers with this neighbor")
			}
		case "sourceAddress":
			m.note(o, f.line, true, "sourceAddress is not converted: vigil lets the kernel choose the session's source address")
		case "connectTime":
			m.note(o, f.line, false, "connectTime: vigil dials a neighbor that does not answer again every second")
		default:
			m.unknown(o, f)
		}
		if err != nil {
			return err
		}
	}
	if p.myASN == 0 {
		return o.errAt("spec.myASN", o.line, fmt.Errorf("is required"))
	}
	if addr == "" {
		if iface != "" {
			m.note(o, 0, true, "unnumbered BGP on interface %s is not converted: a vigil neighbor needs an address", iface)
			return nil
		}
		return o.errAt("spec.peerAddress", o.line, fmt.Errorf("is required"))
	}
	p.nb.Address = addr
	switch {
	case peerASN != 0:
		p.nb.ASN = peerASN
	case dynamic == "internal":
		p.nb.ASN = p.myASN
	case dynamic != "":
		m.note(o, 0, true, "dynamicASN %s is not converted: a vigil neighbor needs its ASN; set it and add the neighbor", dynamic)
		return nil
	default:
		return o.errAt("spec.peerASN", o.line, fmt.Errorf("is required"))
	}
	if keepalive != 0 {
		hold := p.nb.HoldTime
		if hold == 0 {
			hold = config.DefaultHoldTime
		}
		if keepalive != hold/3 {
			m.note(o, keepaliveLine, true, "keepaliveTime %v is not converted: vigil sends keepalives every third of the hold time (%v)", keepalive, hold/3)
		}
	}
	for _, q := range m.peers {
		if q.nb.Address == p.nb.Address {
			m.note(o, 0, true, "peerAddress %s is also BGPPeer %s's: vigil has one neighbor per address, that one", addr, q.o.name)
			return nil
		}
	}
	m.peers = append(m.peers, p)
	return nil
}

// password reads passwordSecret from a basic-auth Secret of the input.
func (m *mlConv) password(o *mlObject, f mlField, p *mlPeer) error {
	var ref struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	}
	if err := o.decode(f, &ref); err != nil {
		return err
	}
	s := m.secrets[ref.Name]
	if s == nil {
		m.note(o, f.line, true, "passwordSecret %s is not in the input: set the neighbor's password to its password key", ref.Name)
		return nil
	}
	if pw, ok := s.stringData["password"]; ok {
		p.nb.Password = pw
	} else if enc, ok := s.data["password"]; ok {
		b, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return s.errAt("data.password", s.line, fmt.Errorf("is not base64"))
		}
		p.nb.Password = string(b)
	} else {
		m.note(o, f.line, true, "passwordSecret %s has no password key: set the neighbor's password", ref.Name)
		return nil
	}
	m.note(o, f.line, false, "password taken from Secret %s: the output holds it in clear", ref.Name)
	return nil
}

// bgpSection writes the bgp section from the converted peers: one local
// ASN (the first peer's) and one router ID for every neighbor.
func (m *mlConv) bgpSection() {
	if len(m.peers) == 0 {
		return
	}
	b := &m.r.Config.BGP
	first := m.peers[0]
	b.ASN = first.myASN
	ids := map[string]bool{}
	var kept []*mlPeer
	for _, p := range m.peers {
		if p.myASN != b.ASN {
			m.note(p.o, 0, true, "myASN %d is not converted: vigil speaks one ASN, %d (BGPPeer %s's); neighbor %s left out", p.myASN, b.ASN, first.o.name, p.nb.Address)
			continue
		}
		kept = append(kept, p)
		b.Neighbors = append(b.Neighbors, p.nb)
		if p.routerID != "" {
			ids[p.routerID] = true
		}
	}
	m.peers = kept
	var list []string
	for id := range ids {
		list = append(list, id)
	}
	sort.Strings(list)
	switch {
	case m.opts.RouterID != "":
		b.RouterID = m.opts.RouterID
	case len(list) == 1:
		b.RouterID = list[0]
	case len(list) > 1:
		b.RouterID = list[0]
		m.note(first.o, 0, true, "routerID: the BGPPeers name %s; vigil has one router_id, %s", strings.Join(list, ", "), list[0])
	default:
		m.note(first.o, 0, true, "no routerID: MetalLB takes the node's address; vigil needs bgp.router_id, give --router-id (the node's IPv4 address)")
	}
	for _, p := range m.peers {
		if p.nb.HoldTime == 0 {
			m.note(p.o, 0, false, "no holdTime: vigil proposes %v (keepalives every %v)", config.DefaultHoldTime, config.DefaultHoldTime/3)
		}
	}
}
