package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

// Broker is one Varve node: the Kafka handlers, the topic registry and the
// partitions it holds.
//
// Lock order: Broker.mu, then anything inside a partition. Handlers hold
// mu for reading only while they look topics up, never while they wait on
// a partition.
type Broker struct {
	cfg       Config
	logger    *slog.Logger
	clusterID string
	store     *store
	apis      *apiSet

	ctx    context.Context // cancelled by Shutdown; background loops and long polls watch it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.RWMutex
	topics map[string]*topic
	byID   map[topicID]*topic
	// advertised is the address clients are told, per listener name; set
	// by Serve.
	advertised map[string]hostPort
	servers    []*protocol.Server
	closed     bool

	pidMu   sync.Mutex
	pidNext int64 // next producer id to hand out
	pidEnd  int64 // end of the reserved block
}

// topic is a topic this broker holds. Its name and id never change; what
// can (configs, partitions) is an immutable topicState swapped whole under
// Broker.mu, so handlers read a consistent view without a lock.
type topic struct {
	name     string
	id       topicID
	internal bool
	state    atomic.Pointer[topicState]
}

// topicState is one version of a topic's changeable state. Never modified
// after it is published.
type topicState struct {
	configs    map[string]string // explicit configs only
	settings   topicSettings
	partitions []*localReplica
}

// load returns the topic's current state.
func (t *topic) load() *topicState { return t.state.Load() }

type hostPort struct {
	host string
	port int32
}

// New opens (formatting on first start) the data directory, the metadata
// store and every partition, ready to Serve.
func New(cfg Config) (*Broker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	meta, err := loadOrFormat(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	st, err := openStore(filepath.Join(cfg.DataDir, "metadata"), cfg.Logger)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		cfg:        cfg,
		logger:     cfg.Logger.With("node_id", cfg.NodeID),
		clusterID:  meta.ClusterID,
		store:      st,
		apis:       newAPISet(),
		ctx:        ctx,
		cancel:     cancel,
		topics:     map[string]*topic{},
		byID:       map[topicID]*topic{},
		advertised: map[string]hostPort{},
	}
	if err := b.loadTopics(); err != nil {
		b.closePartitions()
		_ = st.close()
		cancel()
		return nil, err
	}
	b.goBackground("flusher", cfg.FlushInterval, b.flushAll)
	b.goBackground("retention", cfg.RetentionCheckInterval, b.retainAll)
	b.logger.Info("broker started", "cluster_id", b.clusterID, "data_dir", cfg.DataDir, "topics", len(b.topics))
	return b, nil
}

// ClusterID is the id generated when the data directory was formatted.
func (b *Broker) ClusterID() string { return b.clusterID }

// Serve answers Kafka requests on ln as the named listener until Shutdown.
// The listener's advertised address comes from the config, or else from
// ln itself.
func (b *Broker) Serve(name string, ln net.Listener) error {
	var lc *Listener
	for i := range b.cfg.Listeners {
		if b.cfg.Listeners[i].Name == name {
			lc = &b.cfg.Listeners[i]
		}
	}
	if lc == nil {
		return fmt.Errorf("broker: no listener named %q in the config", name)
	}
	adv := lc.Advertise
	if adv == "" {
		adv = ln.Addr().String()
	}
	hp, err := parseHostPort(adv)
	if err != nil {
		return fmt.Errorf("broker: listener %q: %w", name, err)
	}
	srv, err := protocol.NewServer(protocol.Config{
		Listener:        name,
		Versions:        b.apis.versionRange,
		MaxRequestBytes: b.cfg.MaxRequestBytes,
		Logger:          b.logger,
	}, b)
	if err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return errors.New("broker: shut down")
	}
	b.advertised[name] = hp
	b.servers = append(b.servers, srv)
	b.mu.Unlock()
	return srv.Serve(ln)
}

// Shutdown stops accepting connections, lets requests in progress finish,
// then checkpoints and closes every partition. After ctx expires,
// connections are cut.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	servers := b.servers
	b.mu.Unlock()
	// Cancel first: a long-poll Fetch waiting for data returns what it has
	// at once, so the servers can finish their in-flight requests.
	b.cancel()
	var err error
	for _, srv := range servers {
		if serr := srv.Shutdown(ctx); err == nil {
			err = serr
		}
	}
	b.wg.Wait()
	if perr := b.closePartitions(); err == nil {
		err = perr
	}
	if serr := b.store.close(); err == nil {
		err = serr
	}
	b.logger.Info("broker stopped")
	return err
}

func (b *Broker) closePartitions() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, t := range b.topics {
		for _, p := range t.load().partitions {
			if err := p.close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Handle implements protocol.Handler: one table drives dispatch.
func (b *Broker) Handle(ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	a, ok := b.apis.byKey[req.Key]
	if !ok {
		return nil, fmt.Errorf("broker: api key %d is not served", req.Key)
	}
	return a.handle(b, ctx, req)
}

// goBackground runs fn every interval until Shutdown.
func (b *Broker) goBackground(name string, every time.Duration, fn func()) {
	if every <= 0 {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-b.ctx.Done():
				return
			case <-t.C:
				fn()
			}
		}
	}()
}

// allReplicas snapshots the partitions so background work runs without
// holding mu.
func (b *Broker) allReplicas() []*localReplica {
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []*localReplica
	for _, t := range b.topics {
		out = append(out, t.load().partitions...)
	}
	return out
}

func (b *Broker) flushAll() {
	for _, r := range b.allReplicas() {
		if err := r.flush(); err != nil {
			b.logger.Error("flush failed", "topic", r.topic, "partition", r.index, "err", err)
		}
	}
}

func (b *Broker) retainAll() {
	now := b.cfg.Now().UnixMilli()
	for _, r := range b.allReplicas() {
		if n, err := r.log.Retain(now); err != nil {
			b.logger.Error("retention failed", "topic", r.topic, "partition", r.index, "err", err)
		} else if n > 0 {
			b.logger.Info("retention deleted segments", "topic", r.topic, "partition", r.index, "segments", n)
		}
		r.log.ExpireProducers(now)
	}
}

// allocateProducerID hands out a producer id that was never handed out
// before, reserving blocks durably in the store (KIP-730's idea on one
// node).
func (b *Broker) allocateProducerID() (int64, error) {
	const block = 1000
	b.pidMu.Lock()
	defer b.pidMu.Unlock()
	if b.pidNext >= b.pidEnd {
		first, err := b.store.reserveProducerIDs(block)
		if err != nil {
			return 0, err
		}
		b.pidNext, b.pidEnd = first, first+block
	}
	id := b.pidNext
	b.pidNext++
	return id, nil
}
