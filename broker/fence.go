package broker

import (
	"context"
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
		var peer *replication.Member
		for i := range members {
			if members[i].ID == id {
				peer = &members[i]
			}
		}
		if peer == nil {
			continue // not a metadata member (yet): nothing to judge it by
		}
		_, at := b.machine.Acked(replication.Peer{ID: peer.ID, Addr: peer.Addr})
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
