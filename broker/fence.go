package broker

import (
	"context"
	"slices"
	"time"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/replication"
)

// Fencing: the metadata leader watches when it last heard from each
// broker (its replication to the broker's metadata replica: every
// AppendEntries and heartbeat answered counts) and fences a broker it has
// not heard from for Config.BrokerSessionTimeout. While a broker is fenced,
// Metadata shows no leader for the partitions it was last published to
// lead. That matters when no other replica can take over (RF=1, or every
// other replica down too): without it every broker would keep naming the
// dead one, and clients would retry against it forever instead of seeing
// LEADER_NOT_AVAILABLE, as Kafka's controller reports for a broker whose
// session expired. A broker heard from again is unfenced on the next pass.

// unfenceWithin is how recent the last contact must be to unfence: the
// metadata group's heartbeats come every few hundred milliseconds.
const unfenceWithin = 2 * time.Second

// fenceState is the metadata leader's memory between passes.
type fenceState struct {
	// leading is since when this broker has been the metadata leader
	// (zero while it is not): contact before then was not recorded by
	// this leader, so silence is counted from here at the earliest.
	leading time.Time
}

// fenceBrokers is one pass, run by the metadata housekeeping.
func (b *Broker) fenceBrokers(fs *fenceState) {
	if !b.machine.IsLeader() {
		fs.leading = time.Time{}
		return
	}
	st := b.meta.State()
	if st.FeatureLevelOrBase() < metadata.CommandLevel(metadata.FenceBroker{}) {
		return
	}
	now := time.Now()
	if fs.leading.IsZero() {
		fs.leading = now
	}
	members, _, err := b.machine.Members()
	if err != nil {
		return
	}
	for _, id := range st.BrokerIDs() {
		fenced := st.Brokers[id].Fenced
		if id == b.cfg.NodeID {
			if fenced {
				b.setFenced(id, false, 0) // fenced by an earlier leader, alive and leading now
			}
			continue
		}
		if !slices.ContainsFunc(members, func(m replication.Member) bool { return m.ID == id }) {
			continue // not a metadata member (yet): nothing to judge it by
		}
		_, at, ok := b.metadataAcked(id)
		if !ok {
			continue
		}
		silent := now.Sub(at)
		if at.Before(fs.leading) {
			silent = now.Sub(fs.leading)
		}
		switch {
		case !fenced && silent > b.cfg.BrokerSessionTimeout:
			b.setFenced(id, true, silent)
		case fenced && !at.IsZero() && now.Sub(at) < unfenceWithin:
			b.setFenced(id, false, silent)
		}
	}
}

// metadataAcked is what broker id last acknowledged of the metadata group,
// and when. The transport records acknowledgements under the address it
// sent to, which Resolve may have moved from the one in raft's
// configuration (a broker restarted on new ports), so look it up there.
func (b *Broker) metadataAcked(id int32) (index uint64, at time.Time, ok bool) {
	addr, ok := b.raftAddr(id)
	if !ok {
		return 0, time.Time{}, false
	}
	index, at = b.machine.Acked(replication.Peer{ID: id, Addr: addr})
	return index, at, true
}

func (b *Broker) setFenced(id int32, fenced bool, silent time.Duration) {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	res, err := b.propose(ctx, metadata.FenceBroker{ID: id, Fenced: fenced})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		b.logger.Warn("fencing a broker failed", "broker", id, "fenced", fenced, "err", err)
		return
	}
	if fenced {
		b.logger.Warn("broker fenced: not heard from; partitions it led show no leader until another replica takes over", "broker", id, "silent", silent.Round(time.Millisecond))
	} else {
		b.logger.Info("broker unfenced: heard from again", "broker", id)
	}
}
