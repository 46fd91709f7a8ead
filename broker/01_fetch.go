package broker

// Fetch (key 1), v4-16.
//
// Sessionless: every response carries session id 0, which tells clients
// that fetch sessions are not in use (legal since v7); a request naming a
// session id answers FETCH_SESSION_ID_NOT_FOUND. The response holds whole
// batches read straight from the segment files below the high watermark;
// LastStableOffset equals the high watermark (no transactions yet), and an
// empty partition gets an empty, non-nil record set (librdkafka reads null
// as corrupt).
//
// Limits (KIP-74): the response stays within MaxBytes (capped by the
// broker's fetch.max.bytes) and each partition within its
// PartitionMaxBytes, except that the first partition with data may return
// one batch larger than either, so a consumer always makes progress.
//
// Long poll: with fewer than MinBytes available the request waits, up to
// MaxWaitMillis, on the partitions' change channels: new data wakes it at
// once; nothing polls.

import (
	"context"
	"errors"
	"reflect"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/protocol"
)

// maxFetchWait caps a client's MaxWaitMillis: a long poll holds its
// connection, and a wait of days serves no client.
const maxFetchWait = 5 * time.Minute

func handleFetch(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.FetchRequest)
	if r.SessionID != 0 {
		resp := r.ResponseKind().(*kmsg.FetchResponse)
		resp.ErrorCode = kerr.FetchSessionIDNotFound.Code
		return resp, nil
	}
	maxBytes := int64(b.cfg.MaxFetchBytes)
	if r.MaxBytes > 0 {
		maxBytes = min(maxBytes, int64(r.MaxBytes))
	}
	wait := min(time.Duration(max(r.MaxWaitMillis, 0))*time.Millisecond, maxFetchWait)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	start, parked := time.Now(), time.Duration(0) // metrics: latency without the long poll
	for {
		resp, total, waitOn := b.fetchOnce(r, maxBytes)
		if total >= int64(r.MinBytes) || len(waitOn) == 0 || wait == 0 {
			b.metrics.fetched(b, r, resp, time.Since(start)-parked)
			return resp, nil
		}
		// Wait for any partition to change, the deadline, or shutdown.
		cases := make([]reflect.SelectCase, 0, len(waitOn)+2)
		cases = append(cases,
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(deadline.C)},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
			reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(b.ctx.Done())})
		for _, ch := range waitOn {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
		}
		parkedAt := time.Now()
		chosen, _, _ := reflect.Select(cases)
		parked += time.Since(parkedAt)
		if chosen <= 2 { // deadline, connection gone or broker shutting down
			if chosen == 0 {
				wait = 0 // deadline passed: answer with whatever there is now
				continue
			}
			resp, _, _ = b.fetchOnce(r, maxBytes)
			b.metrics.fetched(b, r, resp, time.Since(start)-parked)
			return resp, nil
		}
	}
}

// fetchOnce reads every requested partition once. It returns the response,
// the record bytes in it, and the change channels to wait on (nil when an
// error makes waiting pointless).
func (b *Broker) fetchOnce(r *kmsg.FetchRequest, maxBytes int64) (*kmsg.FetchResponse, int64, []<-chan struct{}) {
	resp := r.ResponseKind().(*kmsg.FetchResponse)
	var total int64
	var waitOn []<-chan struct{}
	anyErr := false
	for _, rt := range r.Topics {
		st := kmsg.NewFetchResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		var t *topic
		var terr error
		if r.Version >= 13 {
			if t = b.lookupTopicID(rt.TopicID); t == nil {
				terr = ErrUnknownTopicID
			}
		} else if t = b.lookupTopic(rt.Topic); t == nil {
			terr = ErrUnknownTopic
		}
		for _, rp := range rt.Partitions {
			sp := kmsg.NewFetchResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = -1, -1, -1
			sp.PreferredReadReplica = -1
			sp.RecordBatches = []byte{}
			p := t.partition(rp.Partition)
			switch {
			case terr != nil:
				sp.ErrorCode = errorCode(terr)
			case p == nil:
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			default:
				n, ch := b.fetchPartition(p, &rp, &sp, total, maxBytes)
				total += n
				if ch != nil {
					waitOn = append(waitOn, ch)
				}
			}
			if sp.ErrorCode != 0 {
				anyErr = true
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	if anyErr {
		waitOn = nil
	}
	return resp, total, waitOn
}

// fetchPartition fills one partition's answer and returns the bytes read
// and the channel that signals new data.
func (b *Broker) fetchPartition(p replica, rp *kmsg.FetchRequestTopicPartition, sp *kmsg.FetchResponseTopicPartition, total, maxBytes int64) (int64, <-chan struct{}) {
	epoch, err := p.Ready()
	if err != nil {
		sp.ErrorCode = errorCode(err)
		if l, e, ok := leaderHint(err); ok {
			sp.CurrentLeader.LeaderID, sp.CurrentLeader.LeaderEpoch = l, e
		}
		return 0, nil
	}
	changed := p.Changed()
	start, hw := p.LogStartOffset(), p.HighWatermark()
	sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = hw, hw, start
	switch {
	case rp.CurrentLeaderEpoch >= 0 && rp.CurrentLeaderEpoch < epoch:
		sp.ErrorCode = kerr.FencedLeaderEpoch.Code
		return 0, nil
	case rp.CurrentLeaderEpoch > epoch:
		sp.ErrorCode = kerr.UnknownLeaderEpoch.Code
		return 0, nil
	}
	// KIP-320: a consumer whose last fetched epoch ended earlier than it
	// thinks is told where its log diverges instead of getting records.
	if rp.LastFetchedEpoch >= 0 {
		e, end := p.OffsetForLeaderEpoch(rp.LastFetchedEpoch)
		if e != -1 && (e < rp.LastFetchedEpoch || end < rp.FetchOffset) {
			sp.DivergingEpoch.Epoch, sp.DivergingEpoch.EndOffset = e, end
			return 0, nil
		}
	}
	limit := int64(max(rp.PartitionMaxBytes, 0))
	if total > 0 {
		limit = min(limit, maxBytes-total)
		if limit <= 0 {
			return 0, changed
		}
	}
	// Read up to the high watermark reported above, never past it.
	data, err := p.Read(rp.FetchOffset, int(min(limit, maxBytes)), hw)
	if err != nil {
		sp.ErrorCode = errorCode(err)
		var oor *partition.OffsetOutOfRangeError
		if errors.As(err, &oor) {
			sp.HighWatermark, sp.LogStartOffset = hw, oor.LogStart
		}
		return 0, nil
	}
	// Only the first partition with data may exceed the limits.
	if total > 0 && int64(len(data)) > limit {
		return 0, changed
	}
	if len(data) > 0 {
		sp.RecordBatches = data
	}
	return int64(len(data)), changed
}
