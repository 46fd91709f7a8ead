package client

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// OffsetKind says what an OffsetSpec names.
type OffsetKind int

const (
	OffsetBeginning OffsetKind = iota // the log start offset
	OffsetEnd                         // the high watermark: only new records
	OffsetExact                       // an offset, clamped to [start, end]
	OffsetFromEnd                     // N records before the end, floored at the start
	OffsetTime                        // the first record at or after a timestamp
)

// OffsetSpec is where to start reading (or where to reset a group to),
// before it is resolved against a partition's start and end offsets.
type OffsetSpec struct {
	Kind OffsetKind
	N    int64 // OffsetExact: the offset; OffsetFromEnd: how many back; OffsetTime: Unix ms
}

// ParseOffsetSpec reads a start position as the consume command takes it:
//
//	beginning (or earliest, oldest)   the log start offset
//	end (or latest, newest)           the end: only records produced from now
//	1234                              offset 1234
//	-10                               10 records before the end (kcat's -o -10)
//	@1700000000000                    the first record at or after this Unix ms timestamp
//	@2026-11-28T09:00:00Z             the same with an RFC 3339 time
//	-1h, -30m, -90s                   the first record at or after now minus this duration
func ParseOffsetSpec(s string, now time.Time) (OffsetSpec, error) {
	switch strings.ToLower(s) {
	case "beginning", "earliest", "oldest", "start":
		return OffsetSpec{Kind: OffsetBeginning}, nil
	case "end", "latest", "newest":
		return OffsetSpec{Kind: OffsetEnd}, nil
	}
	if at, ok := strings.CutPrefix(s, "@"); ok {
		ms, err := parseAbsoluteTime(at)
		if err != nil {
			return OffsetSpec{}, fmt.Errorf("offset %q: want @ and a Unix timestamp in milliseconds or an RFC 3339 time", s)
		}
		return OffsetSpec{Kind: OffsetTime, N: ms}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return OffsetSpec{Kind: OffsetFromEnd, N: -n}, nil
		}
		return OffsetSpec{Kind: OffsetExact, N: n}, nil
	}
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		if d, err := time.ParseDuration(rest); err == nil && d > 0 {
			return OffsetSpec{Kind: OffsetTime, N: now.Add(-d).UnixMilli()}, nil
		}
	}
	return OffsetSpec{}, fmt.Errorf("offset %q: want beginning, end, an offset, -N (from the end), @UNIX_MS or -DURATION (like -1h)", s)
}

// ParseTime reads a point in time as Unix milliseconds: a Unix timestamp
// in milliseconds (1700000000000), an RFC 3339 time
// (2026-11-28T09:00:00Z, 2026-11-28T10:00:00+01:00), or a duration before
// now (-1h, -30m, -1h30m). It is what group reset-offsets --to-time takes.
func ParseTime(s string, now time.Time) (int64, error) {
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		if d, err := time.ParseDuration(rest); err == nil && d > 0 {
			return now.Add(-d).UnixMilli(), nil
		}
	} else if ms, err := parseAbsoluteTime(s); err == nil {
		return ms, nil
	}
	return 0, fmt.Errorf("time %q: want Unix milliseconds, an RFC 3339 time (2006-01-02T15:04:05Z) or -DURATION (like -1h)", s)
}

// parseAbsoluteTime reads Unix milliseconds (>= 0) or an RFC 3339 time.
func parseAbsoluteTime(s string) (int64, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("negative timestamp %d", n)
		}
		return n, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, err
	}
	if ms := t.UnixMilli(); ms >= 0 {
		return ms, nil
	}
	return 0, fmt.Errorf("time %s is before 1970", s)
}

// String is the spec as ParseOffsetSpec reads it back (times absolute).
func (o OffsetSpec) String() string {
	switch o.Kind {
	case OffsetBeginning:
		return "beginning"
	case OffsetEnd:
		return "end"
	case OffsetExact:
		return strconv.FormatInt(o.N, 10)
	case OffsetFromEnd:
		return "-" + strconv.FormatInt(o.N, 10)
	default:
		return "@" + strconv.FormatInt(o.N, 10)
	}
}

// Kgo is the spec as a kgo reset offset, for partitions a group has no
// commit for.
func (o OffsetSpec) Kgo() kgo.Offset {
	switch o.Kind {
	case OffsetBeginning:
		return kgo.NewOffset().AtStart()
	case OffsetEnd:
		return kgo.NewOffset().AtEnd()
	case OffsetExact:
		return kgo.NewOffset().At(o.N)
	case OffsetFromEnd:
		return kgo.NewOffset().AtEnd().Relative(-o.N)
	default:
		return kgo.NewOffset().AfterMilli(o.N)
	}
}

// PartitionOffsets are one partition's bounds and the offset a spec
// resolved to within them.
type PartitionOffsets struct {
	Start int64 // log start offset
	End   int64 // high watermark
	At    int64 // the resolved offset, Start <= At <= End
}

// Resolve lists the start and end offsets of the given partitions of
// topic (every partition when none are given) and resolves the spec in
// each. A timestamp after the last record resolves to the end.
func (o OffsetSpec) Resolve(ctx context.Context, adm *kadm.Client, topic string, partitions ...int32) (map[int32]PartitionOffsets, error) {
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list start offsets of %q: %w", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %q: %w", topic, err)
	}
	var times kadm.ListedOffsets
	if o.Kind == OffsetTime {
		times, err = adm.ListOffsetsAfterMilli(ctx, o.N, topic)
		if err == nil {
			err = times.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("list offsets of %q after %d: %w", topic, o.N, err)
		}
	}
	want := map[int32]bool{}
	for _, p := range partitions {
		want[p] = true
	}
	out := map[int32]PartitionOffsets{}
	for p, e := range ends[topic] {
		if len(want) > 0 && !want[p] {
			continue
		}
		s, ok := starts.Lookup(topic, p)
		if !ok {
			return nil, fmt.Errorf("no start offset listed for %s/%d", topic, p)
		}
		po := PartitionOffsets{Start: s.Offset, End: e.Offset}
		switch o.Kind {
		case OffsetBeginning:
			po.At = po.Start
		case OffsetEnd:
			po.At = po.End
		case OffsetExact:
			po.At = o.N
		case OffsetFromEnd:
			po.At = po.End - o.N
		case OffsetTime:
			po.At = po.End
			if t, ok := times.Lookup(topic, p); ok && t.Offset >= 0 {
				po.At = t.Offset
			}
		}
		po.At = max(po.Start, min(po.At, po.End))
		out[p] = po
	}
	for p := range want {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("topic %q has no partition %d", topic, p)
		}
	}
	return out, nil
}
