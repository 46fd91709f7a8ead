package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultBrokers is where the tools look for a broker when told nothing:
// `varve serve`'s default Kafka listener.
const DefaultBrokers = "127.0.0.1:9092"

// Config is what every tool needs to reach a cluster.
type Config struct {
	// Brokers are seed addresses (host:port); any one that answers is
	// enough. Default: DefaultBrokers.
	Brokers []string
	// ClientID is sent with every request (brokers log it, DescribeGroups
	// shows it). Default: "varve-cli".
	ClientID string
	// DialTimeout bounds one TCP connect. Default: 5s.
	DialTimeout time.Duration
	// ProbeTimeout bounds the Metadata request New sends to prove a broker
	// answers. New gives up earlier, as soon as every seed broker has
	// refused or failed a connection. Default: 5s.
	ProbeTimeout time.Duration
}

// DefaultConfig is the Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		Brokers:      ParseBrokers(DefaultBrokers),
		ClientID:     "varve-cli",
		DialTimeout:  5 * time.Second,
		ProbeTimeout: 5 * time.Second,
	}
}

// withDefaults fills the zero fields of c from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if len(c.Brokers) == 0 {
		c.Brokers = d.Brokers
	}
	if c.ClientID == "" {
		c.ClientID = d.ClientID
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = d.ProbeTimeout
	}
	return c
}

// Validate reports every problem with c (after defaults), joined.
func (c Config) Validate() error {
	var errs []error
	for _, b := range c.Brokers {
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("broker address %q: want host:port", b))
			continue
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || host == "" {
			errs = append(errs, fmt.Errorf("broker address %q: want host:port", b))
		}
	}
	return errors.Join(errs...)
}

// ParseBrokers splits a comma-separated broker list, dropping blanks.
func ParseBrokers(s string) []string {
	var out []string
	for b := range strings.SplitSeq(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// UnreachableError is New's answer when no seed broker answered the probe.
type UnreachableError struct {
	Brokers []string
	Err     error // the last connection error, else the probe's own error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("no broker reachable at %s: %v", strings.Join(e.Brokers, ","), e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// UnknownTopicError says a topic does not exist. It matches
// kerr.UnknownTopicOrPartition with errors.Is.
type UnknownTopicError struct{ Topic string }

func (e *UnknownTopicError) Error() string { return fmt.Sprintf("unknown topic %q", e.Topic) }

func (e *UnknownTopicError) Is(target error) bool { return target == kerr.UnknownTopicOrPartition }

// New builds a franz-go client (and a kadm client over it) from cfg plus
// the extra options (consumer, producer, partitioner; later options win),
// then sends one Metadata request for no topics: if no seed broker
// answers, the client is closed and an *UnreachableError returned.
//
// Partitioning: the producer uses kgo.UniformBytesPartitioner(64 KiB,
// adaptive, keys, nil), which is kgo's own default spelled out. Keyed
// records go to murmur2(key) & 0x7fffffff mod partitions, through kgo's
// KafkaHasher(murmur2), exactly as the Java client's default partitioner
// (and KeyPartition here) place them; unkeyed records stick to one
// partition per 64 KiB, as the Java client's KIP-794 uniform sticky
// partitioner does. (kgo.StickyKeyPartitioner(nil) hashes keys the same
// way; it differs only for unkeyed records.)
//
// The caller closes the kgo client; the kadm client needs no closing.
func New(ctx context.Context, cfg Config, opts ...kgo.Opt) (*kgo.Client, *kadm.Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	probe := &dialProbe{seeds: len(cfg.Brokers), failed: map[string]bool{}}
	base := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.DialTimeout(cfg.DialTimeout),
		kgo.RecordPartitioner(kgo.UniformBytesPartitioner(64<<10, true, true, nil)),
		kgo.WithHooks(probe),
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	adm := kadm.NewClient(cl)
	pctx, cancel := context.WithTimeout(ctx, cfg.ProbeTimeout)
	defer cancel()
	probe.arm(cancel)
	_, err = adm.BrokerMetadata(pctx)
	last := probe.disarm()
	if err != nil {
		cl.Close()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if last == nil {
			last = err
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				last = fmt.Errorf("no answer within %v", cfg.ProbeTimeout)
			}
		}
		return nil, nil, &UnreachableError{Brokers: cfg.Brokers, Err: last}
	}
	return cl, adm, nil
}

// dialProbe watches connection attempts while New probes: it keeps the
// last dial error (kgo's own error after its retries is only the
// context's) and cancels the probe once every seed has failed to connect,
// so a refused connection fails in milliseconds, not at ProbeTimeout.
type dialProbe struct {
	mu     sync.Mutex
	seeds  int
	failed map[string]bool
	last   error
	cancel context.CancelFunc // nil outside the probe
}

var _ kgo.HookBrokerConnect = (*dialProbe)(nil)

func (p *dialProbe) arm(cancel context.CancelFunc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancel = cancel
}

func (p *dialProbe) disarm() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancel = nil
	return p.last
}

// OnBrokerConnect implements kgo.HookBrokerConnect; kgo calls it from its
// connection goroutines.
func (p *dialProbe) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cancel == nil {
		return
	}
	p.last = err
	p.failed[net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port)))] = true
	if len(p.failed) >= p.seeds {
		p.cancel()
	}
}

// Topic describes one topic from a fresh Metadata request, or returns an
// *UnknownTopicError.
func Topic(ctx context.Context, adm *kadm.Client, topic string) (kadm.TopicDetail, error) {
	if topic == "" {
		return kadm.TopicDetail{}, errors.New("no topic given")
	}
	m, err := adm.Metadata(ctx, topic)
	if err != nil {
		return kadm.TopicDetail{}, err
	}
	d, ok := m.Topics[topic]
	if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return kadm.TopicDetail{}, &UnknownTopicError{Topic: topic}
	}
	if d.Err != nil {
		return kadm.TopicDetail{}, fmt.Errorf("topic %q: %w", topic, d.Err)
	}
	return d, nil
}

// Retry calls f until it returns nil or an error that is not retriable
// (kerr.IsRetriable: a coordinator still loading or moving, a leader
// election), backing off from 50 ms to 1 s, for at most 15 s or until ctx
// ends; it returns f's last error. UNKNOWN_TOPIC_OR_PARTITION, retriable
// to Kafka, is final here. Admin answers carry such errors in
// their bodies, where kadm does not retry them (the first group command
// against a cluster meets COORDINATOR_NOT_AVAILABLE while
// __consumer_offsets is created).
func Retry(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(15 * time.Second)
	backoff := 50 * time.Millisecond
	for {
		err := f()
		if err == nil || !kerr.IsRetriable(err) || errors.Is(err, kerr.UnknownTopicOrPartition) || time.Now().Add(backoff).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}
