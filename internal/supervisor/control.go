package supervisor

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vigil-lb/vigil/internal/api"
	"github.com/vigil-lb/vigil/internal/config"
	"github.com/vigil-lb/vigil/internal/proxy"
	"github.com/vigil-lb/vigil/internal/vrrp"
)

var _ api.Control = (*Supervisor)(nil)

// SetBackendAdmin drains, disables or enables a proxy balancer's backend
// (vigil backend). The state lives on the backend in the proxy, so a
// reload keeps it while the address stays in the config; a restart loses
// it. Balancers of mode dsr have no admin states.
func (s *Supervisor) SetBackendAdmin(balancer, addr, action string) error {
	st, ok := map[string]proxy.AdminState{api.AdminDrain: proxy.AdminDrain, api.AdminDisable: proxy.AdminDisabled,
		api.AdminEnable: proxy.AdminReady}[action]
	if !ok {
		return fmt.Errorf("backend action %q: want drain, disable or enable", action)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("balancer %s: backend %q: want IP:PORT", balancer, addr)
	}
	err = s.fleet.SetAdmin(balancer, ap, st)
	switch {
	case errors.Is(err, proxy.ErrUnknownBalancer):
		if s.isDSR(balancer) {
			return fmt.Errorf("balancer %s is mode dsr: vigil backend acts on proxy balancers only", balancer)
		}
		return fmt.Errorf("%w balancer %q", api.ErrUnknown, balancer)
	case errors.Is(err, proxy.ErrUnknownBackend):
		return fmt.Errorf("balancer %s: %w backend %s", balancer, api.ErrUnknown, ap)
	}
	return err
}

// isDSR tells a dsr balancer's name, from the dsr component's status:
// safe from any goroutine, as Snapshot is.
func (s *Supervisor) isDSR(name string) bool {
	bals, _ := s.dsr.Status()
	for _, b := range bals {
		if b.Name == name {
			return true
		}
	}
	return false
}

// SetResigned resigns or resumes a VRRP instance (vigil instance), on its
// Run loop. Configured instances live as long as the daemon (a reload
// changes only their peers), so a reload keeps it; a restart loses it. An
// L2 slot keeps it while the slot stays.
func (s *Supervisor) SetResigned(instance string, resigned bool) error {
	for _, in := range s.vrrp.instances {
		if in.Name() == instance {
			in.SetResigned(resigned)
			return nil
		}
	}
	found := false
	s.vrrp.slots.each(func(_ config.Instance, in *vrrp.Instance) {
		if in.Name() == instance {
			in.SetResigned(resigned)
			found = true
		}
	})
	if found {
		return nil
	}
	return fmt.Errorf("%w instance %q", api.ErrUnknown, instance)
}
