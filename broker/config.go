package broker

import (
	"context"
	"errors"
	"fmt"
	"github.com/varvelog/varve/broker/metadata"
	"log/slog"
	"net"
	"time"

	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication"
)

// Config is everything a broker needs. Only cmd/ reads flags, environment
// or files; tests build this struct directly. The zero value of each field
// documented with a default gets that default from WithDefaults.
type Config struct {
	// NodeID is this broker's id (Kafka's node.id). Default 1.
	NodeID int32
	// DataDir holds the broker's state: the meta file (cluster id), the
	// Raft state of every group under raft/, and one directory per
	// partition under logs/.
	DataDir string

	// RaftListener carries the Raft traffic of every group on this
	// broker. Nil: New binds RaftAddr.
	RaftListener net.Listener
	// RaftAddr is the bind address used when RaftListener is nil.
	// Default 127.0.0.1:9093.
	RaftAddr string
	// RaftAdvertise is the address peers dial; default the listener's.
	// With Peers it must match this broker's entry there.
	RaftAdvertise string
	// Peers are the voters of the metadata group (id and Raft address),
	// identical on every broker: the first start of a cluster bootstraps
	// the metadata group with them. A broker whose id is not listed joins
	// the running cluster as a learner of the metadata group (join.go).
	// Empty: a cluster of this broker alone.
	Peers []replication.Peer
	// ClusterID names the cluster in the Raft handshake. Default: derived
	// from Peers (every broker formatted with the same peer list agrees),
	// or random for a cluster of one. Fixed at the first start.
	ClusterID string
	// RaftDial dials peers; nil is a plain TCP dial. Tests wrap it to cut
	// links.
	RaftDial func(ctx context.Context, addr string) (net.Conn, error)
	// WriteCaching acknowledges writes before the Raft WAL's fdatasync
	// (flushed on segment rolls and close): faster, and a simultaneous
	// power loss of a majority can lose acknowledged writes. Default off.
	WriteCaching bool
	// DataTiming and MetadataTiming override the Raft timeouts of
	// partition groups and of the metadata group (tests shorten them).
	// Zero: replication.DataTiming() and MetadataTiming().
	DataTiming     replication.Timing
	MetadataTiming replication.Timing
	// Listeners are the named Kafka listeners. Each gets a net.Listener
	// through Serve; Advertise is the host:port clients are told to use
	// (empty: the listener's own address). Metadata answers with the
	// address of the listener the request arrived on. Default: one
	// listener named "PLAINTEXT".
	Listeners []Listener
	// Rack is reported in Metadata and DescribeCluster.
	Rack string

	// AutoCreateTopics lets Metadata requests that ask for it create
	// topics (auto.create.topics.enable). Default off, unlike Kafka.
	AutoCreateTopics bool
	// DefaultPartitions is num.partitions, used by auto-creation and by
	// CreateTopics with -1 partitions. Default 1.
	DefaultPartitions int32
	// MaxPartitions caps the partitions this broker holds in total, so
	// CreateTopics and CreatePartitions cannot make it open files without
	// bound (POLICY_VIOLATION past it). Default 10,000.
	MaxPartitions int
	// TopicDefaults are the log settings of a topic that sets none.
	// Default partition.DefaultConfig().
	TopicDefaults partition.Config
	// TimestampType is the default message.timestamp.type ("CreateTime"
	// or "LogAppendTime"). Default CreateTime.
	TimestampType string

	// MaxRequestBytes bounds one request frame (socket.request.max.bytes).
	// Default 100 MiB.
	MaxRequestBytes int32
	// MaxFetchBytes caps one fetch response whatever the client asks
	// (fetch.max.bytes). Default 55 MiB, Kafka's.
	MaxFetchBytes int32
	// MaxDecompressedBytes caps what one produced batch may decompress
	// to while it is checked (compression bombs get MESSAGE_TOO_LARGE).
	// Default 64 MiB; at least 1 MiB.
	MaxDecompressedBytes int64
	// MaxConnections caps the open Kafka connections of this broker, all
	// listeners together (max.connections). Connections over it are closed
	// as soon as they are accepted. Default 10,000: each costs two
	// goroutines, buffers and a file descriptor, and Kafka's own default
	// (unlimited) lets a connection leak exhaust the process's descriptors.
	// Negative: no cap.
	MaxConnections int
	// MaxConnectionsPerIP caps the open Kafka connections from one client
	// IP address (max.connections.per.ip), so that one host leaking
	// connections cannot take every slot of MaxConnections. Default 1,000
	// (Kafka's is unlimited); clients behind one NAT share it. Negative: no
	// cap.
	MaxConnectionsPerIP int
	// IdleTimeout closes a Kafka connection that sends no request for this
	// long while none is in progress, and bounds each response write
	// (connections.max.idle.ms). Default 10 min, Kafka's.
	IdleTimeout time.Duration
	// FrameTimeout closes a Kafka connection whose request frame has begun
	// but not fully arrived after this long (slow-loris clients). Kafka has
	// no equivalent. Default 30 s.
	FrameTimeout time.Duration
	// MaxPartitionsPerRequest caps the partitions one request names (or
	// the topics, for requests that name no partitions); a request over it
	// closes the connection, logged. Default 100,000.
	MaxPartitionsPerRequest int
	// QueuedMaxRequestBytes bounds the bytes of request frames the broker
	// holds at once, over every connection and listener (Kafka's
	// queued.max.request.bytes, unbounded there by default): a connection
	// whose next frame does not fit stops reading until it does, so a
	// flood of large requests waits instead of exhausting memory. Frames
	// are counted as their buffers grow with the bytes received (see
	// protocol.RequestBudget). Default 500 MiB (five maximum-size
	// requests); negative: no bound.
	QueuedMaxRequestBytes int64
	// FlushInterval is how often each partition is fsynced and
	// checkpointed when it has new data. A single broker acknowledges
	// writes once they are in its segment files (page cache); fsync
	// before acknowledgement comes with the replicated Raft WAL. Default
	// 1 s.
	FlushInterval time.Duration
	// LeaderBalanceInterval is how often a leader that is not its
	// partition's preferred replica hands leadership back to it (when
	// caught up). Default 10 s; negative disables.
	LeaderBalanceInterval time.Duration
	// MaxFeatureLevel is the highest cluster feature level this broker
	// runs and registers (metadata/features.go). Default
	// metadata.MaxFeatureLevel; lower only to stand in for an older build
	// in a mixed-version test.
	MaxFeatureLevel int32
	// OffsetsTopicPartitions is the partition count of __consumer_offsets
	// when it is created (Kafka's offsets.topic.num.partitions, default
	// 16); it never changes afterwards.
	OffsetsTopicPartitions int32
	// GroupInitialRebalanceDelay is how long the first rebalance of a new
	// group waits for more members (group.initial.rebalance.delay.ms,
	// default 3 s; negative: none).
	GroupInitialRebalanceDelay time.Duration
	// OffsetsRetention is how long the committed offsets of an empty group
	// are kept (offsets.retention.minutes, default 7 days).
	OffsetsRetention time.Duration
	// OffsetsRetentionCheckInterval is how often the coordinator looks for
	// expired offsets (offsets.retention.check.interval.ms, default 10 min).
	OffsetsRetentionCheckInterval time.Duration
	// OffsetsCompactBytes is how large an offsets partition's log may grow
	// before its coordinator compacts it (offsets_compact.go): it rewrites
	// the partition's live commits and group records and deletes the log
	// before them, so committing forever does not grow the disk forever.
	// It compacts again only once the log is also twice what the last
	// rewrite wrote. Default 64 MiB; negative turns compaction off.
	OffsetsCompactBytes int64
	// GroupTickInterval is how often group sessions and rebalance
	// deadlines are checked, and coordinator moves noticed (default
	// 100 ms).
	GroupTickInterval time.Duration
	// ReassignInterval is how often a partition leader takes the next step
	// of a reassignment (membership.go). Default 250 ms; negative disables.
	ReassignInterval time.Duration
	// ISRInterval is how often a leader samples its followers'
	// acknowledged indexes for the in-sync replica set. Default 1 s.
	ISRInterval time.Duration
	// ReplicaLagMax drops a follower from the ISR when it has not caught
	// up with the leader for this long (replica.lag.time.max.ms).
	// Default 30 s.
	ReplicaLagMax time.Duration
	// BrokerSessionTimeout is how long the metadata leader waits without
	// hearing from a broker before it fences it: Metadata then names no
	// leader for the partitions that broker was last published to lead,
	// until another replica takes over or the broker is heard from again
	// (Kafka's broker.session.timeout.ms). Default 9 s.
	BrokerSessionTimeout time.Duration
	// RetentionCheckInterval is how often retention runs
	// (log.retention.check.interval.ms). Default 5 min.
	RetentionCheckInterval time.Duration
	// ShutdownHandoffTimeout bounds how long a graceful Shutdown spends
	// handing the leadership of this broker's partitions (and of the
	// metadata group) to caught-up followers before it stops its Raft
	// groups, so a stop costs clients a leadership transfer instead of an
	// election timeout, and never hangs on an unreachable peer. Default
	// 10 s; negative disables the handoff.
	ShutdownHandoffTimeout time.Duration
	// MetricsGroupLag adds consumer lag per group and partition to
	// /metrics (varve_group_lag, metrics_lag.go). Default off: it is a
	// series per committed partition of every group, and each scrape reads
	// every committed offset of the groups this broker coordinates.
	MetricsGroupLag bool

	// FS is the filesystem for partitions; nil means the real one.
	FS vfs.FS
	// Now is the wall clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the broker's logs; nil discards.
	Logger *slog.Logger
}

// Listener is one named Kafka listener.
type Listener struct {
	Name      string
	Advertise string
}

// WithDefaults returns c with every unset field given its default.
func (c Config) WithDefaults() Config {
	if c.NodeID == 0 {
		c.NodeID = 1
	}
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Name: "PLAINTEXT"}}
	}
	if c.DefaultPartitions == 0 {
		c.DefaultPartitions = 1
	}
	if c.MaxPartitions == 0 {
		c.MaxPartitions = 10_000
	}
	if c.TopicDefaults == (partition.Config{}) {
		c.TopicDefaults = partition.DefaultConfig()
	}
	if c.TimestampType == "" {
		c.TimestampType = "CreateTime"
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = 100 << 20
	}
	if c.MaxFetchBytes == 0 {
		c.MaxFetchBytes = 55 << 20
	}
	if c.MaxDecompressedBytes == 0 {
		c.MaxDecompressedBytes = 64 << 20
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = 10_000
	}
	if c.MaxConnectionsPerIP == 0 {
		c.MaxConnectionsPerIP = 1_000
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.FrameTimeout == 0 {
		c.FrameTimeout = 30 * time.Second
	}
	if c.MaxPartitionsPerRequest == 0 {
		c.MaxPartitionsPerRequest = 100_000
	}
	if c.QueuedMaxRequestBytes == 0 {
		c.QueuedMaxRequestBytes = 500 << 20
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = time.Second
	}
	if c.ISRInterval == 0 {
		c.ISRInterval = time.Second
	}
	if c.MaxFeatureLevel <= 0 || c.MaxFeatureLevel > metadata.MaxFeatureLevel {
		c.MaxFeatureLevel = metadata.MaxFeatureLevel
	}
	if c.OffsetsTopicPartitions <= 0 {
		c.OffsetsTopicPartitions = 16
	}
	if c.GroupInitialRebalanceDelay == 0 {
		c.GroupInitialRebalanceDelay = 3 * time.Second
	} else if c.GroupInitialRebalanceDelay < 0 {
		c.GroupInitialRebalanceDelay = 0
	}
	if c.OffsetsCompactBytes == 0 {
		c.OffsetsCompactBytes = 64 << 20
	}
	if c.OffsetsRetention <= 0 {
		c.OffsetsRetention = 7 * 24 * time.Hour
	}
	if c.OffsetsRetentionCheckInterval <= 0 {
		c.OffsetsRetentionCheckInterval = 10 * time.Minute
	}
	if c.GroupTickInterval <= 0 {
		c.GroupTickInterval = 100 * time.Millisecond
	}
	if c.ReassignInterval == 0 {
		c.ReassignInterval = 250 * time.Millisecond
	}
	if c.BrokerSessionTimeout == 0 {
		c.BrokerSessionTimeout = 9 * time.Second
	}
	if c.ReplicaLagMax == 0 {
		c.ReplicaLagMax = 30 * time.Second
	}
	if c.LeaderBalanceInterval == 0 {
		c.LeaderBalanceInterval = 10 * time.Second
	}
	if c.RetentionCheckInterval == 0 {
		c.RetentionCheckInterval = 5 * time.Minute
	}
	if c.ShutdownHandoffTimeout == 0 {
		c.ShutdownHandoffTimeout = 10 * time.Second
	}
	if c.FS == nil {
		c.FS = vfs.OS{}
	}
	if c.RaftAddr == "" {
		c.RaftAddr = "127.0.0.1:9093"
	}
	if c.DataTiming == (replication.Timing{}) {
		c.DataTiming = replication.DataTiming()
	}
	if c.MetadataTiming == (replication.Timing{}) {
		c.MetadataTiming = replication.MetadataTiming()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID < 0 {
		errs = append(errs, fmt.Errorf("node id %d is negative", c.NodeID))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data directory is empty"))
	}
	names := map[string]bool{}
	for _, l := range c.Listeners {
		if l.Name == "" {
			errs = append(errs, errors.New("a listener has no name"))
		}
		if names[l.Name] {
			errs = append(errs, fmt.Errorf("listener %q named twice", l.Name))
		}
		names[l.Name] = true
	}
	if c.DefaultPartitions < 1 {
		errs = append(errs, fmt.Errorf("default partitions %d below 1", c.DefaultPartitions))
	}
	if c.MaxPartitions < 1 {
		errs = append(errs, fmt.Errorf("max partitions %d below 1", c.MaxPartitions))
	}
	if err := c.TopicDefaults.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.TimestampType != "CreateTime" && c.TimestampType != "LogAppendTime" {
		errs = append(errs, fmt.Errorf("timestamp type %q is neither CreateTime nor LogAppendTime", c.TimestampType))
	}
	if c.MaxRequestBytes < 1024 {
		errs = append(errs, fmt.Errorf("max request bytes %d below 1024", c.MaxRequestBytes))
	}
	if c.MaxFetchBytes < 1024 {
		errs = append(errs, fmt.Errorf("max fetch bytes %d below 1024", c.MaxFetchBytes))
	}
	if c.MaxDecompressedBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("max decompressed bytes %d below 1 MiB", c.MaxDecompressedBytes))
	}
	if c.IdleTimeout < 0 || c.FrameTimeout < 0 {
		errs = append(errs, fmt.Errorf("idle timeout %v and frame timeout %v must be positive", c.IdleTimeout, c.FrameTimeout))
	}
	if c.MaxPartitionsPerRequest < 0 {
		errs = append(errs, fmt.Errorf("max partitions per request %d is negative", c.MaxPartitionsPerRequest))
	}
	if c.FlushInterval < 0 || c.RetentionCheckInterval < 0 {
		errs = append(errs, errors.New("intervals must not be negative"))
	}
	seen := map[int32]bool{}
	for _, p := range c.Peers {
		if seen[p.ID] {
			errs = append(errs, fmt.Errorf("peer %d listed twice", p.ID))
		}
		seen[p.ID] = true
		if p.Addr == "" {
			errs = append(errs, fmt.Errorf("peer %d has no address", p.ID))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("broker: invalid config: %w", errors.Join(errs...))
	}
	return nil
}
