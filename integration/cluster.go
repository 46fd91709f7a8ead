// Package integration boots real Varve brokers in-process for tests: real
// TCP listeners on 127.0.0.1:0, real data directories, real Kafka clients
// (franz-go kgo and kadm). Today a cluster is one broker; replication will
// grow it to several, with fault injection.
package integration

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/broker"
)

// Cluster is a set of in-process brokers (one, for now).
type Cluster struct {
	t       testing.TB
	cfg     broker.Config
	broker  *broker.Broker
	addr    string
	serving chan error
}

// Option changes how a cluster is built.
type Option func(*broker.Config)

// WithConfig lets a test change the broker config before start.
func WithConfig(f func(*broker.Config)) Option { return Option(f) }

// NewCluster starts a broker on a fresh data directory and stops it when
// the test ends.
func NewCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	cfg := broker.Config{DataDir: t.TempDir(), FlushInterval: 100 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	c := &Cluster{t: t, cfg: cfg}
	c.start()
	t.Cleanup(func() { c.stop() })
	return c
}

func (c *Cluster) start() {
	c.t.Helper()
	b, err := broker.New(c.cfg)
	if err != nil {
		c.t.Fatalf("start broker: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatalf("listen: %v", err)
	}
	c.broker, c.addr = b, ln.Addr().String()
	c.serving = make(chan error, 1)
	go func() { c.serving <- b.Serve("PLAINTEXT", ln) }()
}

func (c *Cluster) stop() {
	if c.broker == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.broker.Shutdown(ctx); err != nil {
		c.t.Errorf("shutdown: %v", err)
	}
	if err := <-c.serving; err != nil && !errors.Is(err, net.ErrClosed) {
		c.t.Errorf("serve: %v", err)
	}
	c.broker = nil
}

// Restart stops the broker gracefully and starts it again on the same data
// directory (and a new port).
func (c *Cluster) Restart() {
	c.t.Helper()
	c.stop()
	c.start()
}

// Addr is the Kafka listener's address.
func (c *Cluster) Addr() string { return c.addr }

// Broker is the running broker.
func (c *Cluster) Broker() *broker.Broker { return c.broker }

// Client returns a franz-go client for the cluster, closed at the end of
// the test. Options are appended to the seed brokers.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.addr)}, opts...)...)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Admin returns a kadm client over a new franz-go client.
func (c *Cluster) Admin(t testing.TB) *kadm.Client {
	return kadm.NewClient(c.Client(t))
}
