package sdnotify

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// fakeSystemd listens where NOTIFY_SOCKET points and returns what it gets.
func fakeSystemd(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	got := make(chan string, 100)
	go func() {
		buf := make([]byte, 512)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}
	}()
	return got
}

func TestNotify(t *testing.T) {
	got := fakeSystemd(t)
	if err := Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "READY=1" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received")
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Fatalf("without systemd: %v", err)
	}
}

func TestWatchdogPingsOnlyWhileAlive(t *testing.T) {
	got := fakeSystemd(t)
	t.Setenv("WATCHDOG_USEC", "40000") // 40ms: pings every 20ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	alive := make(chan bool, 1)
	alive <- true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Watchdog(ctx, func(context.Context) error {
			select {
			case ok := <-alive:
				alive <- ok
				if ok {
					return nil
				}
			default:
			}
			return errors.New("hung")
		})
	}()
	select {
	case m := <-got:
		if m != "WATCHDOG=1" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no ping")
	}
	<-alive
	alive <- false
	time.Sleep(50 * time.Millisecond)
	for len(got) > 0 {
		<-got
	}
	time.Sleep(100 * time.Millisecond)
	if len(got) != 0 {
		t.Fatalf("%d pings while the daemon did not answer", len(got))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if WatchdogInterval() != 0 {
		t.Fatal("watchdog meant for another pid")
	}
}
