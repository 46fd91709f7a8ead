package checker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Consumer is a kgo consumer whose polls, commits and rebalances are
// logged in a history: a member of a consumer group, or a direct consumer
// (kgo.ConsumeTopics or kgo.ConsumePartitions without a group).
type Consumer struct {
	h     *History
	name  string
	group string
	cl    *kgo.Client

	mu         sync.Mutex
	fetchErrs  map[string]int // fetch errors by text, for the report
	lastCommit time.Time
}

// NewConsumer builds a kgo client from opts (seeds, topics, timeouts; the
// caller's hooks for rebalances are replaced) and logs what it does as
// consumer name. With a group it joins it with autocommit off, commits
// itself (Commit, in Run, and in its revoke callback, before it gives
// partitions up) and blocks rebalances while a poll is processed
// (kgo.BlockRebalanceOnPoll), so a commit never covers partitions it no
// longer owns. Every consumer starts from the log start when nothing is
// committed (checks (e) and (g) rely on it).
func (h *History) NewConsumer(name, group string, opts ...kgo.Opt) (*Consumer, error) {
	c := &Consumer{h: h, name: name, group: group, fetchErrs: map[string]int{}}
	all := append(slices.Clone(opts), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if group != "" {
		all = append(all,
			kgo.ConsumerGroup(group),
			kgo.DisableAutoCommit(),
			kgo.BlockRebalanceOnPoll(),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				c.rebalance(Assigned, m)
			}),
			kgo.OnPartitionsRevoked(func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
				// Commit what was polled while the partitions are still
				// ours, then give them up.
				_ = c.Commit(ctx)
				c.rebalance(Revoked, m)
			}),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				c.rebalance(Lost, m)
			}),
		)
	}
	h.AddConsumer(name, group)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		return nil, err
	}
	c.cl = cl
	return c, nil
}

// Name is the consumer's name in reports.
func (c *Consumer) Name() string { return c.name }

// Client is the underlying client.
func (c *Consumer) Client() *kgo.Client { return c.cl }

func (c *Consumer) rebalance(kind RebalanceKind, m map[string][]int32) {
	topics := make([]string, 0, len(m))
	for t := range m {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		ps := append([]int32(nil), m[t]...)
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		c.h.AddRebalance(Rebalance{Consumer: c.name, Group: c.group, Kind: kind, Topic: t, Partitions: ps})
	}
}

// Poll polls once, logs every record received, commits every record
// polled so far when commit is set (group members only), and lets a
// pending rebalance proceed. It returns the number of records and whether
// the client is closed. Like kgo's PollFetches it blocks until records
// arrive or ctx ends.
func (c *Consumer) Poll(ctx context.Context, commit bool) (int, bool) {
	return c.poll(ctx, ctx, commit)
}

// poll is Poll with the poll's context apart from the commit's, so a poll
// can time out without canceling the commit after it.
func (c *Consumer) poll(pollCtx, commitCtx context.Context, commit bool) (int, bool) {
	fs := c.cl.PollFetches(pollCtx)
	if fs.IsClientClosed() {
		return 0, true
	}
	var ps []Poll
	fs.EachRecord(func(r *kgo.Record) {
		ps = append(ps, Poll{Consumer: c.name, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
			LeaderEpoch: r.LeaderEpoch, Key: string(r.Key), Value: string(r.Value)})
	})
	fs.EachError(func(t string, p int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		c.mu.Lock()
		c.fetchErrs[fmt.Sprintf("%s-%d: %v", t, p, err)]++
		c.mu.Unlock()
	})
	c.h.AddPoll(ps...)
	if c.group != "" {
		if commit && commitCtx.Err() == nil {
			_ = c.Commit(commitCtx) // a no-op when nothing polled is uncommitted
		}
		c.cl.AllowRebalance()
	}
	return len(ps), false
}

// Commit commits the offsets after every record polled so far (a group
// member's uncommitted offsets) and logs each partition's commit. Every
// failure is logged as indeterminate (kgo retries a commit, and an earlier
// attempt may have landed).
func (c *Consumer) Commit(ctx context.Context) error {
	if c.group == "" {
		return nil
	}
	offs := c.cl.UncommittedOffsets()
	if len(offs) == 0 {
		return nil
	}
	ids := map[string]map[int32]int{}
	for t, ps := range offs {
		ids[t] = map[int32]int{}
		for p, eo := range ps {
			ids[t][p] = c.h.InvokeCommit(Commit{Consumer: c.name, Group: c.group, Topic: t, Partition: p, Offset: eo.Offset})
		}
	}
	var first error
	c.cl.CommitOffsetsSync(ctx, offs, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		codes := map[string]map[int32]int16{}
		if err == nil && resp != nil {
			for _, rt := range resp.Topics {
				codes[rt.Topic] = map[int32]int16{}
				for _, rp := range rt.Partitions {
					codes[rt.Topic][rp.Partition] = rp.ErrorCode
				}
			}
		}
		for t, ps := range ids {
			for p, id := range ps {
				code, answered := codes[t][p]
				switch {
				case err != nil:
					c.h.CompleteCommit(id, Indeterminate, err)
				case !answered:
					c.h.CompleteCommit(id, Indeterminate, errors.New("checker: partition missing from the commit response"))
				case code != 0:
					c.h.CompleteCommit(id, Indeterminate, kerr.ErrorForCode(code))
				default:
					c.h.CompleteCommit(id, OK, nil)
					continue
				}
				if first == nil {
					first = c.h.commitErr(id)
				}
			}
		}
	})
	c.mu.Lock()
	c.lastCommit = time.Now()
	c.mu.Unlock()
	return first
}

// commitErr is commit id's error as an error.
func (h *History) commitErr(id int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return errors.New(h.commits[id].Err)
}

// Run polls until ctx ends, committing what was polled when commitEvery
// has passed since the last commit (0: after every poll). A poll waits at
// most commitEvery (at least 50 ms) for records, so what was polled last
// is committed even when no more records come.
func (c *Consumer) Run(ctx context.Context, commitEvery time.Duration) {
	wait := max(commitEvery, 50*time.Millisecond)
	for ctx.Err() == nil {
		c.mu.Lock()
		due := time.Since(c.lastCommit) >= commitEvery
		c.mu.Unlock()
		pctx, cancel := context.WithTimeout(ctx, wait)
		_, closed := c.poll(pctx, ctx, due)
		cancel()
		if closed {
			return
		}
	}
}

// Close commits what was polled (a group member), leaves the group and
// closes the client. The client's revoke callback commits too.
func (c *Consumer) Close(ctx context.Context) {
	_ = c.Commit(ctx)
	c.cl.Close()
}

// FetchErrors are the fetch errors the consumer saw, by text and count.
func (c *Consumer) FetchErrors() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.fetchErrs))
	for k, v := range c.fetchErrs {
		out[k] = v
	}
	return out
}
