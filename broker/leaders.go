package broker

import (
	"context"
	"sync"
	"time"

	"github.com/varvelog/varve/broker/metadata"
)

// Publishing leaders in batches. After a broker dies, each survivor wins
// hundreds of elections within a second or two; one SetLeader entry per
// partition queued that many metadata proposals (and, at the metadata
// leader, refused Calls beyond the transport's limit). At feature level 2
// the leaderships won while the previous batch was in flight go out as one
// SetLeaders entry.

// leaderBatchWindow is how long the first pending leadership waits for
// others before a batch is proposed.
const leaderBatchWindow = 5 * time.Millisecond

// leaderPublisher collects leaderships to publish; one goroutine proposes.
type leaderPublisher struct {
	mu      sync.Mutex
	pending map[leaderKey]metadata.SetLeader
	running bool
}

type leaderKey struct {
	topic     metadata.TopicID
	partition int32
}

// queueLeader queues a leadership to publish (a newer epoch replaces an
// older one) and starts the proposer if it is not running.
func (b *Broker) queueLeader(l metadata.SetLeader) {
	p := &b.leaders
	p.mu.Lock()
	if p.pending == nil {
		p.pending = map[leaderKey]metadata.SetLeader{}
	}
	k := leaderKey{l.Topic, l.Partition}
	if old, ok := p.pending[k]; !ok || old.Epoch < l.Epoch {
		p.pending[k] = l
	}
	start := !p.running
	p.running = true
	p.mu.Unlock()
	if start {
		b.goTracked(b.runLeaderPublisher)
	}
}

// runLeaderPublisher proposes batches until nothing is pending.
func (b *Broker) runLeaderPublisher() {
	p := &b.leaders
	backoff := 20 * time.Millisecond
	for b.ctx.Err() == nil {
		time.Sleep(leaderBatchWindow)
		p.mu.Lock()
		var batch []metadata.SetLeader
		for k, l := range p.pending {
			if b.stillLeads(l.Topic, l.Partition, l.Epoch) {
				batch = append(batch, l)
			}
			delete(p.pending, k)
			if len(batch) == metadata.MaxSetLeaders {
				break
			}
		}
		if len(batch) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		res, err := b.propose(ctx, metadata.SetLeaders{Leaders: batch})
		cancel()
		if err == nil {
			err = res.Err
		}
		if err == nil {
			backoff = 20 * time.Millisecond
			continue
		}
		b.logger.Debug("publishing leaders failed; retrying", "leaders", len(batch), "err", err)
		p.mu.Lock()
		for _, l := range batch {
			k := leaderKey{l.Topic, l.Partition}
			if old, ok := p.pending[k]; !ok || old.Epoch < l.Epoch {
				p.pending[k] = l
			}
		}
		p.mu.Unlock()
		select {
		case <-b.ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	p.mu.Lock()
	p.running = false
	p.mu.Unlock()
}
