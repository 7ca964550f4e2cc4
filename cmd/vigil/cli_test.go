package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vigil.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const poolYAML = `cluster: c1
node: infra1
vrrp:
  pools:
    - {name: ingress, interface: eth0, vips: [192.0.2.102, 192.0.2.101, "192.0.2.103"], nodes: [infra1, infra2]}
`

func TestDNSPrintsRecordsForAPool(t *testing.T) {
	cfg := writeConfig(t, poolYAML)
	cmd := dnsCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"-c", cfg, "--zone", "example.com.", "ingress"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	want := "ingress.example.com.\t60\tIN\tA\t192.0.2.102\ningress.example.com.\t60\tIN\tA\t192.0.2.101\ningress.example.com.\t60\tIN\tA\t192.0.2.103\n"
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
	cmd = dnsCmd()
	cmd.SetArgs([]string{"-c", cfg, "--zone", "example.com", "nope"})
	cmd.SetOut(&out)
	var ee *exitError
	if err := cmd.Execute(); !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("unknown name: %v, want exit 2", err)
	}
}

func TestCheckShowsGeneratedInstancesAndFailsWithExit2(t *testing.T) {
	cmd := checkCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"-c", writeConfig(t, poolYAML)})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "instance ingress-192.0.2.101: eth0 vrid") || strings.Count(out.String(), "instance ingress-") != 3 {
		t.Fatalf("check output:\n%s", out.String())
	}
	cmd = checkCmd()
	cmd.SetArgs([]string{"-c", writeConfig(t, strings.Replace(poolYAML, "infra1, infra2", "infra1, infra2, infra3, infra4", 1))})
	err := cmd.Execute()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "vrrp.pools[0]: 4 nodes but only 3 VIPs") {
		t.Fatalf("bad pool: %v", err)
	}
}

func TestStatusWithoutDaemon(t *testing.T) {
	cmd := statusCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	sock := filepath.Join(t.TempDir(), "vigil.sock")
	cmd.SetArgs([]string{"--socket", sock})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	var ee *exitError
	if err == nil || errors.As(err, &ee) || !strings.HasPrefix(err.Error(), "no vigil daemon answers on "+sock) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v: want one line, exit status 1", err)
	}
}

// vigil import of each testdata config, then vigil check of the result.
func TestImportThenCheck(t *testing.T) {
	const ml = "../../internal/importer/testdata/metallb/"
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"keepalived", "../../internal/importer/testdata/keepalived.conf"}, 3}, // notify_master is lost
		{[]string{"haproxy", "../../internal/importer/testdata/haproxy.cfg"}, 0},
		{[]string{"keepalived", "../../internal/importer/testdata/keepalived.conf", "haproxy", "../../internal/importer/testdata/haproxy.cfg"}, 3},
		{[]string{"metallb", ml + "l2.yaml"}, 0},
		{[]string{"metallb", ml + "dualstack.yaml", ml + "l2.yaml", "--interface", "eth0"}, 0},
		{[]string{"metallb", ml + "bgp.yaml", "--router-id", "10.0.0.11"}, 3}, // aggregation is lost
		{[]string{"haproxy", "../../internal/importer/testdata/haproxy.cfg", "metallb", ml + "l2.yaml"}, 0},
	} {
		out := filepath.Join(t.TempDir(), "vigil.yaml")
		root := newRoot()
		var stderr bytes.Buffer
		root.SetErr(&stderr)
		root.SetArgs(append(append([]string{"import"}, c.args...), "-o", out))
		err := root.Execute()
		code := 0
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else if err != nil {
			code = 1
		}
		if code != c.code {
			t.Fatalf("import %v: exit %d (%v), want %d\n%s", c.args, code, err, c.code, stderr.String())
		}
		check := newRoot()
		var res bytes.Buffer
		check.SetOut(&res)
		check.SetArgs([]string{"check", "-c", out})
		if err := check.Execute(); err != nil {
			t.Fatalf("vigil check of the import of %v: %v", c.args, err)
		}
	}
}

// vigil import metallb refuses what it cannot finish: no files, an
// unreadable document, a pool without --interface; exit 2, reasons on stderr.
func TestImportMetalLBFails(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [10.0.0.1]}\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"metallb"}, "metallb: want at least one FILE"},
		{[]string{"metallb", bad}, "document 1 (IPAddressPool/p): spec.addresses[0]"},
		{[]string{"metallb", "../../internal/importer/testdata/metallb/dualstack.yaml"}, "is required for announce l2"},
	} {
		root := newRoot()
		var stderr bytes.Buffer
		root.SetErr(&stderr)
		root.SetOut(&stderr)
		root.SetArgs(append([]string{"import"}, c.args...))
		err := root.Execute()
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error()+stderr.String(), c.want) {
			t.Errorf("import %v: %v, want exit 2 saying %q\n%s", c.args, err, c.want, stderr.String())
		}
	}
}

// vigil check FILE checks FILE, not the default path: a broken file named
// as the argument fails with its own error, a valid one is reported ok
// under its own name.
func TestCheckTakesTheFileAsArgument(t *testing.T) {
	good, bad := writeConfig(t, poolYAML), writeConfig(t, poolYAML+"colour: red\n")
	run := func(args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(append([]string{"check"}, args...))
		err := root.Execute()
		return out.String(), err
	}
	if out, err := run(good); err != nil || !strings.HasPrefix(out, good+": ok\n") {
		t.Fatalf("check %s: %v\n%s", good, err, out)
	}
	_, err := run(bad)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `colour: unknown key "colour" (line 6)`) {
		t.Fatalf("check of a broken file given as argument: %v", err)
	}
	// Two different files: refused rather than one picked.
	if _, err := run("-c", good, bad); !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "two files") {
		t.Fatalf("check -c A B: %v", err)
	}
	if _, err := run(good, bad); err == nil {
		t.Fatal("check with two arguments succeeded")
	}
}

// Every command refuses arguments it does not use, and a group of
// subcommands refuses an unknown one, instead of ignoring them.
func TestCommandsRefuseUnusedArguments(t *testing.T) {
	takesArgs := map[string]bool{"vigil check": true, "vigil import": true, "vigil arp-audit": true, "vigil dns": true,
		"vigil instance resign": true, "vigil instance resume": true, "vigil man": true} // one NAME or DIR
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if !c.HasParent() || takesArgs[c.CommandPath()] {
			return
		}
		n++
		err := c.ValidateArgs([]string{"bogus"})
		if err == nil && c.Runnable() && c.HasSubCommands() {
			err = c.RunE(c, []string{"bogus"}) // a group: names the unknown subcommand
		}
		if err == nil {
			t.Errorf("%s bogus: accepted", c.CommandPath())
		}
	}
	walk(newRoot())
	if n < 10 {
		t.Fatalf("only %d commands walked", n)
	}
	// Through Execute, as a user types it.
	root := newRoot()
	root.SetArgs([]string{"status", "api"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), `status "api": want one of instance, pool, balancer, check, service`) {
		t.Fatalf("vigil status api: %v", err)
	}
}
