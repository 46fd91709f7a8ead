package checker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Drain reads every partition of each topic from its log start to the high
// watermark at the time of the read, through a client seeded only with
// seed (extra opts, e.g. a dialer, are added), keeping control records so
// gaps in the offsets can be told from control batches. It records one
// Drain per topic, and a Liveness entry (check (h)): every partition must
// be readable to its end within bound. Producers should be stopped first:
// records past the end are ignored. It returns an error only when the
// client cannot be built; read failures are recorded for the report.
func (h *History) Drain(ctx context.Context, seed string, topics []string, bound time.Duration, opts ...kgo.Opt) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	adm, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seed)}, opts...)...)
	if err != nil {
		return err
	}
	defer adm.Close()
	var failed []string
	for _, topic := range topics {
		d := h.drainTopic(ctx, kadm.NewClient(adm), seed, topic, opts)
		d.Took = time.Since(start)
		h.AddDrain(d)
		if d.Err != "" {
			failed = append(failed, fmt.Sprintf("%s: %s", topic, d.Err))
		}
		for _, p := range sortedPartitions(d.Partitions) {
			if dp := d.Partitions[p]; dp.Err != "" {
				failed = append(failed, fmt.Sprintf("%s-%d: %s", topic, p, dp.Err))
			}
		}
	}
	h.AddLiveness(Liveness{What: fmt.Sprintf("drain of %s via %s", strings.Join(topics, ","), seed),
		Bound: bound, Took: time.Since(start), OK: len(failed) == 0, Detail: strings.Join(failed, "; ")})
	return nil
}

func sortedPartitions[V any](m map[int32]V) []int32 {
	ps := make([]int32, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// listOffsets asks for the start or end offsets until every partition
// answers without an error (leadership may still be settling after a heal).
func listOffsets(ctx context.Context, adm *kadm.Client, topic string, end bool) (map[int32]int64, error) {
	var last error
	for {
		// One attempt may not take the whole bound: a request stuck on a
		// broker that is going away must not hide the next leader.
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var lo kadm.ListedOffsets
		var err error
		if end {
			lo, err = adm.ListEndOffsets(actx, topic)
		} else {
			lo, err = adm.ListStartOffsets(actx, topic)
		}
		cancel()
		if err == nil {
			var bad []string
			lo.Each(func(o kadm.ListedOffset) {
				if o.Err != nil {
					bad = append(bad, fmt.Sprintf("%s-%d: %v", o.Topic, o.Partition, o.Err))
				}
			})
			if len(bad) > 0 {
				sort.Strings(bad)
				err = errors.New(strings.Join(bad, "; "))
			}
		}
		if err == nil {
			out := map[int32]int64{}
			lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
			if len(out) > 0 {
				return out, nil
			}
			err = errors.New("no partitions listed")
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list offsets of %s: %w (last error: %v)", topic, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (h *History) drainTopic(ctx context.Context, adm *kadm.Client, seed, topic string, opts []kgo.Opt) *Drain {
	d := &Drain{Source: "drain via " + seed, Topic: topic, Partitions: map[int32]*DrainedPartition{}}
	starts, err := listOffsets(ctx, adm, topic, false)
	if err != nil {
		d.Err = err.Error()
		return d
	}
	ends, err := listOffsets(ctx, adm, topic, true)
	if err != nil {
		d.Err = err.Error()
		return d
	}
	from := map[int32]kgo.Offset{}
	for p, s := range starts {
		d.Partitions[p] = &DrainedPartition{Start: s, End: ends[p]}
		if ends[p] > s {
			from[p] = kgo.NewOffset().At(s)
		}
	}
	if len(from) == 0 {
		return d
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seed), kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200 * time.Millisecond), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})}, opts...)...)
	if err != nil {
		d.Err = err.Error()
		return d
	}
	defer cl.Close()
	next := map[int32]int64{}
	for p := range from {
		next[p] = starts[p]
	}
	lastErr := map[int32]string{}
	for len(from) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachError(func(_ string, p int32, err error) { lastErr[p] = err.Error() })
		fs.EachRecord(func(r *kgo.Record) {
			dp := d.Partitions[r.Partition]
			if dp == nil || r.Offset >= dp.End {
				return
			}
			dp.Records = append(dp.Records, Record{Offset: r.Offset, Key: string(r.Key), Value: string(r.Value),
				Control: r.Attrs.IsControl()})
			next[r.Partition] = max(next[r.Partition], r.Offset+1)
		})
		for p := range from {
			if next[p] >= d.Partitions[p].End {
				delete(from, p)
			}
		}
	}
	for p := range from {
		dp := d.Partitions[p]
		dp.Err = fmt.Sprintf("read %d of [%d, %d) before the bound: %v", next[p]-dp.Start, dp.Start, dp.End, ctx.Err())
		if e := lastErr[p]; e != "" {
			dp.Err += "; last fetch error: " + e
		}
	}
	return d
}

// WaitLag waits until group's committed offsets reach the end of every
// partition of topics (lag 0; a partition without a commit counts from its
// log start), polling every 100 ms, and records the wait as a Liveness
// entry (check (h)). The group's members must still be consuming and
// committing. It returns whether lag 0 was reached within bound.
func (h *History) WaitLag(ctx context.Context, adm *kadm.Client, group string, topics []string, bound time.Duration) bool {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	var detail string
	for {
		lag, err := groupLag(ctx, adm, group, topics)
		if err == nil && lag == "" {
			h.AddLiveness(Liveness{What: fmt.Sprintf("group %s lag 0 on %s", group, strings.Join(topics, ",")),
				Bound: bound, Took: time.Since(start), OK: true})
			return true
		}
		if err != nil {
			detail = err.Error()
		} else {
			detail = "lag " + lag
		}
		select {
		case <-ctx.Done():
			h.AddLiveness(Liveness{What: fmt.Sprintf("group %s lag 0 on %s", group, strings.Join(topics, ",")),
				Bound: bound, Took: time.Since(start), Detail: detail})
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// groupLag describes the partitions of topics where group's committed
// offset is behind the end ("" when none is).
func groupLag(ctx context.Context, adm *kadm.Client, group string, topics []string) (string, error) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	committed, err := adm.FetchOffsets(actx, group)
	cancel()
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return "", err
	}
	var behind []string
	for _, topic := range topics {
		starts, err := listOffsets(ctx, adm, topic, false)
		if err != nil {
			return "", err
		}
		ends, err := listOffsets(ctx, adm, topic, true)
		if err != nil {
			return "", err
		}
		for _, p := range sortedPartitions(ends) {
			at := starts[p]
			if o, ok := committed.Lookup(topic, p); ok && o.Err == nil && o.At >= 0 {
				at = o.At
			}
			if at < ends[p] {
				behind = append(behind, fmt.Sprintf("%s-%d committed %d end %d", topic, p, at, ends[p]))
			}
		}
	}
	sort.Strings(behind)
	return strings.Join(behind, ", "), nil
}
