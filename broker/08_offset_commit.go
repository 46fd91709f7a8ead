package broker

// OffsetCommit (key 8), v2-9.
//
// Served by the group's coordinator: the member and generation are checked
// against the group (a generation of -1 with no member id is a simple
// commit, allowed for a group with no members); every partition of the
// request becomes one record of one batch, appended to the group's offsets
// partition as one Raft entry, and the answer comes once it is committed
// and applied (so a fetch from any later coordinator sees it). Unknown
// topics and partitions answer UNKNOWN_TOPIC_OR_PARTITION, metadata over
// 4 KiB OFFSET_METADATA_TOO_LARGE; the rest are committed.

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/coordinator"
	"github.com/varvelog/varve/protocol"
)

// maxCommitMetadata is Kafka's offset.metadata.max.bytes default.
const maxCommitMetadata = 4096

func handleOffsetCommit(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.OffsetCommitRequest)
	resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
	codes := make([][]int16, len(r.Topics))
	for i, rt := range r.Topics {
		codes[i] = make([]int16, len(rt.Partitions))
	}
	setAll := func(code int16) {
		for i := range codes {
			for j := range codes[i] {
				if codes[i][j] == 0 {
					codes[i][j] = code
				}
			}
		}
	}
	led, err := b.coordinatorFor(r.Group)
	if err == nil {
		err = led.groups.CheckCommit(r.Group, r.MemberID, r.InstanceID, r.Generation)
		if errors.Is(err, kerr.GroupIDNotFound) && r.Version < 9 {
			// Before v9 a commit with a generation to an unknown group
			// answered ILLEGAL_GENERATION; clients of those versions
			// handle only that (KIP-848 changed it with v9).
			err = kerr.IllegalGeneration
		}
	}
	if err != nil {
		setAll(errorCode(err))
	} else {
		st := b.meta.State()
		now := b.cfg.Now().UnixMilli()
		var evs []coordinator.OffsetEvent
		for i, rt := range r.Topics {
			mt := st.Topics[rt.Topic]
			for j, rp := range rt.Partitions {
				switch {
				case mt == nil || rp.Partition < 0 || int(rp.Partition) >= len(mt.Partitions):
					codes[i][j] = kerr.UnknownTopicOrPartition.Code
					continue
				case rp.Metadata != nil && len(*rp.Metadata) > maxCommitMetadata:
					codes[i][j] = kerr.OffsetMetadataTooLarge.Code
					continue
				}
				v := coordinator.OffsetValue{Offset: rp.Offset, LeaderEpoch: -1, CommitMs: now}
				if r.Version >= 6 {
					v.LeaderEpoch = rp.LeaderEpoch
				}
				if rp.Metadata != nil {
					v.Metadata = *rp.Metadata
				}
				evs = append(evs, coordinator.OffsetEvent{Kind: coordinator.OffsetEventCommit,
					Commit: coordinator.CommitKey{Group: r.Group, Topic: rt.Topic, Partition: rp.Partition}, Offset: v})
			}
		}
		if len(evs) > 0 {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := b.writeOffsetEvents(wctx, led, evs...)
			cancel()
			if err != nil {
				b.logger.Debug("offset commit failed", "group", r.Group, "err", err)
				setAll(commitErrorCode(err))
			}
		}
	}
	for i, rt := range r.Topics {
		t := kmsg.NewOffsetCommitResponseTopic()
		t.Topic = rt.Topic
		for j, rp := range rt.Partitions {
			p := kmsg.NewOffsetCommitResponseTopicPartition()
			p.Partition, p.ErrorCode = rp.Partition, codes[i][j]
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp, nil
}

// commitErrorCode is the code of a failed commit write: a coordinator that
// lost its leadership says NOT_COORDINATOR (the client finds the new one);
// an unknown outcome REQUEST_TIMED_OUT (retriable: the commit is
// idempotent).
func commitErrorCode(err error) int16 {
	code := errorCode(err)
	if code == kerr.NotLeaderForPartition.Code {
		return kerr.NotCoordinator.Code
	}
	if code == kerr.UnknownServerError.Code {
		return kerr.RequestTimedOut.Code
	}
	return code
}
