//go:build linux

package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// composeNetnsDialer dials from inside the network namespace of process
// pid (a container's broker): 127.0.0.1 there is the container's own
// loopback, which docker network disconnect leaves in place. A client
// using it is one that shares the container's network, as a sidecar
// started with --network container:<id> would; it needs CAP_SYS_ADMIN
// (root) on the Docker host.
//
// A socket belongs to the namespace of the thread that creates it, so each
// dial runs on a goroutine locked to its thread, which enters the namespace
// and is never handed back: a goroutine that exits while locked takes its
// thread with it, so no other goroutine ever runs in the container's
// namespace.
func composeNetnsDialer(pid int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		// One literal IPv4 address: with a name resolving to several
		// addresses, net.Dialer races them on goroutines of its own,
		// which would run outside the namespace.
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if host == "localhost" {
			host = "127.0.0.1"
		}
		if net.ParseIP(host) == nil {
			return nil, fmt.Errorf("dial %s inside a container: want an IP address or localhost", addr)
		}
		addr = net.JoinHostPort(host, port)
		done := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
			if err != nil {
				done <- result{nil, err}
				return
			}
			defer ns.Close()
			if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
				done <- result{nil, fmt.Errorf("enter the network namespace of pid %d: %w", pid, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp4", addr)
			done <- result{c, err}
		}()
		r := <-done
		return r.c, r.err
	}
}
