package protocol

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Defaults applied by NewServer to zero Config fields.
const (
	// DefaultMaxRequestBytes is Kafka's socket.request.max.bytes.
	DefaultMaxRequestBytes = 100 << 20
	// DefaultMaxInFlight is the number of responses queued per connection
	// before the server stops reading that connection.
	DefaultMaxInFlight = 32
	// DefaultIdleTimeout is Kafka's connections.max.idle.ms.
	DefaultIdleTimeout = 10 * time.Minute
	// DefaultFrameTimeout bounds how long a started frame may take to arrive.
	DefaultFrameTimeout = 30 * time.Second
	// DefaultMaxPartitionsPerRequest bounds the partitions one request
	// names. Kafka has no such limit (only the request size); this one is
	// far above what a client sends (a broker holds at most 10,000
	// partitions by default) and far below what fits in a 100 MiB frame
	// (over 10 million), so the per-partition work and the response of a
	// request stay bounded.
	DefaultMaxPartitionsPerRequest = 100_000
	// DefaultQueuedMaxRequestBytes bounds the request frames held at once
	// (RequestBudget). Kafka's queued.max.request.bytes is unbounded by
	// default; five maximum-size requests is room for any real workload
	// while a flood of large frames waits instead of exhausting memory.
	DefaultQueuedMaxRequestBytes = 5 * DefaultMaxRequestBytes
)

// minFrameSize is the smallest frame that can hold a request header's fixed
// part: api key (2), api version (2) and correlation id (4).
const minFrameSize = 8

// VersionRange is an inclusive range of API versions.
type VersionRange struct{ Min, Max int16 }

// Config configures a Server. It is a plain struct: NewServer fills zero
// fields with the defaults above, and Validate reports what is still wrong.
type Config struct {
	// Listener is the listener name reported in ConnInfo, so the broker can
	// answer Metadata and FindCoordinator with the listener a request
	// arrived on.
	Listener string

	// Versions is the broker's version table: the range it serves for key,
	// or false when the key is not supported. It is the same table the
	// broker's ApiVersions handler advertises, so that what is advertised
	// is exactly what is accepted. It is called from connection goroutines
	// concurrently and must be safe for that. Required.
	Versions func(key int16) (VersionRange, bool)

	// MaxRequestBytes is the largest frame accepted (not counting the 4-byte
	// size). Larger frames close the connection before allocation. Default
	// DefaultMaxRequestBytes; at least 8.
	MaxRequestBytes int32

	// MaxInFlight is the number of responses queued per connection before
	// reading pauses. Default DefaultMaxInFlight.
	MaxInFlight int

	// IdleTimeout closes a connection that sends no new frame for this long
	// while no request is in progress, and bounds each response write.
	// Default DefaultIdleTimeout.
	IdleTimeout time.Duration

	// FrameTimeout is the maximum time to receive the rest of a frame once
	// its first byte arrived. Default DefaultFrameTimeout.
	FrameTimeout time.Duration

	// MaxConnections caps the open connections of the Server (all listeners
	// together); 0 means unlimited. Connections accepted beyond it are
	// closed immediately and logged. Ignored (must be 0) when Conns is set.
	MaxConnections int

	// MaxConnectionsPerIP caps the open connections from one client IP
	// address (Kafka's max.connections.per.ip), so that one host leaking
	// connections cannot take every slot of MaxConnections; 0 means
	// unlimited. Refused like MaxConnections. Must be 0 when Conns is set.
	MaxConnectionsPerIP int

	// Conns, when set, enforces the connection caps instead of
	// MaxConnections and MaxConnectionsPerIP, shared with every other
	// Server given the same ConnLimits (one budget for all of a broker's
	// listeners). Nil: the Server makes its own from those two fields.
	Conns *ConnLimits

	// MaxPartitionsPerRequest caps the partitions one request names
	// (counted as partitionPaths describes: every entry of every partition
	// list, or a topic where a request lists topics only). A request over
	// it closes the connection, logged, before the Handler sees it: the
	// protocol layer has no error code to answer with, and answering every
	// partition would cost what the limit exists to avoid. Default
	// DefaultMaxPartitionsPerRequest.
	MaxPartitionsPerRequest int

	// QueuedMaxRequestBytes bounds the bytes of request frames held at once
	// by the Server's connections (see RequestBudget); a connection whose
	// next frame does not fit stops reading until it does. Ignored (must be
	// 0) when Requests is set. Default DefaultQueuedMaxRequestBytes.
	QueuedMaxRequestBytes int64

	// Requests, when set, is the request budget instead of one made from
	// QueuedMaxRequestBytes, shared with every other Server given it (one
	// budget for all of a broker's listeners).
	Requests *RequestBudget

	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// maxReportedKeyProblems keeps Validate's report readable when a table claims
// thousands of keys (for example one that returns true for every key).
const maxReportedKeyProblems = 10

// Validate reports every problem with c, joined into one error, or nil. It
// fills nothing: call it on a Config that already has its defaults (NewServer
// does both).
func (c *Config) Validate() error {
	var errs []error
	if c.Versions == nil {
		errs = append(errs, errors.New("protocol: Versions is required"))
	} else {
		errs = append(errs, validateVersions(c.Versions)...)
	}
	if c.MaxRequestBytes < minFrameSize {
		errs = append(errs, fmt.Errorf("protocol: MaxRequestBytes %d is below the request header size %d", c.MaxRequestBytes, minFrameSize))
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, fmt.Errorf("protocol: MaxInFlight %d must be at least 1", c.MaxInFlight))
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("protocol: IdleTimeout %v must be positive", c.IdleTimeout))
	}
	if c.FrameTimeout <= 0 {
		errs = append(errs, fmt.Errorf("protocol: FrameTimeout %v must be positive", c.FrameTimeout))
	}
	if c.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("protocol: MaxConnections %d must not be negative", c.MaxConnections))
	}
	if c.MaxConnectionsPerIP < 0 {
		errs = append(errs, fmt.Errorf("protocol: MaxConnectionsPerIP %d must not be negative", c.MaxConnectionsPerIP))
	}
	if c.Conns != nil && (c.MaxConnections != 0 || c.MaxConnectionsPerIP != 0) {
		errs = append(errs, errors.New("protocol: set either Conns or MaxConnections and MaxConnectionsPerIP, not both"))
	}
	if c.Requests != nil && c.QueuedMaxRequestBytes != 0 {
		errs = append(errs, errors.New("protocol: QueuedMaxRequestBytes must be 0 when Requests is set"))
	}
	if c.Requests == nil && c.QueuedMaxRequestBytes < 1 {
		errs = append(errs, fmt.Errorf("protocol: QueuedMaxRequestBytes %d must be at least 1", c.QueuedMaxRequestBytes))
	}
	if c.MaxPartitionsPerRequest < 1 {
		errs = append(errs, fmt.Errorf("protocol: MaxPartitionsPerRequest %d must be at least 1", c.MaxPartitionsPerRequest))
	}
	return errors.Join(errs...)
}

// validateVersions checks every key the table claims (the whole int16 range:
// 65,536 calls, once at start-up) against what kmsg can decode, because a
// version advertised but not decodable would be accepted in ApiVersions and
// then close every connection that uses it.
func validateVersions(versions func(int16) (VersionRange, bool)) []error {
	var errs []error
	extra := 0
	report := func(err error) {
		if len(errs) < maxReportedKeyProblems {
			errs = append(errs, err)
		} else {
			extra++
		}
	}
	for k := math.MinInt16; k <= math.MaxInt16; k++ {
		key := int16(k)
		vr, ok := versions(key)
		if !ok {
			continue
		}
		req := kmsg.RequestForKey(key)
		switch {
		case req == nil:
			report(fmt.Errorf("protocol: Versions supports key %d, which kmsg does not know", key))
		case vr.Min < 0 || vr.Min > vr.Max:
			report(fmt.Errorf("protocol: Versions range %d-%d for key %d (%s) is invalid", vr.Min, vr.Max, key, kmsg.NameForKey(key)))
		case vr.Max > req.MaxVersion():
			report(fmt.Errorf("protocol: Versions max %d for key %d (%s) is above kmsg's max %d", vr.Max, key, kmsg.NameForKey(key), req.MaxVersion()))
		}
	}
	if extra > 0 {
		errs = append(errs, fmt.Errorf("protocol: and %d more Versions problems", extra))
	}
	return errs
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.FrameTimeout == 0 {
		c.FrameTimeout = DefaultFrameTimeout
	}
	if c.MaxPartitionsPerRequest == 0 {
		c.MaxPartitionsPerRequest = DefaultMaxPartitionsPerRequest
	}
	if c.QueuedMaxRequestBytes == 0 && c.Requests == nil {
		c.QueuedMaxRequestBytes = DefaultQueuedMaxRequestBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
