package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
)

// TestNewAddrRestartKeepsMembership is the cluster-lifecycle promise "Raft
// peers resolve by broker id, so a broker that restarts on a new address
// keeps its membership": three brokers, a 6-partition RF=3 topic, a
// producer writing distinct values throughout, and the broker leading the
// most partitions restarted on new Kafka and Raft ports. The other brokers
// keep their old --peers lists and every raft configuration keeps naming
// the old address. Throughout, Metadata on every broker stays consistent;
// afterwards the moved broker is dialed at its new address, leads again,
// is in sync, and every acknowledged record is read back exactly once at
// its offset through every broker, from identical replicas.
func TestNewAddrRestartKeepsMembership(t *testing.T) {
	const topic, partitions = "newaddr", 6
	// A short session timeout: the moved broker must not be fenced,
	// though raft's configurations keep naming its old address.
	c := NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) { cfg.BrokerSessionTimeout = 2 * time.Second }))
	createReplicated(t, c, topic, partitions, 3)
	// Preferred leaders are spread evenly and balancing moves leadership to
	// them: every broker leads two partitions, and the moved one must get
	// its two back.
	balanced := func() bool {
		count := map[int]int{}
		for p := range int32(partitions) {
			count[c.WaitLeader(topic, p)]++
		}
		return count[0] == 2 && count[1] == 2 && count[2] == 2
	}
	eventually(t, 30*time.Second, "balanced leadership", balanced)
	count := map[int]int{}
	for p := range int32(partitions) {
		count[c.WaitLeader(topic, p)]++
	}
	victim := 0
	for i := range c.Size() {
		if count[i] > count[victim] {
			victim = i
		}
	}
	victimID := int32(victim + 1)
	oldKafka, oldRaft := c.BrokerAddr(victim), c.RaftAddr(victim)

	// The producer: distinct values, every acknowledgement logged.
	cl := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordDeliveryTimeout(2*time.Minute))
	var log ackLog
	stopProduce := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; ; i++ {
			select {
			case <-stopProduce:
				return
			default:
			}
			cl.Produce(context.Background(), &kgo.Record{Key: fmt.Appendf(nil, "k%d", i%101), Value: fmt.Appendf(nil, "v%07d", i)}, log.promise)
			if i%50 == 49 {
				time.Sleep(5 * time.Millisecond) // a steady stream, not a flood on 2 cores
			}
		}
	}()
	acks := func() int {
		log.mu.Lock()
		defer log.mu.Unlock()
		return len(log.recs)
	}
	eventually(t, 30*time.Second, "acknowledgements before the move", func() bool { return acks() >= 2000 })

	// Metadata from every broker, polled throughout.
	mw := newMetaWatch(t, topic, victimID, oldKafka, c.Addrs())
	mw.start()
	defer mw.stop()

	c.MoveBroker(victim)
	newKafka, newRaft := c.BrokerAddr(victim), c.RaftAddr(victim)
	if newKafka == oldKafka || newRaft == oldRaft {
		t.Fatalf("MoveBroker kept an address: kafka %s -> %s, raft %s -> %s", oldKafka, newKafka, oldRaft, newRaft)
	}
	mw.moved(victim, newKafka)

	// Every broker lists the moved one at its new Kafka address once it has
	// re-registered (the watcher checks that it never goes back).
	eventually(t, 60*time.Second, "every broker to list the moved broker at its new address", func() bool {
		return mw.allSee(newKafka)
	})
	base := acks()
	eventually(t, 60*time.Second, "acknowledgements after the move", func() bool { return acks() >= base+2000 })

	// The other brokers reach it at its new Raft address (their --peers and
	// every raft configuration still name the old one).
	for j := range c.Size() {
		if j == victim {
			continue
		}
		eventually(t, 30*time.Second, fmt.Sprintf("broker %d to dial broker %d at %s", j+1, victimID, newRaft), func() bool {
			return c.RaftConnsTo(j, victim) > 0
		})
	}
	// It leads again: balancing hands a partition to its preferred leader
	// only once the leader's transport has recorded the follower caught up
	// under the address raftAddr resolves, so this is the leader side's
	// acknowledged index advancing under the new address.
	eventually(t, 60*time.Second, "the moved broker to lead its partitions again", balanced)
	// And it is not fenced: the metadata leader hears from it at its new
	// address. Every broker's Metadata names a leader for every partition
	// for twice the session timeout.
	holdFor(t, 4*time.Second, "a leader shown for every partition", func() error {
		for i := range 3 {
			for p, pm := range metadataView(t, c, i, topic) {
				if pm.Leader < 0 || pm.ErrorCode != 0 || len(pm.OfflineReplicas) > 0 {
					return fmt.Errorf("slot %d shows partition %d with leader %d, error %d, offline %v", i, p, pm.Leader, pm.ErrorCode, pm.OfflineReplicas)
				}
			}
		}
		return nil
	})
	// In sync: every leader's ISR, on every broker, names all three
	// replicas, and keeps naming them past ReplicaLagMax while writes flow
	// (a follower whose acknowledgements were recorded under another
	// address than the one the ISR loop reads would drop out).
	eventually(t, 30*time.Second, "full ISRs", func() bool { return mw.fullISR() == nil })
	holdFor(t, 3*time.Second, "full ISRs while producing", mw.fullISR)
	// Its replicas catch up with the leaders' applied index.
	for p := range int32(partitions) {
		l := c.WaitLeader(topic, p)
		st, ok := c.Broker(l).ReplicaStats(topic, p)
		if !ok {
			t.Fatalf("leader %d has no replica of %s-%d", l+1, topic, p)
		}
		eventually(t, 30*time.Second, fmt.Sprintf("broker %d to apply %s-%d up to %d", victimID, topic, p, st.AppliedIndex), func() bool {
			vs, ok := c.Broker(victim).ReplicaStats(topic, p)
			return ok && vs.AppliedIndex >= st.AppliedIndex
		})
	}

	close(stopProduce)
	<-produced
	if err := cl.Flush(testContext(t, 2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	mw.stop()
	mw.check()
	log.mu.Lock()
	recs, errs := append([]acked(nil), log.recs...), log.errs
	log.mu.Unlock()
	if errs != 0 {
		t.Fatalf("%d records failed (%d acknowledged)", errs, len(recs))
	}
	t.Logf("%d records acknowledged; %d metadata polls", len(recs), mw.polls())
	for i := range c.Size() {
		checkExactlyOnce(t, c, c.BrokerAddr(i), topic, recs)
	}
	compareReplicas(t, c, topic, partitions)
}

// metaWatch polls Metadata on every broker and checks, per answer and
// across answers, what must hold while a broker moves: leader epochs never
// go down on any broker, one epoch never names two leaders anywhere, and
// the moved broker is listed at its old Kafka address until a broker has
// seen its new one, then never at the old one again on that broker.
type metaWatch struct {
	t       *testing.T
	topic   string
	movedID int32
	oldAddr string

	mu       sync.Mutex
	addrs    []string                  // Kafka address polled, per slot
	movedTo  string                    // the moved broker's new Kafka address, once known or seen
	last     []*kmsg.MetadataResponse  // newest answer per slot
	epochs   []map[int32]int32         // per slot: partition -> highest epoch seen
	leaderOf map[int32]map[int32]int32 // partition -> epoch -> leader, across all slots
	sawNew   []bool                    // per slot: listed the moved broker at its new address
	others   map[int32]string          // the other brokers' addresses, fixed
	n        int                       // answers checked
	errs     []string                  // violations, reported by check
	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newMetaWatch(t *testing.T, topic string, movedID int32, oldAddr string, addrs []string) *metaWatch {
	w := &metaWatch{t: t, topic: topic, movedID: movedID, oldAddr: oldAddr, addrs: addrs,
		last: make([]*kmsg.MetadataResponse, len(addrs)), leaderOf: map[int32]map[int32]int32{},
		sawNew: make([]bool, len(addrs)), others: map[int32]string{},
		quit: make(chan struct{}), done: make(chan struct{})}
	for range addrs {
		w.epochs = append(w.epochs, map[int32]int32{})
	}
	return w
}

func (w *metaWatch) start() {
	go func() {
		defer close(w.done)
		for {
			for i := range w.addrs {
				w.mu.Lock()
				addr := w.addrs[i]
				w.mu.Unlock()
				if resp, err := fetchMetadata(addr, w.topic); err == nil {
					w.observe(i, resp)
				} // a broker that is down or busy answers nothing: no claim to check
			}
			select {
			case <-w.quit:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

func (w *metaWatch) stop() {
	w.stopOnce.Do(func() { close(w.quit) })
	<-w.done
}

// moved tells the watcher the moved broker's slot now answers at addr.
func (w *metaWatch) moved(slot int, addr string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.addrs[slot] = addr
	if w.movedTo != "" && w.movedTo != addr {
		w.failf("the moved broker was listed at %s before it moved to %s", w.movedTo, addr)
	}
	w.movedTo = addr
}

func (w *metaWatch) failf(format string, args ...any) {
	if len(w.errs) < 20 {
		w.errs = append(w.errs, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
	}
}

func (w *metaWatch) observe(slot int, resp *kmsg.MetadataResponse) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	w.last[slot] = resp
	from := slot + 1
	for _, b := range resp.Brokers {
		addr := net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		if b.NodeID != w.movedID {
			if prev, ok := w.others[b.NodeID]; ok && prev != addr {
				w.failf("broker %d lists broker %d at %s, earlier at %s", from, b.NodeID, addr, prev)
			}
			w.others[b.NodeID] = addr
			continue
		}
		switch {
		case addr == w.oldAddr:
			if w.sawNew[slot] {
				w.failf("broker %d lists the moved broker %d at its old address %s again", from, b.NodeID, addr)
			}
		case w.movedTo == "" || addr == w.movedTo:
			// Seen before MoveBroker returned: moved checks it is the one.
			w.movedTo = addr
			w.sawNew[slot] = true
		default:
			w.failf("broker %d lists the moved broker %d at %s: neither %s nor %s", from, b.NodeID, addr, w.oldAddr, w.movedTo)
		}
	}
	for _, tp := range resp.Topics {
		if tp.Topic == nil || *tp.Topic != w.topic {
			continue
		}
		for _, p := range tp.Partitions {
			if p.Leader < 0 || p.LeaderEpoch < 0 {
				continue
			}
			if prev, ok := w.epochs[slot][p.Partition]; ok && p.LeaderEpoch < prev {
				w.failf("broker %d: partition %d leader epoch went from %d back to %d", from, p.Partition, prev, p.LeaderEpoch)
			}
			w.epochs[slot][p.Partition] = max(w.epochs[slot][p.Partition], p.LeaderEpoch)
			byEpoch := w.leaderOf[p.Partition]
			if byEpoch == nil {
				byEpoch = map[int32]int32{}
				w.leaderOf[p.Partition] = byEpoch
			}
			if l, ok := byEpoch[p.LeaderEpoch]; ok && l != p.Leader {
				w.failf("partition %d epoch %d: broker %d says leader %d, earlier answers %d", p.Partition, p.LeaderEpoch, from, p.Leader, l)
			}
			byEpoch[p.LeaderEpoch] = p.Leader
		}
	}
}

// allSee reports whether every broker's newest answer came from its
// current address and lists the moved broker at addr.
func (w *metaWatch) allSee(addr string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range w.addrs {
		if !w.sawNew[i] {
			return false
		}
		if r := w.last[i]; r == nil || !listsAt(r, w.movedID, addr) {
			return false
		}
	}
	return true
}

func listsAt(r *kmsg.MetadataResponse, id int32, addr string) bool {
	for _, b := range r.Brokers {
		if b.NodeID == id && net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))) == addr {
			return true
		}
	}
	return false
}

// fullISR is nil when every broker's newest answer has a leader and all
// three replicas in sync for every partition of the topic.
func (w *metaWatch) fullISR() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, r := range w.last {
		if r == nil {
			return fmt.Errorf("no answer from broker %d yet", i+1)
		}
		for _, tp := range r.Topics {
			if tp.Topic == nil || *tp.Topic != w.topic {
				continue
			}
			if len(tp.Partitions) == 0 {
				return fmt.Errorf("broker %d: no partitions", i+1)
			}
			for _, p := range tp.Partitions {
				if p.Leader < 0 || len(p.ISR) != len(p.Replicas) || len(p.Replicas) != 3 {
					return fmt.Errorf("broker %d: partition %d leader %d replicas %v isr %v", i+1, p.Partition, p.Leader, p.Replicas, p.ISR)
				}
			}
		}
	}
	return nil
}

func (w *metaWatch) polls() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// check fails the test with every violation seen.
func (w *metaWatch) check() {
	w.t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.errs {
		w.t.Error(e)
	}
	if len(w.errs) > 0 {
		w.t.FailNow()
	}
}

// fetchMetadata asks the broker at addr for one topic's metadata (v12) on
// a fresh connection; unlike rawRequest it returns errors, for use off the
// test goroutine and against a broker that may be down.
func fetchMetadata(addr, topic string) (*kmsg.MetadataResponse, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	req := kmsg.NewPtrMetadataRequest()
	req.SetVersion(12)
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("metawatch"))
	if _, err := conn.Write(f.AppendRequest(nil, req, 7)); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(conn, body); err != nil {
		return nil, err
	}
	if len(body) < 5 || int32(binary.BigEndian.Uint32(body)) != 7 {
		return nil, fmt.Errorf("bad response header from %s", addr)
	}
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	if err := resp.ReadFrom(body[5:]); err != nil { // correlation id, empty tagged fields
		return nil, err
	}
	return resp, nil
}
