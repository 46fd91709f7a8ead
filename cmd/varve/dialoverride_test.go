package main

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestDialOverrideRedirectsOnlyMappedAddresses: a mapped raft address is
// dialed at its override, any other address as it is, over real TCP.
func TestDialOverrideRedirectsOnlyMappedAddresses(t *testing.T) {
	listen := func(greeting string) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(greeting))
				_ = c.Close()
			}
		}()
		return ln.Addr().String()
	}
	peer, proxy, other := listen("peer"), listen("proxy"), listen("other")
	dial, err := parseDialOverride(" " + peer + "=" + proxy + " ,127.0.0.1:1=127.0.0.1:2")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	greeting := func(addr string) string {
		c, err := dial(ctx, addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := greeting(peer); got != "proxy" {
		t.Fatalf("dialing the mapped address %s reached %q, want the override", peer, got)
	}
	if got := greeting(other); got != "other" {
		t.Fatalf("dialing the unmapped address %s reached %q", other, got)
	}
}

func TestDialOverrideParse(t *testing.T) {
	if d, err := parseDialOverride("  "); d != nil || err != nil {
		t.Fatalf("empty: %v %v, want no dialer and no error", d != nil, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:1", "not RAFTADDR=DIALADDR"},
		{"127.0.0.1:1=nohost", "missing port"},
		{"2=127.0.0.1:5", "missing port"},
		{"127.0.0.1:1=127.0.0.1:2,127.0.0.1:1=127.0.0.1:3", "mapped twice"},
	} {
		_, err := parseDialOverride(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}
