package partition

import (
	"fmt"
	"maps"
	"slices"
)

// maxProducerBatches is how many recent batches the log remembers per
// producer, as Kafka does: a producer has at most 5 requests in flight per
// partition, so a retry of any of them is recognised as a duplicate.
const maxProducerBatches = 5

// producerBatch is one appended batch of an idempotent producer.
type producerBatch struct {
	firstSeq, lastSeq       int32
	firstOffset, lastOffset int64
}

// producerEntry is what the log knows about one producer id.
type producerEntry struct {
	epoch   int16
	batches []producerBatch // oldest first, at most maxProducerBatches
	// lastTimestamp is the append time (ms) of the producer's newest batch,
	// as the appender was told it: a leader-stamped time under replication,
	// so every replica expires the same producers. Never the client's
	// CreateTime: a producer replaying old timestamps would lose its state
	// at once, and its retries would then be written twice.
	lastTimestamp int64
}

// producerTable is the idempotent-producer state of one partition. It is part
// of the durable state (written in every checkpoint, rebuilt from batch
// headers past the checkpoint), because every replica must deduplicate the
// same way. Only the appender touches it.
type producerTable map[int64]*producerEntry

// check decides what to do with an idempotent batch: append it (nil, nil),
// answer it as a duplicate of an earlier append (the earlier batch), or refuse
// it. logEmpty is true when the partition holds no records at all.
//
// The rules are Kafka's since KIP-360: a producer the log has no state for
// may start at any sequence (its state may have expired or been removed with
// old segments), except on an empty log, where a non-zero first sequence
// means the producer's earlier writes are gone and is answered
// ErrUnknownProducerID so the client can compare the log start with what it
// had acknowledged. A newer epoch must start at sequence 0; an older epoch is
// fenced; within an epoch the first sequence must follow the last one.
func (t producerTable) check(h *BatchHeader, logEmpty bool) (*producerBatch, error) {
	e := t[h.ProducerID]
	if e == nil {
		if logEmpty && h.BaseSequence != 0 {
			return nil, fmt.Errorf("%w: producer %d starts at sequence %d on an empty log", ErrUnknownProducerID, h.ProducerID, h.BaseSequence)
		}
		return nil, nil
	}
	switch {
	case h.ProducerEpoch < e.epoch:
		return nil, fmt.Errorf("%w: producer %d epoch %d is older than %d", ErrInvalidProducerEpoch, h.ProducerID, h.ProducerEpoch, e.epoch)
	case h.ProducerEpoch > e.epoch:
		if h.BaseSequence != 0 {
			return nil, fmt.Errorf("%w: producer %d new epoch %d starts at sequence %d, not 0", ErrOutOfOrderSequence, h.ProducerID, h.ProducerEpoch, h.BaseSequence)
		}
		return nil, nil
	}
	last := h.LastSequence()
	for i := range e.batches {
		if b := &e.batches[i]; b.firstSeq == h.BaseSequence && b.lastSeq == last {
			dup := *b
			return &dup, nil
		}
	}
	if n := len(e.batches); n > 0 {
		if want := wrapSequence(e.batches[n-1].lastSeq, 1); h.BaseSequence != want {
			return nil, fmt.Errorf("%w: producer %d epoch %d sent sequence %d, expected %d", ErrOutOfOrderSequence, h.ProducerID, h.ProducerEpoch, h.BaseSequence, want)
		}
	}
	return nil, nil
}

// update records an idempotent batch appended at appendMs (h carries its
// assigned base offset). It trusts its input: check has run, or the batch
// comes back from the log during recovery.
func (t producerTable) update(h *BatchHeader, appendMs int64) {
	e := t[h.ProducerID]
	if e == nil || h.ProducerEpoch != e.epoch {
		e = &producerEntry{epoch: h.ProducerEpoch, lastTimestamp: appendMs}
		t[h.ProducerID] = e
	}
	if len(e.batches) == maxProducerBatches {
		copy(e.batches, e.batches[1:])
		e.batches = e.batches[:maxProducerBatches-1]
	}
	e.batches = append(e.batches, producerBatch{
		firstSeq:    h.BaseSequence,
		lastSeq:     h.LastSequence(),
		firstOffset: h.BaseOffset,
		lastOffset:  h.LastOffset(),
	})
	e.lastTimestamp = max(e.lastTimestamp, appendMs)
}

// expire forgets producers whose newest batch was appended before
// nowMs - expirationMs and returns how many it removed.
func (t producerTable) expire(nowMs, expirationMs int64) int {
	n := 0
	for id, e := range t {
		if e.lastTimestamp+expirationMs < nowMs {
			delete(t, id)
			n++
		}
	}
	return n
}

// clone returns a deep copy, for checkpoints taken while appends continue.
func (t producerTable) clone() producerTable {
	c := make(producerTable, len(t))
	for id, e := range t {
		ce := *e
		ce.batches = slices.Clone(e.batches)
		c[id] = &ce
	}
	return c
}

// ids returns the producer ids in increasing order, so encodings are
// deterministic.
func (t producerTable) ids() []int64 {
	return slices.Sorted(maps.Keys(t))
}

// ProducerState is a read-only view of one producer's entry, for tests and
// diagnostics.
type ProducerState struct {
	ProducerID    int64
	Epoch         int16
	LastSequence  int32
	LastOffset    int64
	LastTimestamp int64
}
