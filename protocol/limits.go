package protocol

import (
	"fmt"
	"net"
	"reflect"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ConnLimits caps open connections in total and per client IP address.
// Servers given the same ConnLimits share its caps: the broker gives all its
// listeners one, so that the caps hold per broker, as Kafka's
// max.connections and max.connections.per.ip do. It is safe for concurrent
// use.
//
// A connection over a cap is closed as soon as it is accepted, before
// anything is read from it or allocated for it, so a flood of connections
// costs the server one accept and one close each.
type ConnLimits struct {
	max, perIP int // 0: no cap

	mu   sync.Mutex
	open int
	byIP map[string]int
}

// NewConnLimits returns limits of maxConns open connections in all and
// perIP from any one client IP address; 0 means no cap.
func NewConnLimits(maxConns, perIP int) *ConnLimits {
	return &ConnLimits{max: maxConns, perIP: perIP, byIP: map[string]int{}}
}

// Open is the number of connections currently counted.
func (l *ConnLimits) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// limitError says which cap refused a connection.
type limitError struct {
	cap string // "max_connections" or "max_connections_per_ip"
	max int
	ip  string
}

func (e *limitError) Error() string {
	return fmt.Sprintf("protocol: %s (%d) reached for %s", e.cap, e.max, e.ip)
}

// acquire counts a connection from remote, or refuses it. The returned key
// (the client IP) must be given back to release when the connection ends.
func (l *ConnLimits) acquire(remote net.Addr) (string, error) {
	ip := clientIP(remote)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.open >= l.max {
		return "", &limitError{cap: "max_connections", max: l.max, ip: ip}
	}
	if l.perIP > 0 && l.byIP[ip] >= l.perIP {
		return "", &limitError{cap: "max_connections_per_ip", max: l.perIP, ip: ip}
	}
	l.open++
	l.byIP[ip]++
	return ip, nil
}

// release uncounts a connection acquire accepted.
func (l *ConnLimits) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip) // the map holds only the addresses connected now
	}
}

// clientIP is the address a per-IP cap counts: the IP without its port, an
// IPv4 address mapped into IPv6 written as IPv4, so one host counts once
// whichever socket family accepted it.
func clientIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap().String()
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// countPath leads from a request struct to one list of partitions: every
// index but the last names a slice of structs whose every element is
// descended into; the last names the list whose length is counted.
type countPath []int

// partitionPaths finds the lists of partitions in a request type: every
// slice field named Partitions, at any depth (Produce's Topics[].Partitions,
// Fetch's ForgottenTopics[].Partitions, OffsetFetch's
// Groups[].Topics[].Partitions, ...), and, where a list of topics names no
// partitions (Metadata, CreateTopics, DeleteTopics), that list of topics: a
// topic stands for at least one partition. It reads kmsg's generated
// structs, so it covers every request kmsg can decode, including ones added
// by a later kmsg; partitions_test.go checks it against each of them.
func partitionPaths(t reflect.Type) []countPath {
	return appendPartitionPaths(nil, nil, t, 0)
}

// maxCountDepth bounds the walk of nested request types (kmsg's deepest
// partition list is three slices down).
const maxCountDepth = 6

func appendPartitionPaths(out []countPath, prefix countPath, t reflect.Type, depth int) []countPath {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || depth > maxCountDepth {
		return out
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Type.Kind() != reflect.Slice || f.Type.Elem().Kind() == reflect.Uint8 {
			continue
		}
		path := append(prefix[:len(prefix):len(prefix)], i)
		if f.Name == "Partitions" {
			out = append(out, path)
			continue
		}
		before := len(out)
		if f.Type.Elem().Kind() == reflect.Struct {
			out = appendPartitionPaths(out, path, f.Type.Elem(), depth+1)
		}
		if len(out) == before && (f.Name == "Topics" || f.Name == "TopicNames") {
			out = append(out, path)
		}
	}
	return out
}

// countPartitions counts the partitions req names along paths, stopping
// once the count passes limit (so a hostile request costs no more than the
// limit to refuse).
func countPartitions(req kmsg.Request, paths []countPath, limit int) int {
	v := reflect.ValueOf(req)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	n := 0
	for _, p := range paths {
		if n = countAlong(v, p, n, limit); n > limit {
			break
		}
	}
	return n
}

func countAlong(v reflect.Value, p countPath, n, limit int) int {
	f := v.Field(p[0])
	if len(p) == 1 {
		return n + f.Len()
	}
	for i := 0; i < f.Len() && n <= limit; i++ {
		n = countAlong(f.Index(i), p[1:], n, limit)
	}
	return n
}

// partitionCounters maps each key the version table serves to the paths of
// its partition lists. Built once per Server; read-only afterwards.
func partitionCounters(versions func(int16) (VersionRange, bool)) map[int16][]countPath {
	out := map[int16][]countPath{}
	for k := int16(0); k <= kmsg.MaxKey; k++ {
		if _, ok := versions(k); !ok {
			continue
		}
		if req := kmsg.RequestForKey(k); req != nil {
			out[k] = partitionPaths(reflect.TypeOf(req))
		}
	}
	return out
}
