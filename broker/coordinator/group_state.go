package coordinator

import (
	"bytes"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupState is a classic group's state, named as Kafka reports it.
type groupState uint8

const (
	groupStateEmpty groupState = iota
	groupStatePreparing
	groupStateCompleting
	groupStateStable
	groupStateDead
)

func (s groupState) String() string {
	switch s {
	case groupStateEmpty:
		return "Empty"
	case groupStatePreparing:
		return "PreparingRebalance"
	case groupStateCompleting:
		return "CompletingRebalance"
	case groupStateStable:
		return "Stable"
	default:
		return "Dead"
	}
}

// group is one consumer group. Every method whose name ends in Locked needs mu
// held. Invariants, kept by those methods:
//   - join waiters exist only in PreparingRebalance, sync waiters only in
//     CompletingRebalance;
//   - Empty (and Dead) means no members; the leader is a member or "";
//   - static maps each group.instance.id to its member, and only members;
//   - the members share at least one protocol (checked on every join).
type group struct {
	gs *Groups // config, clock, logger, callback queue
	id string

	mu           sync.Mutex
	state        groupState
	deadCode     int16 // what calls that find the group Dead answer
	protocolType string
	protocol     string // the current generation's selected protocol; "" when Empty
	generation   int32
	leader       string

	members []*member            // in join order: the order responses and Describe use
	byID    map[string]*member   // the same members by id
	static  map[string]string    // group.instance.id -> member id
	pending map[string]time.Time // MEMBER_ID_REQUIRED ids not yet rejoined -> expiry

	// PreparingRebalance: when the join phase ends regardless of who joined.
	joinDeadline     time.Time
	initial          bool          // in the initial-delay phase of an Empty group
	initialRemaining time.Duration // how far the initial delay may still be extended
	newMemberAdded   bool          // a new member joined during the initial delay

	// CompletingRebalance and Stable: members that have not sent SyncGroup
	// for this generation, and when they are removed for it.
	pendingSync  map[string]bool
	syncDeadline time.Time
}

func groupNew(gs *Groups, id string) *group {
	return &group{
		gs:      gs,
		id:      id,
		byID:    make(map[string]*member),
		static:  make(map[string]string),
		pending: make(map[string]time.Time),
	}
}

func (grp *group) now() time.Time { return grp.gs.cfg.Now() }

// killLocked marks the group Dead and fails every waiting call with code.
func (grp *group) killLocked(code int16) {
	for _, m := range grp.members {
		m.failJoinLocked(code, m.id)
		m.failSyncLocked(code)
	}
	grp.state = groupStateDead
	grp.deadCode = code
}

// validateMemberLocked is Kafka's validateCurrentMember: with a
// group.instance.id, the instance must be known (else UNKNOWN_MEMBER_ID) and
// mapped to memberID (else FENCED_INSTANCE_ID: a newer instance took over);
// without one, memberID must be a member.
func (grp *group) validateMemberLocked(memberID, instanceID string) int16 {
	if instanceID != "" {
		cur, ok := grp.static[instanceID]
		if !ok {
			return kerr.UnknownMemberID.Code
		}
		if cur != memberID {
			return kerr.FencedInstanceID.Code
		}
		return 0
	}
	if grp.byID[memberID] == nil {
		return kerr.UnknownMemberID.Code
	}
	return 0
}

// supportsLocked reports whether a member offering protocolType and protocols
// may join: an Empty group takes any non-empty type and protocol list;
// otherwise the type must be the group's and at least one protocol must be
// offered by every other member. exclude is the joining member's own id when it
// is already a member, so a member may switch to protocols the rest support
// (Kafka counts the member's old protocols too and refuses that).
func (grp *group) supportsLocked(protocolType string, protocols []Protocol, exclude string) bool {
	if len(protocols) == 0 {
		return false
	}
	if grp.state == groupStateEmpty {
		return protocolType != ""
	}
	if protocolType != grp.protocolType {
		return false
	}
	for _, p := range protocols {
		all := true
		for _, m := range grp.members {
			if m.id == exclude {
				continue
			}
			if _, ok := m.metadata(p.Name); !ok {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// selectProtocolLocked is Kafka's selectProtocol: among the protocols every
// member offers, each member votes for its most preferred one, and the most
// votes win. Ties, which Kafka breaks arbitrarily, go to the protocol the
// leader prefers.
func (grp *group) selectProtocolLocked() string {
	if len(grp.members) == 0 {
		return ""
	}
	candidates := make(map[string]bool)
	for _, p := range grp.members[0].protocols {
		candidates[p.Name] = true
	}
	for _, m := range grp.members[1:] {
		for name := range candidates {
			if _, ok := m.metadata(name); !ok {
				delete(candidates, name)
			}
		}
	}
	votes := make(map[string]int)
	for _, m := range grp.members {
		votes[m.vote(candidates)]++
	}
	order := grp.members[0].protocols
	if l := grp.byID[grp.leader]; l != nil {
		order = l.protocols
	}
	best, bestVotes := "", 0
	for _, p := range order {
		if n := votes[p.Name]; candidates[p.Name] && n > bestVotes {
			best, bestVotes = p.Name, n
		}
	}
	return best
}

// maxRebalanceTimeoutLocked is the group's rebalance timeout: the largest any
// member asked for.
func (grp *group) maxRebalanceTimeoutLocked() time.Duration {
	var d time.Duration
	for _, m := range grp.members {
		d = max(d, m.rebalanceTimeout)
	}
	return d
}

// addMemberLocked adds a new member waiting in JoinGroup (Kafka's
// addMemberAndRebalance) and starts or advances the join phase.
func (grp *group) addMemberLocked(id string, j *groupJoinRequest, w *memberJoinWaiter) {
	now := grp.now()
	m := &member{
		id:               id,
		instanceID:       j.instanceID,
		clientID:         j.clientID,
		clientHost:       j.clientHost,
		sessionTimeout:   j.session,
		rebalanceTimeout: j.rebalance,
		protocols:        j.protocols,
		deadline:         now.Add(j.session),
		isNew:            true,
		newDeadline:      now.Add(memberNewJoinTimeout),
		join:             w,
	}
	w.m = m
	if grp.state == groupStatePreparing && grp.generation == 0 {
		grp.newMemberAdded = true
	}
	if len(grp.members) == 0 {
		grp.protocolType = j.protocolType
	}
	grp.members = append(grp.members, m)
	grp.byID[id] = m
	if grp.leader == "" {
		grp.leader = id
	}
	if m.instanceID != "" {
		grp.static[m.instanceID] = id
	}
	grp.maybePrepareRebalanceLocked("new member joined")
	grp.checkJoinLocked()
}

// updateMemberLocked records a rejoining member's protocols and timeouts and
// parks its JoinGroup. An older JoinGroup of the same member still waiting
// (the client retried) is answered REBALANCE_IN_PROGRESS so its goroutine
// returns; Kafka silently drops it.
func (grp *group) updateMemberLocked(m *member, j *groupJoinRequest, w *memberJoinWaiter) {
	if m.join != nil && m.join != w {
		m.failJoinLocked(kerr.RebalanceInProgress.Code, m.id)
	}
	m.protocols = j.protocols
	m.sessionTimeout = j.session
	m.rebalanceTimeout = j.rebalance
	m.join = w
	w.m = m
}

// removeMemberLocked drops a member, answering any call it has waiting with
// code. The caller then calls afterRemoveLocked (once, after a batch).
func (grp *group) removeMemberLocked(m *member, code int16) {
	m.failJoinLocked(code, "")
	m.failSyncLocked(code)
	grp.members = slices.DeleteFunc(grp.members, func(x *member) bool { return x == m })
	delete(grp.byID, m.id)
	if m.instanceID != "" && grp.static[m.instanceID] == m.id {
		delete(grp.static, m.instanceID)
	}
	delete(grp.pendingSync, m.id)
	if grp.leader == m.id {
		grp.leader = ""
		if len(grp.members) > 0 {
			grp.leader = grp.members[0].id
		}
	}
}

// afterRemoveLocked reacts to members having left (Kafka's
// removeMemberAndUpdateGroup): a settled group rebalances, a join phase
// checks whether everyone left has now joined.
func (grp *group) afterRemoveLocked(reason string) {
	switch grp.state {
	case groupStateStable, groupStateCompleting:
		grp.prepareRebalanceLocked(reason)
		grp.checkJoinLocked()
	case groupStatePreparing:
		grp.checkJoinLocked()
	}
}

func (grp *group) maybePrepareRebalanceLocked(reason string) {
	switch grp.state {
	case groupStateEmpty, groupStateStable, groupStateCompleting:
		grp.prepareRebalanceLocked(reason)
	}
}

// prepareRebalanceLocked starts a join phase. Members waiting in SyncGroup
// are told REBALANCE_IN_PROGRESS (they rejoin); the phase ends when every
// member and pending member has joined, or at the rebalance timeout. An Empty
// group instead waits out the initial rebalance delay.
func (grp *group) prepareRebalanceLocked(reason string) {
	if grp.state == groupStateCompleting {
		for _, m := range grp.members {
			m.assignment = nil
			m.failSyncLocked(kerr.RebalanceInProgress.Code)
		}
	}
	grp.pendingSync = nil
	now := grp.now()
	timeout := grp.maxRebalanceTimeoutLocked()
	delay := grp.gs.cfg.InitialRebalanceDelay
	grp.initial = grp.state == groupStateEmpty && delay > 0
	grp.newMemberAdded = false
	if grp.initial {
		grp.joinDeadline = now.Add(delay)
		grp.initialRemaining = max(timeout-delay, 0)
	} else {
		grp.joinDeadline = now.Add(timeout)
	}
	grp.gs.log.Info("group rebalance", "group", grp.id, "generation", grp.generation,
		"state", grp.state.String(), "members", len(grp.members), "reason", reason)
	grp.state = groupStatePreparing
}

// checkJoinLocked ends the join phase early once every member and every
// pending member has joined (not during the initial delay, which only the
// clock ends).
func (grp *group) checkJoinLocked() {
	if grp.state != groupStatePreparing || grp.initial || len(grp.pending) > 0 {
		return
	}
	for _, m := range grp.members {
		if m.join == nil {
			return
		}
	}
	grp.completeJoinLocked()
}

// completeJoinLocked ends the join phase (Kafka's onCompleteJoin): dynamic
// members that did not rejoin are removed (static ones stay until their
// session expires), a leader that did not rejoin is replaced by one that did,
// and the next generation starts: CompletingRebalance with the selected
// protocol, or Empty when nobody is left.
func (grp *group) completeJoinLocked() {
	for _, m := range slices.Clone(grp.members) {
		if m.join == nil && m.instanceID == "" {
			grp.removeMemberLocked(m, kerr.UnknownMemberID.Code)
		}
	}
	now := grp.now()
	if !grp.electJoinedLeaderLocked() && len(grp.members) > 0 {
		// Only static members that have not rejoined are left: wait another
		// rebalance timeout, until they rejoin or their sessions expire.
		grp.initial = false
		grp.joinDeadline = now.Add(grp.maxRebalanceTimeoutLocked())
		return
	}
	grp.generation++
	grp.initial = false
	if len(grp.members) == 0 {
		grp.state = groupStateEmpty
		grp.protocol = ""
		grp.leader = ""
		grp.pendingSync = nil
		grp.gs.log.Info("group empty", "group", grp.id, "generation", grp.generation)
		grp.gs.emit(groupEvent{kind: groupEventEmpty, snap: grp.snapshotLocked()})
		return
	}
	grp.state = groupStateCompleting
	if grp.gs.cfg.OnRebalance != nil {
		grp.gs.cfg.OnRebalance(false)
	}
	grp.protocol = grp.selectProtocolLocked()
	grp.pendingSync = make(map[string]bool, len(grp.members))
	grp.syncDeadline = now.Add(grp.maxRebalanceTimeoutLocked())
	grp.gs.log.Info("group generation", "group", grp.id, "generation", grp.generation,
		"protocol", grp.protocol, "leader", grp.leader, "members", len(grp.members))
	for _, m := range grp.members {
		grp.pendingSync[m.id] = true
		if m.join != nil {
			m.answerJoinLocked(grp.joinResponseLocked(m, m.join.version, true))
		}
		m.deadline = now.Add(m.sessionTimeout)
		m.isNew = false
	}
}

// electJoinedLeaderLocked keeps the leader if it rejoined, else makes the
// first member that did the leader. False means no member rejoined.
func (grp *group) electJoinedLeaderLocked() bool {
	if l := grp.byID[grp.leader]; l == nil {
		return false
	} else if l.join != nil {
		return true
	}
	for _, m := range grp.members {
		if m.join != nil {
			grp.leader = m.id
			return true
		}
	}
	return false
}

// joinResponseLocked is a successful JoinGroup response for m in the current
// generation. The leader gets every member's metadata for the selected
// protocol when withMembers is set; others get no member list.
func (grp *group) joinResponseLocked(m *member, version int16, withMembers bool) *kmsg.JoinGroupResponse {
	resp := kmsg.NewPtrJoinGroupResponse()
	resp.Version = version
	resp.Generation = grp.generation
	pt, p := grp.protocolType, grp.protocol
	resp.ProtocolType = &pt
	resp.Protocol = &p
	resp.LeaderID = grp.leader
	resp.MemberID = m.id
	if withMembers && m.id == grp.leader {
		resp.Members = grp.memberMetadataLocked()
	}
	return resp
}

func (grp *group) memberMetadataLocked() []kmsg.JoinGroupResponseMember {
	out := make([]kmsg.JoinGroupResponseMember, 0, len(grp.members))
	for _, m := range grp.members {
		jm := kmsg.NewJoinGroupResponseMember()
		jm.MemberID = m.id
		jm.InstanceID = m.instancePtr()
		jm.ProtocolMetadata, _ = m.metadata(grp.protocol)
		out = append(out, jm)
	}
	return out
}

// completeSyncLocked stores the leader's assignment (Kafka's
// setAndPropagateAssignment): entries for non-members are ignored, members
// without one get an empty assignment, waiting SyncGroups are answered, and
// the group becomes Stable.
func (grp *group) completeSyncLocked(assignments []kmsg.SyncGroupRequestGroupAssignment) {
	byMember := make(map[string][]byte, len(assignments))
	for _, a := range assignments {
		if grp.byID[a.MemberID] != nil {
			byMember[a.MemberID] = bytes.Clone(a.MemberAssignment)
		}
	}
	now := grp.now()
	for _, m := range grp.members {
		m.assignment = byMember[m.id]
		if m.assignment == nil {
			m.assignment = []byte{}
		}
		if m.sync != nil {
			m.sync.ch <- grp.syncResponseLocked(m, m.sync.version)
			m.sync = nil
			m.deadline = now.Add(m.sessionTimeout)
		}
	}
	grp.state = groupStateStable
	if grp.gs.cfg.OnRebalance != nil {
		grp.gs.cfg.OnRebalance(true)
	}
	grp.gs.log.Info("group stable", "group", grp.id, "generation", grp.generation, "members", len(grp.members))
	grp.gs.emit(groupEvent{kind: groupEventStable, snap: grp.snapshotLocked()})
}

func (grp *group) syncResponseLocked(m *member, version int16) *kmsg.SyncGroupResponse {
	resp := kmsg.NewPtrSyncGroupResponse()
	resp.Version = version
	pt, p := grp.protocolType, grp.protocol
	resp.ProtocolType = &pt
	resp.Protocol = &p
	resp.MemberAssignment = m.assignment
	return resp
}

// tickLocked applies the clock to the group; see Groups.Tick.
func (grp *group) tickLocked(now time.Time) {
	for id, exp := range grp.pending {
		if !now.Before(exp) {
			delete(grp.pending, id)
		}
	}
	var expired bool
	for _, m := range slices.Clone(grp.members) {
		if !grp.keepAliveLocked(m, now) {
			grp.gs.log.Info("group member expired", "group", grp.id, "member_id", m.id, "instance_id", m.instanceID)
			grp.removeMemberLocked(m, kerr.UnknownMemberID.Code)
			expired = true
		}
	}
	if expired {
		grp.afterRemoveLocked("member session expired")
	}
	if grp.state == groupStatePreparing && !now.Before(grp.joinDeadline) {
		if grp.initial && grp.newMemberAdded && grp.initialRemaining > 0 {
			d := min(grp.gs.cfg.InitialRebalanceDelay, grp.initialRemaining)
			grp.newMemberAdded = false
			grp.initialRemaining -= d
			grp.joinDeadline = now.Add(d)
		} else {
			grp.completeJoinLocked()
		}
	}
	if (grp.state == groupStateCompleting || grp.state == groupStateStable) &&
		len(grp.pendingSync) > 0 && !now.Before(grp.syncDeadline) {
		for id := range grp.pendingSync {
			if m := grp.byID[id]; m != nil {
				grp.removeMemberLocked(m, kerr.UnknownMemberID.Code)
			}
		}
		grp.pendingSync = nil
		grp.prepareRebalanceLocked("members did not sync in time")
	}
	grp.checkJoinLocked() // pending members may have expired
}

// keepAliveLocked is Kafka's shouldKeepAlive: a member waiting in JoinGroup
// lives (a new one only up to memberNewJoinTimeout), one waiting in SyncGroup
// lives, any other lives until its session deadline.
func (grp *group) keepAliveLocked(m *member, now time.Time) bool {
	switch {
	case m.join != nil:
		return !m.isNew || now.Before(m.newDeadline)
	case m.sync != nil:
		return true
	default:
		return now.Before(m.deadline)
	}
}

// groupJoinError is an error JoinGroup response: generation -1, no protocol.
func groupJoinError(version, code int16, memberID string) *kmsg.JoinGroupResponse {
	resp := kmsg.NewPtrJoinGroupResponse()
	resp.Version = version
	resp.ErrorCode = code
	resp.MemberID = memberID
	return resp
}
