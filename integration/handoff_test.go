package integration

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/broker"
)

// TestHandoffOnGracefulStop: a broker stopped gracefully while a
// producer writes hands the leadership of its partitions to caught-up
// followers before its Raft groups stop. Its summary says it moved them,
// each moved partition is led (in every other broker's metadata) by the
// broker it was handed to, the producer carries on, and every acknowledged
// record is read back exactly once, with its key and value, at its
// acknowledged offset. The broker then starts again and gets its preferred
// leadership back.
func TestHandoffOnGracefulStop(t *testing.T) {
	logs := &logCapture{keep: map[string]bool{
		"leadership handoff finished":     true,
		"handed off partition leadership": true,
	}}
	c := NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) {
		cfg.Logger = slog.New(captureHandler{c: logs})
	}))
	const topic, partitions = "handoff", int32(6)
	createReplicated(t, c, topic, partitions, 3)
	waitPreferredLeaders(t, c, topic, partitions)
	led := map[int][]int32{}
	for p := range partitions {
		i := c.WaitLeader(topic, p)
		led[i] = append(led[i], p)
	}
	victim := 0
	for i := range c.Size() {
		if len(led[i]) > len(led[victim]) {
			victim = i
		}
	}
	victimID := int32(victim + 1) // NewCluster numbers brokers from 1 by slot
	t.Logf("stopping broker %d, which leads partitions %v", victimID, led[victim])

	cl := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordDeliveryTimeout(time.Minute))
	var acks ackLog
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r := &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%97), Value: fmt.Appendf(nil, "v%07d", i)}
			cl.Produce(context.Background(), r, acks.promise)
			if i%20 == 19 {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}()
	waitAcks := func(n int) {
		eventually(t, 60*time.Second, fmt.Sprintf("%d acknowledgements", n), func() bool { return acks.count() >= n })
	}
	waitAcks(1000)

	c.Stop(victim)
	stoppedAt := acks.count()

	// The summary the stopped broker logged before its groups closed.
	sums := logs.find("leadership handoff finished", victimID)
	if len(sums) != 1 {
		t.Fatalf("broker %d logged %d handoff summaries, want 1", victimID, len(sums))
	}
	sum := sums[0]
	moved, failed, skipped := sum["moved"].Int64(), sum["failed"].Int64(), sum["skipped"].Int64()
	t.Logf("handoff summary: moved %d failed %d skipped %d published %d regained %d metadata %s duration %v",
		moved, failed, skipped, sum["published"].Int64(), sum["regained"].Int64(), sum["metadata"].String(), sum["duration"].Duration())
	if moved == 0 {
		t.Fatalf("the handoff moved nothing: %v", sum)
	}
	// Published: the metadata named a new leader before the groups closed.
	if pub := sum["published"].Int64(); pub == 0 || pub > moved {
		t.Fatalf("%d of %d moved partitions had their new leader published before the stop", pub, moved)
	}
	if got := moved + failed + skipped + sum["single_replica"].Int64(); got != int64(len(led[victim])) {
		t.Fatalf("the handoff accounted for %d partitions, the broker led %d", got, len(led[victim]))
	}
	// Each handed-off partition, by the last broker it was handed to.
	handedTo := map[int32]int32{}
	for _, rec := range logs.find("handed off partition leadership", victimID) {
		if rec["topic"].String() != topic {
			t.Fatalf("handed off a partition of topic %q", rec["topic"].String())
		}
		p, to := int32(rec["partition"].Int64()), int32(rec["to"].Int64())
		if !slices.Contains(led[victim], p) {
			t.Fatalf("handed off partition %d, which broker %d did not lead (it led %v)", p, victimID, led[victim])
		}
		if to == victimID || c.Index(to) < 0 {
			t.Fatalf("partition %d handed to broker %d", p, to)
		}
		handedTo[p] = to
	}
	if int64(len(handedTo)) != moved {
		t.Fatalf("the summary says %d moved, the log names %d partitions: %v", moved, len(handedTo), handedTo)
	}
	// Right after the stop, every other broker's metadata names the new
	// leaders: those a handoff picked, and a leader off the stopped broker
	// for any partition it could not move. An election after a plain stop
	// would take an election timeout of leaderless time to get there.
	eventually(t, 3*time.Second, "the stopped broker's partitions led elsewhere", func() bool {
		for _, p := range led[victim] {
			for i := range c.Size() {
				b := c.Broker(i)
				if b == nil {
					continue
				}
				l, _ := b.PartitionLeader(topic, p)
				if l < 0 || l == victimID {
					return false
				}
				if to, ok := handedTo[p]; ok && l != to {
					return false
				}
			}
		}
		return true
	})

	// The producer carries on against the remaining brokers.
	waitAcks(stoppedAt + 1000)
	close(stop)
	<-stopped
	if err := cl.Flush(testContext(t, 90*time.Second)); err != nil {
		t.Fatal(err)
	}
	recs, errs := acks.snapshot()
	if errs != 0 {
		t.Fatalf("%d records failed (%d acknowledged)", errs, len(recs))
	}
	checkExactlyOnce(t, c, c.Addr(), topic, recs)

	c.Start(victim)
	c.waitRegistered()
	waitPreferredLeaders(t, c, topic, partitions)
	checkExactlyOnce(t, c, c.BrokerAddr(victim), topic, recs)
}

// logCapture keeps the brokers' log records whose message it is told to
// keep, with their attributes (node_id among them).
type logCapture struct {
	keep map[string]bool
	mu   sync.Mutex
	recs []capturedLog
}

type capturedLog struct {
	msg   string
	attrs map[string]slog.Value
}

// find returns the attributes of every record with message msg that the
// broker with id node logged, in order.
func (l *logCapture) find(msg string, node int32) []map[string]slog.Value {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]slog.Value
	for _, r := range l.recs {
		if id := r.attrs["node_id"]; r.msg == msg && id.Kind() == slog.KindInt64 && id.Int64() == int64(node) {
			out = append(out, r.attrs)
		}
	}
	return out
}

// captureHandler is a slog.Handler feeding a logCapture.
type captureHandler struct {
	c     *logCapture
	attrs []slog.Attr
}

func (h captureHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h captureHandler) Handle(_ context.Context, r slog.Record) error {
	if !h.c.keep[r.Message] {
		return nil
	}
	m := map[string]slog.Value{}
	for _, a := range h.attrs {
		m[a.Key] = a.Value.Resolve()
	}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.Resolve()
		return true
	})
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	h.c.recs = append(h.c.recs, capturedLog{r.Message, m})
	return nil
}

func (h captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return captureHandler{c: h.c, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h captureHandler) WithGroup(string) slog.Handler { return h }
