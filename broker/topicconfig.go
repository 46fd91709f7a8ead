package broker

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/partition"
)

// ErrInvalidConfig is a topic config that does not parse or is out of range
// (INVALID_CONFIG).
var ErrInvalidConfig = errors.New("broker: invalid config")

// topicSettings is what a topic's configs mean to the broker.
type topicSettings struct {
	log           partition.Config
	logAppendTime bool
}

// topicConfigDef is one topic config the broker understands. The table
// below drives validation, the settings a topic's log gets, and
// DescribeConfigs.
type topicConfigDef struct {
	name string
	// configType is Kafka's DescribeConfigs type (1 boolean, 2 string,
	// 3 int, 4 short, 5 long, 6 double, 7 list, 8 class, 9 password).
	configType kmsg.ConfigType
	doc        string
	// def renders the broker's default.
	def func(c *Config) string
	// apply parses v into s.
	apply func(v string, s *topicSettings) error
}

var topicConfigDefs = []topicConfigDef{
	{
		name: "cleanup.policy", configType: 7,
		doc: "Only \"delete\" is supported: old segments are deleted by retention. Compaction is not implemented.",
		def: func(*Config) string { return "delete" },
		apply: func(v string, _ *topicSettings) error {
			if v != "delete" {
				return fmt.Errorf("%w: cleanup.policy %q: only \"delete\" is supported", ErrInvalidConfig, v)
			}
			return nil
		},
	},
	{
		name: "max.message.bytes", configType: 3,
		doc: "The largest record batch the topic accepts, in bytes.",
		def: func(c *Config) string { return strconv.Itoa(c.TopicDefaults.MaxBatchBytes) },
		apply: func(v string, s *topicSettings) error {
			n, err := parseInt(v, partition.BatchHeaderSize, 1<<30)
			s.log.MaxBatchBytes = int(n)
			return err
		},
	},
	{
		name: "message.timestamp.type", configType: 2,
		doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's time at append.",
		def: func(c *Config) string { return c.TimestampType },
		apply: func(v string, s *topicSettings) error {
			switch v {
			case "CreateTime":
				s.logAppendTime = false
			case "LogAppendTime":
				s.logAppendTime = true
			default:
				return fmt.Errorf("%w: message.timestamp.type %q", ErrInvalidConfig, v)
			}
			return nil
		},
	},
	{
		name: "retention.bytes", configType: 5,
		doc: "Delete old segments while the partition stays at or above this size; -1 for no limit.",
		def: func(c *Config) string { return strconv.FormatInt(c.TopicDefaults.RetentionBytes, 10) },
		apply: func(v string, s *topicSettings) error {
			n, err := parseInt(v, -1, math.MaxInt64)
			s.log.RetentionBytes = n
			return err
		},
	},
	{
		name: "retention.ms", configType: 5,
		doc: "Delete segments whose newest record is older than this; -1 for no limit.",
		def: func(c *Config) string { return msString(c.TopicDefaults.RetentionAge) },
		apply: func(v string, s *topicSettings) error {
			n, err := parseInt(v, -1, math.MaxInt64/int64(time.Millisecond))
			if n == -1 {
				s.log.RetentionAge = -1
			} else {
				s.log.RetentionAge = time.Duration(n) * time.Millisecond
			}
			return err
		},
	},
	{
		name: "segment.bytes", configType: 3,
		doc: "Roll to a new segment file at this size.",
		def: func(c *Config) string { return strconv.FormatInt(c.TopicDefaults.SegmentBytes, 10) },
		apply: func(v string, s *topicSettings) error {
			n, err := parseInt(v, 14, math.MaxInt32)
			s.log.SegmentBytes = n
			return err
		},
	},
	{
		name: "segment.ms", configType: 5,
		doc: "Roll to a new segment file after this long.",
		def: func(c *Config) string { return msString(c.TopicDefaults.SegmentAge) },
		apply: func(v string, s *topicSettings) error {
			n, err := parseInt(v, 1, math.MaxInt64/int64(time.Millisecond))
			s.log.SegmentAge = time.Duration(n) * time.Millisecond
			return err
		},
	},
}

func lookupTopicConfig(name string) (*topicConfigDef, bool) {
	for i := range topicConfigDefs {
		if topicConfigDefs[i].name == name {
			return &topicConfigDefs[i], true
		}
	}
	return nil, false
}

// resolveTopicSettings turns a topic's explicit configs into settings,
// starting from the broker defaults. Unknown keys and bad values are errors
// that name the key.
func resolveTopicSettings(c *Config, configs map[string]string) (topicSettings, error) {
	s := topicSettings{log: c.TopicDefaults, logAppendTime: c.TimestampType == "LogAppendTime"}
	for k, v := range configs {
		d, ok := lookupTopicConfig(k)
		if !ok {
			return s, fmt.Errorf("%w: %q", ErrInvalidConfig, k)
		}
		if err := d.apply(v, &s); err != nil {
			return s, err
		}
	}
	if err := s.log.Validate(); err != nil {
		return s, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return s, nil
}

func parseInt(v string, lo, hi int64) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%w: %q is not an integer in [%d, %d]", ErrInvalidConfig, v, lo, hi)
	}
	return n, nil
}

func msString(d time.Duration) string {
	if d < 0 {
		return "-1"
	}
	return strconv.FormatInt(d.Milliseconds(), 10)
}
