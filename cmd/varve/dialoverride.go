package main

import (
	"context"
	"fmt"
	"net"
	"strings"
)

// parseDialOverride reads --raft-dial-override: RAFTADDR=DIALADDR pairs,
// comma-separated. It returns the broker's RaftDial: a connection to a
// peer's raft address RAFTADDR is dialed at DIALADDR instead, and any other
// address as it is. Nil when s is empty (the broker's plain TCP dial).
//
// The rewrite happens at the TCP dial only, below the transport: the peer
// keeps its identity everywhere else (the address raft and the metadata
// name it by, the address its acknowledgements are recorded under, the
// address this broker announces for itself). That makes it the least
// intrusive way to put something between two brokers: a TCP proxy per link
// in the process-level fault tests (integration/procs.go), or a NAT or
// port-forward the peers' advertised addresses do not go through. RAFTADDR
// is matched exactly against the address the transport resolved for the
// peer (its metadata registration or announcement, else its --peers
// entry), so a peer that moves to a new address is no longer rewritten.
func parseDialOverride(s string) (func(ctx context.Context, addr string) (net.Conn, error), error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	to := map[string]string{}
	for _, item := range strings.Split(s, ",") {
		from, dial, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return nil, fmt.Errorf("--raft-dial-override: %q is not RAFTADDR=DIALADDR", item)
		}
		for _, a := range []string{from, dial} {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, fmt.Errorf("--raft-dial-override: %q: %w", item, err)
			}
		}
		if _, dup := to[from]; dup {
			return nil, fmt.Errorf("--raft-dial-override: %s mapped twice", from)
		}
		to[from] = dial
	}
	var d net.Dialer
	return func(ctx context.Context, addr string) (net.Conn, error) {
		if a, ok := to[addr]; ok {
			addr = a
		}
		return d.DialContext(ctx, "tcp", addr)
	}, nil
}
