package checker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer writes globally unique values through a kgo client and logs
// every invocation and completion in its history.
type Producer struct {
	h    *History
	name string
	cl   *kgo.Client
	idem bool
	seq  atomic.Int64
	wg   sync.WaitGroup // promises not yet called
}

// NewProducer wraps cl, which the caller built (seeds, dialer, timeouts,
// kgo.DisableIdempotentWrite or not, kgo.ManualPartitioner to choose
// partitions). idempotent must say how cl was built: check (d) holds only
// idempotent producers to no duplicates. Check (f) assumes cl keeps the
// order of one partition's records, which kgo does when idempotent and,
// without idempotence, with its default of one produce request in flight
// per broker.
func (h *History) NewProducer(cl *kgo.Client, idempotent bool) *Producer {
	return &Producer{h: h, name: h.NextProducer(), cl: cl, idem: idempotent}
}

// Name is the producer's name in values and reports ("p1").
func (p *Producer) Name() string { return p.name }

// Client is the wrapped client.
func (p *Producer) Client() *kgo.Client { return p.cl }

// Send produces the next value asynchronously to topic and returns it. key
// may be nil. partition is honoured only by a client built with
// kgo.RecordPartitioner(kgo.ManualPartitioner()); pass -1 otherwise. Like
// kgo's Produce, Send blocks while the client's buffer is full (until ctx
// ends, which fails the record).
func (p *Producer) Send(ctx context.Context, topic string, partition int32, key []byte) string {
	r, id := p.next(topic, partition, key)
	p.wg.Add(1)
	p.cl.Produce(ctx, r, func(r *kgo.Record, err error) {
		defer p.wg.Done()
		p.complete(id, r, err)
	})
	return string(r.Value)
}

// SendSync produces the next value and waits for its completion.
func (p *Producer) SendSync(ctx context.Context, topic string, partition int32, key []byte) Write {
	r, id := p.next(topic, partition, key)
	res := p.cl.ProduceSync(ctx, r)
	p.complete(id, res[0].Record, res[0].Err)
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	return p.h.writes[id]
}

func (p *Producer) next(topic string, partition int32, key []byte) (*kgo.Record, int) {
	seq := p.seq.Add(1) - 1
	v := fmt.Sprintf("%s-%d", p.name, seq)
	id := p.h.Invoke(Write{Producer: p.name, Seq: seq, Idempotent: p.idem, Topic: topic,
		Key: string(key), Value: v, Partition: partition})
	r := &kgo.Record{Topic: topic, Key: key, Value: []byte(v)}
	if partition >= 0 {
		r.Partition = partition
	}
	return r, id
}

func (p *Producer) complete(id int, r *kgo.Record, err error) {
	if err != nil {
		p.h.Complete(id, Classify(err), -1, -1, err)
		return
	}
	p.h.Complete(id, OK, r.Partition, r.Offset, nil)
}

// Flush waits until every record sent so far has completed.
func (p *Producer) Flush(ctx context.Context) error {
	if err := p.cl.Flush(ctx); err != nil {
		return err
	}
	p.wg.Wait() // kgo calls the promises before Flush returns; this is belt and braces
	return nil
}

// Run sends a value every interval until ctx ends, keyed "k0".."k<keys-1>"
// in turn (keys 0: null keys, which kgo's default partitioner spreads).
// The records themselves are sent without ctx's cancellation, so stopping
// the load does not fail what is buffered: they complete as the client's
// delivery timeout decides. Run returns the number sent; it does not wait
// for their completions (see Flush).
func (p *Producer) Run(ctx context.Context, topic string, every time.Duration, keys int) int {
	tick := time.NewTicker(every)
	defer tick.Stop()
	rctx := context.WithoutCancel(ctx)
	for n := 0; ; n++ {
		if ctx.Err() != nil {
			return n
		}
		var key []byte
		if keys > 0 {
			key = fmt.Appendf(nil, "k%d", n%keys)
		}
		p.Send(rctx, topic, -1, key)
		select {
		case <-ctx.Done():
			return n + 1
		case <-tick.C:
		}
	}
}

// definite are the produce errors that say the broker refused the batch for
// what it is: every attempt of the same batch gets the same answer, so
// none can have been written. Everything else (timeouts, cut connections,
// NOT_LEADER after retries ran out, a canceled context) is indeterminate:
// an earlier attempt may have been written.
var definite = []error{
	kerr.MessageTooLarge,
	kerr.RecordListTooLarge,
	kerr.InvalidRecord,
	kerr.CorruptMessage,
	kerr.InvalidTimestamp,
	kerr.UnsupportedCompressionType,
	kerr.InvalidTopicException,
	kerr.InvalidRequiredAcks,
	kerr.TopicAuthorizationFailed,
	kerr.ClusterAuthorizationFailed,
}

// Classify maps a produce error to Failed (a definite refusal, see
// definite) or Indeterminate; nil is OK.
func Classify(err error) Outcome {
	if err == nil {
		return OK
	}
	for _, d := range definite {
		if errors.Is(err, d) {
			return Failed
		}
	}
	return Indeterminate
}
