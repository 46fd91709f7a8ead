package broker

// ElectLeaders (key 43), v0-2.
//
// PREFERRED (ElectionType 0; v0 has no ElectionType and means it): for
// each partition asked for (every partition of every topic when Topics is
// null), ELECTION_NOT_NEEDED when its published leader is already the
// preferred replica (the first of its replica list); otherwise the broker
// that leads it hands leadership to the preferred replica when that one is
// caught up (acknowledged recently and within a few entries of the
// leader's log), else PREFERRED_LEADER_NOT_AVAILABLE. The request may
// arrive at any broker (kadm sends it to the controller, the metadata
// leader): partitions led elsewhere are forwarded to their leader's broker
// over the Raft transport (electMethod). The answer waits, within
// TimeoutMillis, until this broker's metadata names the preferred replica
// as leader, so a Metadata request right after it shows the new leaders;
// past the timeout a moved partition answers REQUEST_TIMED_OUT.
//
// UNCLEAN (ElectionType 1): Raft never elects a replica that may lack
// committed entries, so there is no unclean election: a partition with a
// leader answers ELECTION_NOT_NEEDED, one without answers
// ELIGIBLE_LEADERS_NOT_AVAILABLE (see ErrUncleanElection). Another
// election type is INVALID_REQUEST.
//
// Unknown topics and partitions answer UNKNOWN_TOPIC_OR_PARTITION. Like the
// other admin APIs here there are no ACLs yet, so
// CLUSTER_AUTHORIZATION_FAILED is never answered; v0 has no top-level
// ErrorCode, so a request-level error goes to every partition there.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/protocol"
	"github.com/varvelog/varve/replication"
)

// electMethod asks a partition leader's broker to hand the leadership of
// the partitions listed (an electRequest) to their preferred replicas; the
// answer is an electReply.
const electMethod = "partition.elect/v1"

// electPartition names one partition, on the wire and as a map key.
type electPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

type electRequest struct {
	// TimeoutMs bounds the leader's work: a Call's deadline does not
	// cross the wire.
	TimeoutMs  int64            `json:"timeout_ms"`
	Partitions []electPartition `json:"partitions"`
}

type electReply struct {
	Results []electResult `json:"results"`
}

// electResult is one partition's outcome on the wire. The error is sent
// by kind so that the asking broker maps it to a Kafka code through
// errorCode like its own (errors.go stays the one place codes are chosen).
type electResult struct {
	electPartition
	ErrKind string `json:"err_kind,omitempty"`
	ErrMsg  string `json:"err_msg,omitempty"`
	Leader  int32  `json:"leader,omitempty"` // not_leader: whom the replica believes leads
	Epoch   int32  `json:"epoch,omitempty"`
}

// electErrors are the sentinels an electResult carries by name.
var electErrors = map[string]error{
	"not_needed":            ErrElectionNotNeeded,
	"preferred_unavailable": ErrPreferredLeaderNotAvailable,
	"unknown":               ErrUnknownTopic,
	"no_leader":             ErrLeaderNotAvailable,
	"shutting_down":         ErrClusterShuttingDown,
}

func toElectResult(p electPartition, err error) electResult {
	res := electResult{electPartition: p}
	if err == nil {
		return res
	}
	res.ErrKind, res.ErrMsg = "other", err.Error()
	var nl *replication.NotLeaderError
	if errors.As(err, &nl) {
		res.ErrKind, res.Leader, res.Epoch = "not_leader", nl.Leader, nl.Epoch
		return res
	}
	for k, e := range electErrors {
		if errors.Is(err, e) {
			res.ErrKind = k
		}
	}
	return res
}

func (res electResult) err() error {
	switch res.ErrKind {
	case "":
		return nil
	case "not_leader":
		return &replication.NotLeaderError{Leader: res.Leader, Epoch: res.Epoch}
	}
	if e, ok := electErrors[res.ErrKind]; ok {
		return fmt.Errorf("%w (%s)", e, res.ErrMsg)
	}
	return errors.New(res.ErrMsg)
}

func handleElectLeaders(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.ElectLeadersRequest)
	resp := r.ResponseKind().(*kmsg.ElectLeadersResponse)
	ctx, cancel := requestContext(ctx, r.TimeoutMillis)
	defer cancel()
	// A shutdown waits for requests in flight: stop waiting on elections
	// then, as long polls do.
	defer context.AfterFunc(b.ctx, cancel)()
	parts := b.electTargets(r.Topics)
	var results map[electPartition]error
	switch r.ElectionType { // v0 leaves it 0: preferred
	case 0:
		results = b.electPreferred(ctx, parts)
	case 1:
		results = b.electUnclean(parts)
	default:
		err := fmt.Errorf("%w: election type %d", ErrInvalidRequest, r.ElectionType)
		resp.ErrorCode = errorCode(err)
		results = map[electPartition]error{}
		for _, p := range parts {
			results[p] = err
		}
	}
	byTopic := map[string]int{}
	for _, p := range parts {
		i, ok := byTopic[p.Topic]
		if !ok {
			i = len(resp.Topics)
			byTopic[p.Topic] = i
			rt := kmsg.NewElectLeadersResponseTopic()
			rt.Topic = p.Topic
			resp.Topics = append(resp.Topics, rt)
		}
		rp := kmsg.NewElectLeadersResponseTopicPartition()
		rp.Partition = p.Partition
		rp.ErrorCode, rp.ErrorMessage = errorFields(results[p])
		resp.Topics[i].Partitions = append(resp.Topics[i].Partitions, rp)
	}
	// Topics named with no partitions still get their entry.
	for _, rt := range r.Topics {
		if _, ok := byTopic[rt.Topic]; !ok {
			byTopic[rt.Topic] = len(resp.Topics)
			t := kmsg.NewElectLeadersResponseTopic()
			t.Topic = rt.Topic
			resp.Topics = append(resp.Topics, t)
		}
	}
	return resp, nil
}

// electTargets lists the partitions a request names, in its order without
// repeats; a null list names every partition of every topic the metadata
// holds, by topic name.
func (b *Broker) electTargets(topics []kmsg.ElectLeadersRequestTopic) []electPartition {
	var out []electPartition
	if topics == nil {
		st := b.meta.State()
		names := make([]string, 0, len(st.Topics))
		for n := range st.Topics {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			for i := range st.Topics[n].Partitions {
				out = append(out, electPartition{Topic: n, Partition: int32(i)})
			}
		}
		return out
	}
	seen := map[electPartition]bool{}
	for _, rt := range topics {
		for _, p := range rt.Partitions {
			ep := electPartition{Topic: rt.Topic, Partition: p}
			if !seen[ep] {
				seen[ep] = true
				out = append(out, ep)
			}
		}
	}
	return out
}

// metaPartition looks a partition up in a metadata state.
func metaPartition(st *metadata.State, p electPartition) (metadata.Partition, bool) {
	mt, ok := st.Topics[p.Topic]
	if !ok || p.Partition < 0 || int(p.Partition) >= len(mt.Partitions) {
		return metadata.Partition{}, false
	}
	mp := mt.Partitions[p.Partition]
	return mp, len(mp.Replicas) > 0
}

// electUnclean answers an UNCLEAN election: there is none under Raft.
func (b *Broker) electUnclean(parts []electPartition) map[electPartition]error {
	st := b.meta.State()
	out := make(map[electPartition]error, len(parts))
	for _, p := range parts {
		mp, ok := metaPartition(st, p)
		switch {
		case !ok:
			out[p] = fmt.Errorf("%w: %s-%d", ErrUnknownTopic, p.Topic, p.Partition)
		case mp.Leader >= 0:
			out[p] = fmt.Errorf("%w: %s-%d is led by broker %d", ErrElectionNotNeeded, p.Topic, p.Partition, mp.Leader)
		default:
			out[p] = ErrUncleanElection
		}
	}
	return out
}

// electRetriable reports whether an outcome may change on a later round:
// the leader moved or is being elected, or its broker did not answer.
func electRetriable(err error) bool {
	var nl *replication.NotLeaderError
	if errors.As(err, &nl) {
		return true
	}
	for _, final := range []error{ErrElectionNotNeeded, ErrPreferredLeaderNotAvailable, ErrUnknownTopic, ErrInvalidRequest} {
		if errors.Is(err, final) {
			return false
		}
	}
	return true
}

// electPreferred runs preferred-replica elections until each partition has
// a final answer or ctx ends. Each round reads the metadata, sends every
// partition not led by its preferred replica to its leader's broker (this
// one included), and waits for the metadata to change: a moved partition
// is done once the metadata names its preferred replica as leader. A
// partition whose leader moved meanwhile, or has none yet, is tried again.
func (b *Broker) electPreferred(ctx context.Context, parts []electPartition) map[electPartition]error {
	type state struct {
		err       error
		final     bool
		moved     bool  // a leader handed it toward the preferred replica
		from      int32 // that leader, and its epoch then
		fromEpoch int32
	}
	ps := make(map[electPartition]*state, len(parts))
	for _, p := range parts {
		ps[p] = &state{}
	}
	backoff := 20 * time.Millisecond
	var st *metadata.State
	for {
		changed := b.meta.Changed()
		st = b.meta.State()
		byLeader := map[int32][]electPartition{}
		pending := 0
		for _, p := range parts {
			s := ps[p]
			if s.final {
				continue
			}
			mp, ok := metaPartition(st, p)
			pref := int32(-1)
			if ok {
				pref = mp.Replicas[0]
			}
			switch {
			case !ok:
				s.err, s.final = fmt.Errorf("%w: %s-%d", ErrUnknownTopic, p.Topic, p.Partition), true
			case mp.Leader == pref && s.moved:
				s.err, s.final = nil, true
			case mp.Leader == pref:
				s.err, s.final = fmt.Errorf("%w: %s-%d is led by its preferred replica, broker %d", ErrElectionNotNeeded, p.Topic, p.Partition, pref), true
			case mp.Leader < 0:
				s.err = fmt.Errorf("%w: %s-%d", ErrLeaderNotAvailable, p.Topic, p.Partition)
				pending++
			case s.moved && mp.Leader == s.from && mp.LeaderEpoch == s.fromEpoch:
				pending++ // handed off; the new leader is not published yet
			default:
				byLeader[mp.Leader] = append(byLeader[mp.Leader], p)
				s.from, s.fromEpoch = mp.Leader, mp.LeaderEpoch
				pending++
			}
		}
		if pending == 0 {
			break
		}
		for p, err := range b.electOnLeaders(ctx, byLeader) {
			s := ps[p]
			switch {
			case err == nil:
				s.moved = true
			case errors.Is(err, ErrElectionNotNeeded) && s.moved:
				// Already handed to the preferred replica by an earlier round.
			case electRetriable(err):
				s.err = err
			default:
				s.err, s.final = err, true
			}
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-time.After(backoff):
		}
		if ctx.Err() != nil {
			break
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
	out := make(map[electPartition]error, len(parts))
	for _, p := range parts {
		s := ps[p]
		switch {
		case s.final:
			out[p] = s.err
		case s.moved:
			out[p] = fmt.Errorf("leadership of %s-%d was handed to its preferred replica, whose leadership was not published in time: %w", p.Topic, p.Partition, context.DeadlineExceeded)
		case errors.Is(s.err, ErrLeaderNotAvailable):
			out[p] = s.err
		case b.ctx.Err() != nil:
			out[p] = fmt.Errorf("%w: %s-%d not elected", ErrClusterShuttingDown, p.Topic, p.Partition)
		default:
			out[p] = fmt.Errorf("no answer from the leader of %s-%d in time (%v): %w", p.Topic, p.Partition, s.err, context.DeadlineExceeded)
		}
	}
	b.waitViewLeaders(ctx, movedLeaders(st, parts, func(p electPartition) bool { return ps[p].final && ps[p].moved && ps[p].err == nil }))
	return out
}

// movedLeaders maps the partitions that pick selects to the leader st names.
func movedLeaders(st *metadata.State, parts []electPartition, pick func(electPartition) bool) map[electPartition]int32 {
	want := map[electPartition]int32{}
	for _, p := range parts {
		if mp, ok := metaPartition(st, p); ok && pick(p) {
			want[p] = mp.Leader
		}
	}
	return want
}

// waitViewLeaders waits until the handlers' view (what Metadata answers
// from) names the given leaders, or ctx ends. It compares content, not
// indexes: a metadata command that changes nothing still advances the
// applied index but does not wake the reconciler, so waiting for an index
// could wait for the next unrelated change.
func (b *Broker) waitViewLeaders(ctx context.Context, want map[electPartition]int32) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		done := true
		for p, leader := range want {
			if r := b.lookupTopic(p.Topic).partition(p.Partition); r != nil && r.part.Leader != leader {
				done = false
				break
			}
		}
		if done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-b.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// electOnLeaders asks each leader's broker, in parallel, to hand its
// partitions to their preferred replicas, and gathers the outcomes.
func (b *Broker) electOnLeaders(ctx context.Context, byLeader map[int32][]electPartition) map[electPartition]error {
	out := map[electPartition]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for leader, parts := range byLeader {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res map[electPartition]error
			if leader == b.cfg.NodeID {
				res = b.electLocal(ctx, parts)
			} else {
				res = b.electRemote(ctx, leader, parts)
			}
			mu.Lock()
			defer mu.Unlock()
			for p, err := range res {
				out[p] = err
			}
		}()
	}
	wg.Wait()
	return out
}

// electRemote forwards partitions to the broker that leads them.
func (b *Broker) electRemote(ctx context.Context, leader int32, parts []electPartition) map[electPartition]error {
	out := make(map[electPartition]error, len(parts))
	fail := func(err error) map[electPartition]error {
		for _, p := range parts {
			out[p] = err
		}
		return out
	}
	addr, ok := b.raftAddr(leader)
	if !ok {
		return fail(fmt.Errorf("broker: leader %d has no raft address", leader))
	}
	// The leader gets most of what is left, so its answer arrives before
	// this broker stops waiting for it.
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl) * 9 / 10
	}
	body, err := json.Marshal(electRequest{TimeoutMs: max(timeout.Milliseconds(), 1), Partitions: parts})
	if err != nil {
		return fail(err)
	}
	raw, err := b.mux.Call(ctx, raft.ServerAddress(addr), electMethod, body)
	if err != nil {
		return fail(fmt.Errorf("broker: forwarding an election to broker %d: %w", leader, err))
	}
	var rep electReply
	if err := json.Unmarshal(raw, &rep); err != nil {
		return fail(fmt.Errorf("broker: bad election reply from broker %d: %w", leader, err))
	}
	for _, res := range rep.Results {
		out[res.electPartition] = res.err()
	}
	for _, p := range parts {
		if _, ok := out[p]; !ok {
			out[p] = fmt.Errorf("broker: broker %d did not answer for %s-%d", leader, p.Topic, p.Partition)
		}
	}
	return out
}

// handleElectCall serves electMethod: another broker forwards partitions
// it believes this broker leads.
func (b *Broker) handleElectCall(ctx context.Context, body []byte) ([]byte, error) {
	if b.ctx.Err() != nil {
		return nil, ErrClusterShuttingDown
	}
	var req electRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("broker: bad election request: %w", err)
	}
	timeout := min(max(time.Duration(req.TimeoutMs)*time.Millisecond, time.Millisecond), 5*time.Minute)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := b.electLocal(ctx, req.Partitions)
	rep := electReply{Results: make([]electResult, 0, len(req.Partitions))}
	for _, p := range req.Partitions {
		rep.Results = append(rep.Results, toElectResult(p, res[p]))
	}
	return json.Marshal(rep)
}

// electLocal hands the partitions this broker leads to their preferred
// replicas, transferParallel at a time.
func (b *Broker) electLocal(ctx context.Context, parts []electPartition) map[electPartition]error {
	errs := make([]error, len(parts))
	forEachBounded(len(parts), transferParallel, func(i int) {
		errs[i] = b.electOne(ctx, parts[i])
	})
	out := make(map[electPartition]error, len(parts))
	for i, p := range parts {
		out[p] = errs[i]
	}
	return out
}

// electOne hands one partition that this broker leads to its preferred
// replica, if that replica is caught up. It returns once this replica has
// stepped down; publishing the new leader is the new leader's job.
func (b *Broker) electOne(ctx context.Context, p electPartition) error {
	r := b.lookupTopic(p.Topic).partition(p.Partition)
	if r == nil || len(r.part.Replicas) == 0 {
		return fmt.Errorf("%w: %s-%d", ErrUnknownTopic, p.Topic, p.Partition)
	}
	if _, err := r.Ready(); err != nil {
		return err // not (or not yet) the leader: the caller asks again
	}
	pref := r.part.Replicas[0]
	if pref == b.cfg.NodeID {
		return fmt.Errorf("%w: %s-%d is led by its preferred replica, broker %d", ErrElectionNotNeeded, p.Topic, p.Partition, pref)
	}
	if slices.Contains(r.part.Learners, pref) {
		return fmt.Errorf("%w: broker %d is still catching up as a non-voter", ErrPreferredLeaderNotAvailable, pref)
	}
	addr, ok := b.raftAddr(pref)
	if !ok {
		return fmt.Errorf("%w: broker %d has no raft address", ErrPreferredLeaderNotAvailable, pref)
	}
	peer := replication.Peer{ID: pref, Addr: addr}
	if err := b.followerCaughtUp(r.g, peer); err != nil {
		return fmt.Errorf("%w: %v", ErrPreferredLeaderNotAvailable, err)
	}
	tctx, cancel := context.WithTimeout(ctx, b.transferTimeout())
	defer cancel()
	if err := b.transferLeadership(tctx, r.g, peer); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: transfer to broker %d failed: %v", ErrPreferredLeaderNotAvailable, pref, err)
	}
	b.logger.Info("moved leadership to the preferred replica on request", "topic", p.Topic, "partition", p.Partition, "to", pref)
	return nil
}
