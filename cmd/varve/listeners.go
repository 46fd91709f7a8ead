package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/varvelog/varve/broker"
)

// shorthandListener names the one listener --kafka-addr and --advertise
// describe, as Kafka names its default listener.
const shorthandListener = "PLAINTEXT"

// kafkaListener is one Kafka listener varve serve binds and serves: an
// entry of Kafka's listeners and, if any, its advertised.listeners entry.
type kafkaListener struct {
	Name string
	// Bind is the host:port to listen on (port 0 picks a free one).
	Bind string
	// Advertise is the host:port clients are told to connect to; empty
	// leaves it to the broker, which advertises the bound address (port 0
	// resolved).
	Advertise string
}

// listenerAddr is one NAME://HOST:PORT item of --listeners or
// --advertised-listeners.
type listenerAddr struct {
	name, host, addr string
	port             uint64
}

// kafkaListeners resolves --listeners and --advertised-listeners, or the
// --kafka-addr/--advertise shorthand, into the listeners to serve. set
// holds the flags given by any source (command line, environment, file):
// an explicit --kafka-addr or --advertise next to --listeners is refused
// rather than one silently winning.
func (s *serveFlags) kafkaListeners(set map[string]bool) ([]kafkaListener, error) {
	hasListeners := strings.TrimSpace(s.listeners) != ""
	hasAdvertised := strings.TrimSpace(s.advertisedListeners) != ""
	if hasListeners {
		for _, f := range []string{"kafka-addr", "advertise"} {
			if set[f] {
				return nil, fmt.Errorf("--listeners replaces --%s: set one or the other", f)
			}
		}
	} else if set["advertise"] && hasAdvertised {
		return nil, fmt.Errorf("--advertised-listeners replaces --advertise: set one or the other")
	}
	if !hasListeners && !hasAdvertised {
		// The shorthand exactly as before named listeners existed: the
		// broker advertises the bound address when --advertise is empty,
		// whatever its host (see warnWildcard).
		return []kafkaListener{{Name: shorthandListener, Bind: s.kafkaAddr, Advertise: s.advertise}}, nil
	}
	var binds []listenerAddr
	if hasListeners {
		var err error
		if binds, err = parseListenerList("--listeners", s.listeners); err != nil {
			return nil, err
		}
	} else {
		// --advertised-listeners over the shorthand's one listener.
		ls, err := parseListenerList("--kafka-addr", shorthandListener+"://"+s.kafkaAddr)
		if err != nil {
			return nil, err
		}
		binds = ls
	}
	advertised, err := parseAdvertised(s.advertisedListeners, binds)
	if err != nil {
		return nil, err
	}
	out := make([]kafkaListener, 0, len(binds))
	for _, l := range binds {
		kl := kafkaListener{Name: l.name, Bind: l.addr, Advertise: advertised[l.name]}
		if kl.Advertise == "" && unspecifiedHost(l.host) {
			return nil, fmt.Errorf("--listeners: %s binds %q, which clients cannot dial: give it an address in --advertised-listeners", l.name, l.addr)
		}
		out = append(out, kl)
	}
	return out, nil
}

// parseAdvertised reads --advertised-listeners into advertised host:port
// by listener name. Every name must be one of binds, and every address
// one a client can dial (a host, not a wildcard, and a port other than 0).
func parseAdvertised(s string, binds []listenerAddr) (map[string]string, error) {
	const flagName = "--advertised-listeners"
	ads, err := parseListenerList(flagName, s)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, l := range binds {
		known[l.name] = true
	}
	out := map[string]string{}
	for _, a := range ads {
		if !known[a.name] {
			return nil, fmt.Errorf("%s: %s is not a listener (listeners: %s)", flagName, a.name, listenerNames(binds))
		}
		if unspecifiedHost(a.host) {
			return nil, fmt.Errorf("%s: %s advertises %q: give a host clients can dial, not a wildcard", flagName, a.name, a.addr)
		}
		if a.port == 0 {
			return nil, fmt.Errorf("%s: %s advertises port 0, which clients cannot dial", flagName, a.name)
		}
		out[a.name] = a.addr
	}
	return out, nil
}

// parseListenerList reads Kafka's listener syntax: NAME://HOST:PORT items,
// comma-separated, names unique (case-sensitive, as Kafka compares them).
// An IPv6 host is bracketed: NAME://[::1]:9092. Blank input is no list.
func parseListenerList(flagName, s string) ([]listenerAddr, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []listenerAddr
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("%s: empty entry in %q", flagName, s)
		}
		name, addr, ok := strings.Cut(item, "://")
		if !ok {
			return nil, fmt.Errorf("%s: %q is not NAME://HOST:PORT", flagName, item)
		}
		if !validListenerName(name) {
			return nil, fmt.Errorf("%s: listener name %q: use letters, digits, '_' and '-' only", flagName, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("%s: listener %s given twice", flagName, name)
		}
		seen[name] = true
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: address %q is not HOST:PORT", flagName, name, addr)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: port %q is not a number from 0 to 65535", flagName, name, port)
		}
		out = append(out, listenerAddr{name: name, host: host, addr: addr, port: p})
	}
	return out, nil
}

// validListenerName is Kafka's rule for listener names: [A-Za-z0-9_-]+.
func validListenerName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

// unspecifiedHost reports a bind host that means "every interface" (empty,
// 0.0.0.0, ::): fine to bind, useless to a client told to dial it.
func unspecifiedHost(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

func listenerNames(ls []listenerAddr) string {
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = l.name
	}
	return strings.Join(names, ", ")
}

// brokerListeners is the broker's view of the listeners: names and
// advertised addresses; binding stays in cmd.
func brokerListeners(ls []kafkaListener) []broker.Listener {
	out := make([]broker.Listener, len(ls))
	for i, l := range ls {
		out[i] = broker.Listener{Name: l.Name, Advertise: l.Advertise}
	}
	return out
}

// bindListeners binds every listener, or none: on a failure the ones
// already bound are closed.
func bindListeners(ls []kafkaListener) ([]net.Listener, error) {
	out := make([]net.Listener, 0, len(ls))
	for _, l := range ls {
		ln, err := net.Listen("tcp", l.Bind)
		if err != nil {
			for _, o := range out {
				_ = o.Close()
			}
			return nil, fmt.Errorf("kafka listener %s: %w", l.Name, err)
		}
		out = append(out, ln)
	}
	return out, nil
}

// warnWildcard logs when a listener will advertise the wildcard address it
// bound. Only the --kafka-addr shorthand gets this far (--listeners
// refuses it): it keeps advertising what it binds, as it always has, and a
// client on another host cannot dial that.
func warnWildcard(logger *slog.Logger, name string, addr net.Addr) {
	host, _, err := net.SplitHostPort(addr.String())
	if err == nil && unspecifiedHost(host) {
		logger.Warn("kafka listener advertises a wildcard address; set --advertise or --advertised-listeners", "listener", name, "addr", addr.String())
	}
}
