package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/protocol"
	"github.com/varvelog/varve/replication"
	"github.com/varvelog/varve/replication/transport"
)

// Broker is one Varve node: the Kafka handlers, its replicas of the
// cluster's partitions (each a Raft group), and its member of the metadata
// group.
//
// Lock order: reconcileMu, then mu, then anything inside a group or a
// partition. Handlers hold mu for reading only while they look topics up,
// never while they wait on a partition.
type Broker struct {
	cfg           Config
	logger        *slog.Logger
	clusterID     string
	apis          *apiSet
	peers         []replication.Peer
	raftAdvertise string

	mux     *transport.Mux
	meta    *metadata.FSM
	machine *replication.Machine
	// opened is set once New has assigned machine: transport callbacks
	// can run before that.
	opened atomic.Bool
	// rejoinedMetadata and rejoinedReplicas count what this process opened
	// in rejoin mode (rejoin.go); tests read them.
	rejoinedMetadata bool
	rejoinedReplicas atomic.Int64

	leaders         leaderPublisher // leaderships to publish in batches (leaders.go)
	creatingOffsets atomic.Bool     // ensureOffsetsTopic is running
	gstate          groupState      // consumer groups and committed offsets (groups.go)
	reqMetrics      *requestMetrics // per-API request counts and latency (metrics_requests.go)
	metrics         *brokerMetrics  // bytes, latencies, Raft and group counters (metrics_broker.go)

	ctx    context.Context // cancelled by Shutdown; background loops and long polls watch it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// reconcileMu guards groups: the partition replicas this broker runs,
	// by group id. Only the reconciler opens and removes them.
	reconcileMu sync.Mutex
	groups      map[string]*replication.Group

	// regChanged wakes the registration loop when a listener starts.
	regChanged chan struct{}

	mu sync.RWMutex
	// topics and byID are the handlers' view of the metadata, rebuilt
	// whole by the reconciler.
	topics map[string]*topic
	byID   map[metadata.TopicID]*topic
	// advertised is the address clients are told, per listener name; set
	// by Serve.
	advertised map[string]hostPort
	servers    []*protocol.Server
	conns      *protocol.ConnLimits    // the connection caps, shared by every listener; made by the first Serve
	requests   *protocol.RequestBudget // the request-bytes budget, shared likewise
	closed     bool

	recMu      sync.Mutex
	reconciled uint64        // metadata index the handlers' view reflects
	recCh      chan struct{} // closed when reconciled moves

	pidMu   sync.Mutex
	pidNext int64 // next producer id to hand out
	pidEnd  int64 // end of the block allocated to this broker
}

// topic is a topic as the metadata names it. Its name and id never change;
// what can (configs, partitions) is an immutable topicState.
type topic struct {
	name     string
	id       metadata.TopicID
	internal bool
	state    atomic.Pointer[topicState]
}

// topicState is one version of a topic's changeable state. Never modified
// after it is published.
type topicState struct {
	configs    map[string]string // explicit configs only
	settings   topicSettings
	partitions []*raftReplica
}

// load returns the topic's current state.
func (t *topic) load() *topicState { return t.state.Load() }

type hostPort struct {
	host string
	port int32
}

// metadataGroupID names the metadata Raft group.
const metadataGroupID = "__cluster_metadata"

// New opens (formatting on first start) the data directory, starts the
// Raft transport and the metadata group, and the reconciler that opens
// this broker's partition replicas as the metadata assigns them.
func New(cfg Config) (*Broker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	meta, err := loadOrFormat(cfg.FS, cfg.DataDir, cfg.NodeID, cfg.ClusterID, cfg.Peers)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		cfg:        cfg,
		logger:     cfg.Logger.With("node_id", cfg.NodeID),
		clusterID:  meta.ClusterID,
		apis:       newAPISet(),
		ctx:        ctx,
		cancel:     cancel,
		groups:     map[string]*replication.Group{},
		regChanged: make(chan struct{}, 1),
		topics:     map[string]*topic{},
		byID:       map[metadata.TopicID]*topic{},
		advertised: map[string]hostPort{},
		meta:       metadata.NewFSMAtLevel(cfg.MaxFeatureLevel),
		recCh:      make(chan struct{}),
		reqMetrics: newRequestMetrics(newAPISet()),
		metrics:    newBrokerMetrics(),
	}
	if err := b.newMux(); err != nil {
		cancel()
		return nil, err
	}
	b.peers = cfg.Peers
	if len(b.peers) == 0 {
		b.peers = []replication.Peer{{ID: cfg.NodeID, Addr: b.raftAdvertise}}
	}
	rejoin, err := b.metadataRejoin()
	if err != nil {
		_ = b.mux.Close()
		cancel()
		return nil, err
	}
	b.machine, err = replication.OpenMachine(replication.MachineConfig{
		ID:      metadataGroupID,
		LocalID: cfg.NodeID,
		Peers:   b.peers,
		Dir:     path.Join(cfg.DataDir, "raft", metadataGroupID),
		FS:      cfg.FS,
		Mux:     b.mux,
		Timing:  cfg.MetadataTiming,
		Logger:  b.logger.With("group", metadataGroupID),
		Join:    joiningMetadata(&cfg),
		Rejoin:  rejoin,
		Metrics: b.metrics.groupHooks(),
	}, metaMachine{b.meta})
	if err != nil {
		_ = b.mux.Close()
		cancel()
		return nil, err
	}
	b.opened.Store(true)
	if joiningMetadata(&cfg) {
		b.wg.Add(1)
		go b.joinLoop()
	}
	if rejoin {
		b.rejoinedMetadata = true
		b.wg.Add(1)
		go b.rejoinLoop()
	}
	var fences fenceState
	b.goBackground("metadata-housekeeping", 500*time.Millisecond, func() {
		b.promoteMetadataVoters()
		b.raiseFeatureLevel()
		b.fenceBrokers(&fences)
	})
	b.wg.Add(2)
	go b.reconcileLoop()
	go b.registerLoop()
	b.goBackground("retention", cfg.RetentionCheckInterval, b.retainAll)
	b.goBackground("leader-balance", cfg.LeaderBalanceInterval, b.balanceLeaders)
	b.goBackground("move-replicas", cfg.ReassignInterval, b.moveReplicas)
	b.goBackground("groups", cfg.GroupTickInterval, b.tendGroups)
	isr := newISRTracker()
	b.goBackground("isr", cfg.ISRInterval, func() { b.updateISR(isr) })
	b.logger.Info("broker started", "cluster_id", b.clusterID, "data_dir", cfg.DataDir, "raft_addr", b.raftAdvertise, "peers", len(b.peers))
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
	b.mu.Lock()
	if b.conns == nil {
		b.conns = protocol.NewConnLimits(max(b.cfg.MaxConnections, 0), max(b.cfg.MaxConnectionsPerIP, 0))
		queued := b.cfg.QueuedMaxRequestBytes
		if queued < 0 {
			queued = math.MaxInt64
		}
		b.requests = protocol.NewRequestBudget(queued)
	}
	conns, requests := b.conns, b.requests
	b.mu.Unlock()
	srv, err := protocol.NewServer(protocol.Config{
		Listener:                name,
		Versions:                b.apis.versionRange,
		MaxRequestBytes:         b.cfg.MaxRequestBytes,
		IdleTimeout:             b.cfg.IdleTimeout,
		FrameTimeout:            b.cfg.FrameTimeout,
		Conns:                   conns,
		Requests:                requests,
		MaxPartitionsPerRequest: b.cfg.MaxPartitionsPerRequest,
		Logger:                  b.logger,
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
	select {
	case b.regChanged <- struct{}{}:
	default:
	}
	// Answer nothing before the metadata is caught up and this listener
	// registered: a restarted broker must not call a topic unknown because
	// its metadata has not replayed yet. Connections wait in the backlog.
	if err := b.waitServing(b.ctx); err != nil {
		_ = ln.Close()
		return net.ErrClosed
	}
	return srv.Serve(ln)
}

// Shutdown stops accepting connections, lets requests in progress finish,
// hands the leadership this broker holds to caught-up followers (see
// handoff), then stops every partition replica (checkpointing it) and the
// metadata group. After ctx expires, connections are cut and the handoff
// is skipped.
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
	var errs []error
	for _, srv := range servers {
		errs = append(errs, srv.Shutdown(ctx))
	}
	b.wg.Wait()
	// Hand leadership off only now: the requests in flight have been
	// answered by this broker as leader (a transfer would have failed them
	// with NOT_LEADER_OR_FOLLOWER), and this broker's balancer has stopped,
	// so nothing races the transfers. The groups close right after, which
	// leaves other brokers' balancers little time to hand leadership back.
	b.handoff(ctx)
	errs = append(errs, b.closeGroups())
	errs = append(errs, b.closeGroupState())
	errs = append(errs, b.machine.Close())
	errs = append(errs, b.mux.Close())
	b.logger.Info("broker stopped")
	return errors.Join(errs...)
}

// closeGroups stops every partition replica, a few at a time in parallel
// (each waits for its raft to stop).
func (b *Broker) closeGroups() error {
	b.reconcileMu.Lock()
	groups := b.groups
	b.groups = map[string]*replication.Group{}
	b.reconcileMu.Unlock()
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := g.Close(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Handle implements protocol.Handler: one table drives dispatch.
func (b *Broker) Handle(ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	a, ok := b.apis.byKey[req.Key]
	if !ok {
		return nil, fmt.Errorf("broker: api key %d is not served", req.Key)
	}
	return b.reqMetrics.observe(ctx, req, func(ctx context.Context) (kmsg.Response, error) { return a.handle(b, ctx, req) })
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

// goTracked runs fn on a goroutine Shutdown waits for.
func (b *Broker) goTracked(fn func()) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn()
	}()
}

// localGroups snapshots the replicas so background work runs without
// holding a lock.
func (b *Broker) localGroups() []*replication.Group {
	b.reconcileMu.Lock()
	defer b.reconcileMu.Unlock()
	out := make([]*replication.Group, 0, len(b.groups))
	for _, g := range b.groups {
		out = append(out, g)
	}
	return out
}

// retainAll applies retention on every local replica with this broker's
// clock: each replica deletes whole segments below its own retention
// limits (as Kafka's replicas do); the committed bytes stay identical.
func (b *Broker) retainAll() {
	now := b.cfg.Now().UnixMilli()
	for _, g := range b.localGroups() {
		if n, err := g.Log().Retain(now); err != nil {
			b.logger.Error("retention failed", "err", err)
		} else if n > 0 {
			b.logger.Info("retention deleted segments", "segments", n)
		}
	}
}
