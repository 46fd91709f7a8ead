package coordinator

// JoinGroup (API key 11), versions 0-9.
//
// v0 has no rebalance timeout (the session timeout is used); v4+ answers the
// first join of a dynamic member with MEMBER_ID_REQUIRED and a member id
// (KIP-394); v5+ carries group.instance.id (static membership, KIP-345); v9+
// tells a restarted static leader to skip assignment (KIP-814).

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupJoinRequest is a JoinGroup request after validation and copying.
type groupJoinRequest struct {
	version      int16
	memberID     string
	instanceID   string
	clientID     string
	clientHost   string
	session      time.Duration
	rebalance    time.Duration
	protocolType string
	protocols    []Protocol
}

// Join handles JoinGroup. It blocks until the member's join completes: the
// join phase ends (every member has joined, or the rebalance timeout or
// initial delay passed, as Tick observes), or at once for an error,
// MEMBER_ID_REQUIRED, or a rejoin that needs no rebalance. clientID and
// clientHost come from the request header and the connection.
//
// If ctx ends first, Join returns REBALANCE_IN_PROGRESS with the member's id
// (clients retry the join with it) and the member counts as not having
// joined: unless it joins again, a dynamic member is removed when the join
// phase ends. Close and Unload answer NOT_COORDINATOR; a member removed while
// waiting (session of a new member, LeaveGroup, fenced static instance) gets
// UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID.
func (g *Groups) Join(ctx context.Context, req *kmsg.JoinGroupRequest, clientID, clientHost string) *kmsg.JoinGroupResponse {
	if req.Group == "" {
		return groupJoinError(req.Version, kerr.InvalidGroupID.Code, req.MemberID)
	}
	j := &groupJoinRequest{
		version:      req.Version,
		memberID:     req.MemberID,
		instanceID:   memberInstance(req.InstanceID),
		clientID:     clientID,
		clientHost:   clientHost,
		session:      time.Duration(req.SessionTimeoutMillis) * time.Millisecond,
		rebalance:    time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond,
		protocolType: req.ProtocolType,
	}
	if req.Version < 5 {
		j.instanceID = ""
	}
	if req.Version == 0 || j.rebalance <= 0 {
		j.rebalance = j.session
	}
	if j.session < g.cfg.MinSessionTimeout || j.session > g.cfg.MaxSessionTimeout {
		return groupJoinError(req.Version, kerr.InvalidSessionTimeout.Code, req.MemberID)
	}
	j.protocols = memberProtocols(req.Protocols)

	grp, code := g.get(req.Group, req.MemberID == "")
	if code != 0 {
		return groupJoinError(req.Version, code, req.MemberID)
	}
	if grp == nil {
		return groupJoinError(req.Version, kerr.UnknownMemberID.Code, req.MemberID)
	}
	w := newMemberJoinWaiter(req.Version)
	grp.mu.Lock()
	resp := grp.joinLocked(j, w)
	grp.mu.Unlock()
	g.deliver()
	if resp != nil {
		return resp
	}
	select {
	case resp := <-w.ch:
		return resp
	case <-ctx.Done():
	}
	grp.mu.Lock()
	defer grp.mu.Unlock()
	select {
	case resp := <-w.ch: // answered while we were taking the lock
		return resp
	default:
	}
	if w.m.join == w { // not answered: every answer clears it under this lock
		w.m.join = nil
	}
	return groupJoinError(req.Version, kerr.RebalanceInProgress.Code, w.m.id)
}

// joinLocked runs a join. It returns the response, or nil when the member now
// waits on w (which may already hold its answer).
func (grp *group) joinLocked(j *groupJoinRequest, w *memberJoinWaiter) *kmsg.JoinGroupResponse {
	if grp.state == groupStateDead {
		return groupJoinError(j.version, grp.deadCode, j.memberID)
	}
	if !grp.acceptLocked(j) {
		// Kafka removes a rejected existing member: with a lowered limit,
		// the last to rejoin are the ones that go.
		delete(grp.pending, j.memberID)
		if m := grp.byID[j.memberID]; m != nil {
			grp.removeMemberLocked(m, kerr.GroupMaxSizeReached.Code)
			grp.afterRemoveLocked("group max size reached")
		}
		return groupJoinError(j.version, kerr.GroupMaxSizeReached.Code, "")
	}
	if j.memberID == "" {
		return grp.joinUnknownLocked(j, w)
	}
	return grp.joinKnownLocked(j, w)
}

// acceptLocked is Kafka's acceptJoiningMember for group.max.size, except
// that a static member replacing its previous instance is always accepted:
// it does not make the group bigger.
func (grp *group) acceptLocked(j *groupJoinRequest) bool {
	limit := grp.gs.cfg.MaxGroupSize
	if limit == 0 {
		return true
	}
	if _, ok := grp.static[j.instanceID]; ok && j.memberID == "" && j.instanceID != "" {
		return true
	}
	m := grp.byID[j.memberID]
	switch grp.state {
	case groupStatePreparing:
		if m != nil && m.join != nil {
			return true
		}
		awaiting := 0
		for _, x := range grp.members {
			if x.join != nil {
				awaiting++
			}
		}
		return awaiting < limit
	case groupStateCompleting, groupStateStable:
		return m != nil || len(grp.members) < limit
	default:
		return true
	}
}

// joinUnknownLocked handles a join without a member id (Kafka's
// doUnknownJoinGroup).
func (grp *group) joinUnknownLocked(j *groupJoinRequest, w *memberJoinWaiter) *kmsg.JoinGroupResponse {
	if !grp.supportsLocked(j.protocolType, j.protocols, "") {
		return groupJoinError(j.version, kerr.InconsistentGroupProtocol.Code, "")
	}
	if j.instanceID != "" {
		if old, ok := grp.static[j.instanceID]; ok {
			return grp.replaceStaticLocked(grp.byID[old], j, w)
		}
		grp.addMemberLocked(memberNewID(j.instanceID), j, w)
		return nil
	}
	id := memberNewID(j.clientID)
	if j.version >= 4 {
		// KIP-394: the member exists only once it rejoins with this id; a
		// join phase waits for it meanwhile, and it expires after its
		// session timeout if it never comes back.
		grp.pending[id] = grp.now().Add(j.session)
		return groupJoinError(j.version, kerr.MemberIDRequired.Code, id)
	}
	grp.addMemberLocked(id, j, w)
	return nil
}

// joinKnownLocked handles a join with a member id (Kafka's
// doCurrentMemberJoinGroup).
func (grp *group) joinKnownLocked(j *groupJoinRequest, w *memberJoinWaiter) *kmsg.JoinGroupResponse {
	if !grp.supportsLocked(j.protocolType, j.protocols, j.memberID) {
		return groupJoinError(j.version, kerr.InconsistentGroupProtocol.Code, j.memberID)
	}
	if _, ok := grp.pending[j.memberID]; ok {
		if j.instanceID != "" {
			// Pending ids are only handed to dynamic members.
			return groupJoinError(j.version, kerr.UnknownMemberID.Code, j.memberID)
		}
		delete(grp.pending, j.memberID)
		grp.addMemberLocked(j.memberID, j, w)
		return nil
	}
	if code := grp.validateMemberLocked(j.memberID, j.instanceID); code != 0 {
		return groupJoinError(j.version, code, j.memberID)
	}
	m := grp.byID[j.memberID]
	switch grp.state {
	case groupStatePreparing:
		grp.updateMemberLocked(m, j, w)
		grp.checkJoinLocked()
		return nil
	case groupStateCompleting:
		if m.matches(j.protocols) {
			// Probably lost its join response: repeat it.
			return grp.joinResponseLocked(m, j.version, true)
		}
	case groupStateStable:
		if m.id != grp.leader && m.matches(j.protocols) {
			// A follower with nothing new: hand back the current generation.
			return grp.joinResponseLocked(m, j.version, false)
		}
		// The leader rejoining forces a rebalance: that is how a leader
		// client reacts to changes the member metadata does not show.
	default:
		return groupJoinError(j.version, kerr.UnknownMemberID.Code, j.memberID)
	}
	grp.updateMemberLocked(m, j, w)
	grp.prepareRebalanceLocked("member rejoined with new metadata or as leader")
	grp.checkJoinLocked()
	return nil
}

// replaceStaticLocked handles a static member rejoining without a member id
// (a restarted instance): it gets a new member id, the old id is fenced
// (its waiting calls get FENCED_INSTANCE_ID), and it keeps its assignment.
// A Stable group does not rebalance if the selected protocol stays, as in
// Kafka; the member then syncs the current generation and gets its old
// assignment back. The member's metadata is not compared: cooperative
// assignors put the partitions a member owns and its generation in it, so a
// restarted instance always sends different bytes, and comparing them would
// make every static restart a rebalance (measured with franz-go). A restarted
// instance with a new subscription keeps its old plan until the next
// rebalance, as in Kafka.
func (grp *group) replaceStaticLocked(m *member, j *groupJoinRequest, w *memberJoinWaiter) *kmsg.JoinGroupResponse {
	oldID, prevLeader := m.id, grp.leader
	newID := memberNewID(j.instanceID)
	m.failJoinLocked(kerr.FencedInstanceID.Code, oldID)
	m.failSyncLocked(kerr.FencedInstanceID.Code)

	delete(grp.byID, oldID)
	m.id = newID
	grp.byID[newID] = m
	grp.static[j.instanceID] = newID
	if grp.leader == oldID {
		grp.leader = newID
	}
	if grp.pendingSync[oldID] {
		delete(grp.pendingSync, oldID)
		grp.pendingSync[newID] = true
	}
	m.clientID, m.clientHost = j.clientID, j.clientHost
	m.protocols, m.sessionTimeout, m.rebalanceTimeout = j.protocols, j.session, j.rebalance
	m.deadline = grp.now().Add(j.session)

	switch grp.state {
	case groupStateStable:
		if _, ok := m.metadata(grp.protocol); ok && grp.selectProtocolLocked() == grp.protocol {
			resp := grp.joinResponseLocked(m, j.version, false)
			if j.version >= 9 {
				if newID == grp.leader {
					resp.SkipAssignment = true
					resp.Members = grp.memberMetadataLocked()
				}
			} else {
				// Before KIP-814 the old leader id is returned, so a
				// restarted leader does not compute an assignment that a
				// Stable group would ignore.
				resp.LeaderID = prevLeader
			}
			grp.gs.emit(groupEvent{kind: groupEventStable, snap: grp.snapshotLocked()})
			return resp
		}
		m.join, w.m = w, m
		grp.prepareRebalanceLocked("static member rejoined with a protocol the group no longer selects")
	case groupStateCompleting:
		// The leader may already have planned for the old member id.
		m.join, w.m = w, m
		grp.prepareRebalanceLocked("static member rejoined during CompletingRebalance")
	case groupStatePreparing:
		m.join, w.m = w, m
	default:
		return groupJoinError(j.version, kerr.UnknownMemberID.Code, "")
	}
	grp.checkJoinLocked()
	return nil
}
