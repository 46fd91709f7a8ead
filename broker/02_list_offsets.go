package broker

// ListOffsets (key 2), v1-8.
//
// Timestamp -2 is the log start (earliest), -1 the high watermark (latest;
// also the last stable offset, as there are no transactions), -3 the record
// with the largest timestamp (v7, KIP-734), -4 the earliest local offset
// (v8, KIP-405; without tiered storage the log start). Any other timestamp
// finds the first offset whose record timestamp is at or after it, through
// the time index and a look inside the batch; none gives offset -1. The
// answer's leader epoch (v4+) is the epoch that wrote the offset.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleListOffsets(b *Broker, _ context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.ListOffsetsRequest)
	resp := r.ResponseKind().(*kmsg.ListOffsetsResponse)
	for _, rt := range r.Topics {
		st := kmsg.NewListOffsetsResponseTopic()
		st.Topic = rt.Topic
		t := b.lookupTopic(rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewListOffsetsResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.Timestamp, sp.Offset, sp.LeaderEpoch = -1, -1, -1
			p := t.partition(rp.Partition)
			if p == nil {
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			} else {
				b.listOffset(p, &rp, &sp)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}

func (b *Broker) listOffset(p replica, rp *kmsg.ListOffsetsRequestTopicPartition, sp *kmsg.ListOffsetsResponseTopicPartition) {
	epoch, err := p.Ready()
	if err != nil {
		sp.ErrorCode = errorCode(err)
		return
	}
	switch {
	case rp.CurrentLeaderEpoch >= 0 && rp.CurrentLeaderEpoch < epoch:
		sp.ErrorCode = kerr.FencedLeaderEpoch.Code
		return
	case rp.CurrentLeaderEpoch > epoch:
		sp.ErrorCode = kerr.UnknownLeaderEpoch.Code
		return
	}
	switch rp.Timestamp {
	case -2, -4:
		sp.Offset = p.LogStartOffset()
	case -1:
		sp.Offset = p.HighWatermark()
	case -3:
		to, found, err := p.MaxTimestamp()
		if err != nil {
			sp.ErrorCode = errorCode(err)
			return
		}
		if found {
			sp.Offset, sp.Timestamp = to.Offset, to.Timestamp
		}
	default:
		if rp.Timestamp < 0 {
			sp.ErrorCode = kerr.InvalidRequest.Code
			return
		}
		to, found, err := p.OffsetForTimestamp(rp.Timestamp)
		if err != nil {
			sp.ErrorCode = errorCode(err)
			return
		}
		if found {
			sp.Offset, sp.Timestamp = to.Offset, to.Timestamp
		}
	}
	if sp.Offset >= 0 {
		sp.LeaderEpoch = p.EpochForOffset(sp.Offset)
	}
}
