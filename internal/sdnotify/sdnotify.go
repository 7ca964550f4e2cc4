// Package sdnotify speaks systemd's notify protocol (sd_notify): READY=1
// once the daemon serves, STOPPING=1 on shutdown, and watchdog pings while
// the daemon answers a liveness probe. Outside systemd it does nothing.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Notify sends state to $NOTIFY_SOCKET; without one it is a no-op.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' { // abstract namespace
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	return nil
}

// WatchdogInterval is systemd's WatchdogSec for this process, 0 when off.
func WatchdogInterval() time.Duration {
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}

// Watchdog pings systemd at half the watchdog interval for as long as alive
// returns within that half; a hung daemon stops pinging and systemd restarts
// it. It returns when ctx ends, or at once when no watchdog is configured.
func Watchdog(ctx context.Context, alive func(context.Context) error) error {
	iv := WatchdogInterval()
	if iv == 0 {
		return nil
	}
	t := time.NewTicker(iv / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(ctx, iv/2)
		err := alive(actx)
		cancel()
		if err != nil {
			continue // no ping: let systemd decide
		}
		if err := Notify("WATCHDOG=1"); err != nil {
			return err
		}
	}
}
