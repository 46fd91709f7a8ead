package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/partition/vfs"
)

// Config is everything a broker needs. Only cmd/ reads flags, environment
// or files; tests build this struct directly. The zero value of each field
// documented with a default gets that default from WithDefaults.
type Config struct {
	// NodeID is this broker's id (Kafka's node.id). Default 1.
	NodeID int32
	// DataDir holds the broker's state: the meta file (cluster id), the
	// badger metadata store and one directory per partition.
	DataDir string
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
	// to while it is checked. Default 64 MiB.
	MaxDecompressedBytes int64
	// FlushInterval is how often each partition is fsynced and
	// checkpointed when it has new data. A single broker acknowledges
	// writes once they are in its segment files (page cache); fsync
	// before acknowledgement comes with the replicated Raft WAL. Default
	// 1 s.
	FlushInterval time.Duration
	// RetentionCheckInterval is how often retention runs
	// (log.retention.check.interval.ms). Default 5 min.
	RetentionCheckInterval time.Duration

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
	if c.FlushInterval == 0 {
		c.FlushInterval = time.Second
	}
	if c.RetentionCheckInterval == 0 {
		c.RetentionCheckInterval = 5 * time.Minute
	}
	if c.FS == nil {
		c.FS = vfs.OS{}
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
	if c.FlushInterval < 0 || c.RetentionCheckInterval < 0 {
		errs = append(errs, errors.New("intervals must not be negative"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("broker: invalid config: %w", errors.Join(errs...))
	}
	return nil
}
