package broker

// Produce (key 0), advertised v0-13.
//
// v0-2 are answered UNSUPPORTED_VERSION per partition: they carry message
// formats 0 and 1, which this broker does not store. The floor is still
// advertised as 0 because librdkafka enables compression only when it sees
// it (KAFKA-18659). v13 names topics by id.
//
// Each partition's records must be exactly one v2 batch. It is checked
// once: framing, size (max.message.bytes), CRC-32C, then every record
// inside, decompressing with a cap (compression bombs are refused). The
// stored bytes are the bytes sent, except that a LogAppendTime topic gets
// the broker's time stamped (and the CRC recomputed) first. acks=0 gets no
// response; if any partition failed, the connection is closed instead, as
// Kafka does, so the client refreshes its metadata. acks=1 and acks=all
// are answered once the batch is committed by a majority of the
// partition's Raft group and applied on the leader; a broker that is not
// the ready leader answers NOT_LEADER_OR_FOLLOWER (with the leader it knows
// from v10), and so does a write whose fate became unknown (leadership lost
// mid-flight). Every answer carries the log
// start offset, which franz-go reads to tell retention from data loss.
// Transactional produce is refused: transactions do not exist yet.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/records"
	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/protocol"
)

func handleProduce(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.ProduceRequest)
	defer b.metrics.produced(r.Acks, time.Now())
	resp := r.ResponseKind().(*kmsg.ProduceResponse)
	var whole int16 // an error for every partition
	switch {
	case r.Version < 3:
		whole = kerr.UnsupportedVersion.Code
	case r.TransactionID != nil:
		whole = kerr.TransactionalIDAuthorizationFailed.Code
	case r.Acks != 0 && r.Acks != 1 && r.Acks != -1:
		whole = kerr.InvalidRequiredAcks.Code
	}
	// Every partition's batch is replicated by its own group: all of them
	// are proposed at once and the answer waits for the slowest, so a
	// request for 12 partitions costs one commit round, not twelve. The
	// request's timeout bounds the wait (REQUEST_TIMED_OUT: the outcome is
	// unknown, the client retries).
	ctx, cancel := requestContext(ctx, r.TimeoutMillis)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxConcurrentPartitions) // a huge request cannot spawn without bound
	for _, rt := range r.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		t, terr := b.produceTopic(r.Version, &rt)
		st.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		for i, rp := range rt.Partitions {
			sp := &st.Partitions[i]
			*sp = kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.BaseOffset, sp.LogAppendTime, sp.LogStartOffset = -1, -1, -1
			switch {
			case whole != 0:
				sp.ErrorCode = whole
			case terr != nil:
				sp.ErrorCode = errorCode(terr)
			default:
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					b.producePartition(ctx, t, rp, sp)
				}()
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	wg.Wait()
	failed := false
	for _, st := range resp.Topics {
		for _, sp := range st.Partitions {
			if sp.ErrorCode != 0 {
				failed = true
				if sp.ErrorCode == kerr.UnknownServerError.Code {
					b.logger.Error("produce failed", "topic", st.Topic, "partition", sp.Partition, "msg", deref(sp.ErrorMessage))
				}
			}
		}
	}
	if r.Acks == 0 {
		if failed {
			return nil, errors.New("broker: acks=0 produce failed; closing the connection so the client refreshes metadata")
		}
		return nil, nil
	}
	return resp, nil
}

// maxConcurrentPartitions bounds the partitions of one produce request in
// flight at once.
const maxConcurrentPartitions = 256

// produceTopic resolves a produce request's topic by name, or by id from
// v13.
func (b *Broker) produceTopic(version int16, rt *kmsg.ProduceRequestTopic) (*topic, error) {
	var t *topic
	if version >= 13 {
		if t = b.lookupTopicID(rt.TopicID); t == nil {
			return nil, ErrUnknownTopicID
		}
	} else if t = b.lookupTopic(rt.Topic); t == nil {
		if validateTopicName(rt.Topic) != nil {
			return nil, ErrInvalidTopic
		}
		return nil, ErrUnknownTopic
	}
	if t.internal {
		return nil, fmt.Errorf("%w: %q is internal", ErrInvalidTopic, t.name)
	}
	return t, nil
}

func (b *Broker) producePartition(ctx context.Context, t *topic, rp kmsg.ProduceRequestTopicPartition, sp *kmsg.ProduceResponseTopicPartition) {
	p := t.partition(rp.Partition)
	if p == nil {
		sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
		return
	}
	settings := &t.load().settings
	_, err := p.Ready() // before the (costly) record checks
	var res appendResult
	if err == nil {
		sp.LogStartOffset = p.LogStartOffset()
		res, err = b.appendBatch(ctx, settings, p, rp.Records)
	}
	if err != nil {
		sp.ErrorCode, sp.ErrorMessage = errorFields(err)
		if l, e, ok := leaderHint(err); ok {
			sp.CurrentLeader.LeaderID, sp.CurrentLeader.LeaderEpoch = l, e
		}
		return
	}
	sp.BaseOffset, sp.LogStartOffset = res.BaseOffset, res.LogStartOffset
	if !res.Duplicate { // a retried batch was counted when it was written
		b.metrics.appended(t.id, len(rp.Records))
	}
	if settings.logAppendTime {
		sp.LogAppendTime = res.logAppendTime
	}
}

type appendResult struct {
	partition.AppendResult
	logAppendTime int64
}

// appendBatch checks one produced batch completely and appends it.
func (b *Broker) appendBatch(ctx context.Context, settings *topicSettings, p replica, batch []byte) (appendResult, error) {
	var res appendResult
	if len(batch) == 0 {
		return res, fmt.Errorf("%w: no records", partition.ErrInvalidRecord)
	}
	h, err := partition.ValidateBatch(batch, settings.log.MaxBatchBytes)
	if err != nil {
		return res, err
	}
	if err := records.Check(batch, &h, records.Limits{MaxDecompressedBytes: b.cfg.MaxDecompressedBytes, MaxRecords: 1 << 20}); err != nil {
		return res, err
	}
	if settings.logAppendTime {
		res.logAppendTime = b.cfg.Now().UnixMilli()
		if err := records.StampLogAppendTime(batch, res.logAppendTime); err != nil {
			return res, err
		}
	}
	res.AppendResult, err = p.Append(ctx, batch)
	return res, err
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
