//go:build !linux

package integration

import (
	"context"
	"errors"
	"net"
)

// composeNetnsDialer needs Linux network namespaces; elsewhere every dial
// fails (the compose tests run against a Linux Docker engine).
func composeNetnsDialer(int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("dialing inside a container's network namespace needs Linux")
	}
}
