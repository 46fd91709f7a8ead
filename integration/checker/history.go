package checker

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Outcome is what a client learned about an operation.
type Outcome int

const (
	// Pending: invoked, not completed (yet). At check time a pending
	// operation counts as indeterminate.
	Pending Outcome = iota
	// OK: the broker acknowledged it.
	OK
	// Failed: the broker definitely did not apply it.
	Failed
	// Indeterminate: it may or may not have been applied.
	Indeterminate
)

func (o Outcome) String() string {
	switch o {
	case Pending:
		return "pending"
	case OK:
		return "ok"
	case Failed:
		return "failed"
	case Indeterminate:
		return "indeterminate"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Write is one produced record: its invocation and completion.
type Write struct {
	ID         int    // index in the history's writes
	Producer   string // "p1"
	Seq        int64  // the producer's sequence number, from 0
	Idempotent bool   // sent by an idempotent producer
	Topic      string
	Key        string // "" for a null key
	Value      string // "p<producer>-<seq>", unique in the history
	Partition  int32  // the partition asked for, -1 when the partitioner chose

	Invoked, Completed     int64 // history clock; Completed 0 while pending
	InvokedAt, CompletedAt time.Time
	Outcome                Outcome
	AckPartition           int32 // with OK: where the broker put it
	AckOffset              int64
	Err                    string
}

// Poll is one record a consumer received.
type Poll struct {
	Event       int64 // history clock
	At          time.Time
	Consumer    string
	Topic       string
	Partition   int32
	Offset      int64
	LeaderEpoch int32
	Key, Value  string
}

// Commit is one committed offset of a group member (one partition of an
// OffsetCommit request).
type Commit struct {
	ID                 int
	Consumer, Group    string
	Topic              string
	Partition          int32
	Offset             int64 // the next offset to consume
	Invoked, Completed int64 // history clock
	Outcome            Outcome
	Err                string
}

// RebalanceKind says what a rebalance callback reported.
type RebalanceKind int

const (
	// Assigned: the partitions were added to the member.
	Assigned RebalanceKind = iota
	// Revoked: the member gave the partitions up (after committing).
	Revoked
	// Lost: the member lost the partitions without a chance to commit.
	Lost
)

func (k RebalanceKind) String() string {
	return [...]string{"assigned", "revoked", "lost"}[k]
}

// Rebalance is one rebalance callback of a group member.
type Rebalance struct {
	Event      int64
	At         time.Time
	Consumer   string
	Group      string
	Kind       RebalanceKind
	Topic      string
	Partitions []int32
}

// Record is one record in a drain or a replica: a data record with its key
// and value, or the one record of a control batch's offset.
type Record struct {
	Offset     int64
	Key, Value string
	Control    bool
}

// DrainedPartition is what a final read of one partition returned: every
// record in [Start, End), End being the high watermark when the read began.
type DrainedPartition struct {
	Start, End int64
	Records    []Record
	Err        string // why the read did not reach End
}

// Drain is a final read of a topic from its log start.
type Drain struct {
	Source     string // e.g. "drain via 127.0.0.1:9092"
	Topic      string
	Partitions map[int32]*DrainedPartition
	Took       time.Duration
	Err        string // why the drain failed as a whole
}

// Liveness is one bounded wait after the final heal (check (h)).
type Liveness struct {
	What   string
	Bound  time.Duration
	Took   time.Duration
	OK     bool
	Detail string
}

// consumerInfo is what the checker needs to know about a consumer: a group
// member's partitions come from its rebalance callbacks, a direct
// consumer's from its first poll.
type consumerInfo struct {
	group string // "" for a direct consumer
}

// History is the log of one test's operations. All methods are safe for
// concurrent use.
type History struct {
	mu         sync.Mutex
	start      time.Time
	clock      int64
	producers  int
	writes     []Write
	polls      []Poll
	commits    []Commit
	rebalances []Rebalance
	consumers  map[string]consumerInfo
	drains     []*Drain
	replicas   []*ReplicaLog
	liveness   []Liveness
	notes      []string
}

// New returns an empty history.
func New() *History {
	return &History{start: time.Now(), consumers: map[string]consumerInfo{}}
}

// tickLocked advances the history clock.
func (h *History) tickLocked() int64 {
	h.clock++
	return h.clock
}

// NextProducer reserves a producer name ("p1", "p2", ...) for a writer not
// made with NewProducer.
func (h *History) NextProducer() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.producers++
	return fmt.Sprintf("p%d", h.producers)
}

// Invoke records the invocation of w (Producer, Seq, Value, Topic, Key,
// Partition, Idempotent set by the caller) and returns its id for Complete.
func (h *History) Invoke(w Write) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	w.ID = len(h.writes)
	w.Invoked = h.tickLocked()
	w.InvokedAt = time.Now()
	w.Outcome = Pending
	w.Completed = 0
	h.writes = append(h.writes, w)
	return w.ID
}

// Complete records the completion of write id: with OK, partition and
// offset are where the broker acknowledged it; otherwise err says why.
// A second completion of the same write is recorded as a note and ignored.
func (h *History) Complete(id int, out Outcome, partition int32, offset int64, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := &h.writes[id]
	if w.Outcome != Pending {
		h.notes = append(h.notes, fmt.Sprintf("write %s completed twice (%v, then %v)", w.Value, w.Outcome, out))
		return
	}
	w.Completed = h.tickLocked()
	w.CompletedAt = time.Now()
	w.Outcome = out
	if out == OK {
		w.AckPartition, w.AckOffset = partition, offset
	}
	if err != nil {
		w.Err = err.Error()
	}
}

// AddConsumer registers a consumer: group "" for a direct (assigned)
// consumer, else the group it is a member of.
func (h *History) AddConsumer(name, group string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.consumers[name] = consumerInfo{group: group}
}

// AddPoll records records a consumer received, in the order received.
func (h *History) AddPoll(ps ...Poll) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range ps {
		p.Event = h.tickLocked()
		if p.At.IsZero() {
			p.At = time.Now()
		}
		h.polls = append(h.polls, p)
	}
}

// InvokeCommit records the invocation of a commit and returns its id.
func (h *History) InvokeCommit(c Commit) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.ID = len(h.commits)
	c.Invoked = h.tickLocked()
	c.Outcome = Pending
	h.commits = append(h.commits, c)
	return c.ID
}

// CompleteCommit records the completion of commit id.
func (h *History) CompleteCommit(id int, out Outcome, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := &h.commits[id]
	if c.Outcome != Pending {
		return
	}
	c.Completed = h.tickLocked()
	c.Outcome = out
	if err != nil {
		c.Err = err.Error()
	}
}

// AddRebalance records a rebalance callback.
func (h *History) AddRebalance(r Rebalance) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.Event = h.tickLocked()
	if r.At.IsZero() {
		r.At = time.Now()
	}
	r.Partitions = slices.Clone(r.Partitions)
	h.rebalances = append(h.rebalances, r)
}

// AddDrain records a final read.
func (h *History) AddDrain(d *Drain) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.drains = append(h.drains, d)
}

// AddReplica records one replica's offline contents.
func (h *History) AddReplica(r *ReplicaLog) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.replicas = append(h.replicas, r)
}

// AddLiveness records a bounded wait after the final heal.
func (h *History) AddLiveness(l Liveness) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.liveness = append(h.liveness, l)
}

// Note adds a line to the report (the fault schedule, say).
func (h *History) Note(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.notes = append(h.notes, fmt.Sprintf(format, args...))
}

// Writes is a copy of every write so far, in invocation order.
func (h *History) Writes() []Write {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.writes)
}

// Polls is a copy of every poll so far.
func (h *History) Polls() []Poll {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.polls)
}

// Commits is a copy of every commit so far.
func (h *History) Commits() []Commit {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.commits)
}

// Counts are the history's operations by kind and outcome, for progress
// waits and logs.
type Counts struct {
	Writes, OK, Failed, Indeterminate, Pending int
	Polls, Commits, Rebalances                 int
}

// Counts counts the operations so far.
func (h *History) Counts() Counts {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := Counts{Writes: len(h.writes), Polls: len(h.polls), Commits: len(h.commits), Rebalances: len(h.rebalances)}
	for i := range h.writes {
		switch h.writes[i].Outcome {
		case OK:
			c.OK++
		case Failed:
			c.Failed++
		case Indeterminate:
			c.Indeterminate++
		default:
			c.Pending++
		}
	}
	return c
}

func (c Counts) String() string {
	return fmt.Sprintf("%d writes (%d ok, %d failed, %d indeterminate, %d pending), %d polls, %d commits, %d rebalances",
		c.Writes, c.OK, c.Failed, c.Indeterminate, c.Pending, c.Polls, c.Commits, c.Rebalances)
}

// Locate lists where value was found by the drains and in the replicas'
// files ("drain via ...: t-0@12", "replica broker-1: t-0@12"), for tests
// that assert a write is absent.
func (h *History) Locate(value string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, d := range h.drains {
		for _, p := range sortedPartitions(d.Partitions) {
			for _, r := range d.Partitions[p].Records {
				if r.Value == value && !r.Control {
					out = append(out, fmt.Sprintf("%s: %s-%d@%d", d.Source, d.Topic, p, r.Offset))
				}
			}
		}
	}
	for _, rl := range h.replicas {
		for _, r := range rl.Records {
			if r.Value == value && !r.Control {
				out = append(out, fmt.Sprintf("replica %s: %s-%d@%d", rl.Name, rl.Topic, rl.Partition, r.Offset))
			}
		}
	}
	return out
}
