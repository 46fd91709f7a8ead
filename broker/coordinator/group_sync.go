package coordinator

// SyncGroup (API key 14) v0-5, Heartbeat (12) v0-4, LeaveGroup (13) v0-5.
//
// SyncGroup v3+ and Heartbeat v3+ carry group.instance.id; SyncGroup v5+
// carries the protocol type and name, which must match the group's. LeaveGroup
// v0-2 names one member and answers with a top-level error; v3+ takes a batch
// of members, each by member id or (with an empty member id) by
// group.instance.id, and answers per member.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Sync handles SyncGroup. In CompletingRebalance a follower waits for the
// leader's SyncGroup; the leader's assignment is stored, every waiting
// member gets its part, and the group becomes Stable (OnStable fires). In
// Stable any member gets its current assignment at once.
//
// If ctx ends first, Sync returns REBALANCE_IN_PROGRESS (the client
// rejoins); the member stays and must still sync within the rebalance
// timeout. Close and Unload answer NOT_COORDINATOR; a rebalance starting
// meanwhile answers REBALANCE_IN_PROGRESS; a removed member gets
// UNKNOWN_MEMBER_ID and a fenced static instance FENCED_INSTANCE_ID.
func (g *Groups) Sync(ctx context.Context, req *kmsg.SyncGroupRequest) *kmsg.SyncGroupResponse {
	resp := kmsg.NewPtrSyncGroupResponse()
	resp.Version = req.Version
	if req.Group == "" {
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	}
	grp, code := g.get(req.Group, false)
	if code != 0 {
		resp.ErrorCode = code
		return resp
	}
	if grp == nil {
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp
	}
	w := newMemberSyncWaiter(req.Version)
	grp.mu.Lock()
	out, code := grp.syncLocked(req, w)
	grp.mu.Unlock()
	g.deliver()
	if code != 0 {
		resp.ErrorCode = code
		return resp
	}
	if out != nil {
		return out
	}
	select {
	case out := <-w.ch:
		return out
	case <-ctx.Done():
	}
	grp.mu.Lock()
	defer grp.mu.Unlock()
	select {
	case out := <-w.ch:
		return out
	default:
	}
	if w.m.sync == w {
		w.m.sync = nil
	}
	resp.ErrorCode = kerr.RebalanceInProgress.Code
	return resp
}

// syncLocked runs a SyncGroup (Kafka's doSyncGroup). It returns a response,
// an error code, or neither when the member now waits on w.
func (grp *group) syncLocked(req *kmsg.SyncGroupRequest, w *memberSyncWaiter) (*kmsg.SyncGroupResponse, int16) {
	if grp.state == groupStateDead {
		return nil, grp.deadCode
	}
	instanceID := ""
	if req.Version >= 3 {
		instanceID = memberInstance(req.InstanceID)
	}
	if code := grp.validateMemberLocked(req.MemberID, instanceID); code != 0 {
		return nil, code
	}
	if req.Generation != grp.generation {
		return nil, kerr.IllegalGeneration.Code
	}
	if req.Version >= 5 && ((req.ProtocolType != nil && *req.ProtocolType != grp.protocolType) ||
		(req.Protocol != nil && *req.Protocol != grp.protocol)) {
		return nil, kerr.InconsistentGroupProtocol.Code
	}
	m := grp.byID[req.MemberID]
	switch grp.state {
	case groupStatePreparing:
		return nil, kerr.RebalanceInProgress.Code
	case groupStateCompleting:
		if m.sync != nil {
			m.failSyncLocked(kerr.RebalanceInProgress.Code) // an older retry
		}
		m.sync, w.m = w, m
		delete(grp.pendingSync, m.id)
		if m.id == grp.leader {
			grp.completeSyncLocked(req.GroupAssignment)
		}
		return nil, 0
	case groupStateStable:
		delete(grp.pendingSync, m.id)
		m.deadline = grp.now().Add(m.sessionTimeout)
		return grp.syncResponseLocked(m, req.Version), 0
	default: // Empty: unreachable, an Empty group has no members
		return nil, kerr.UnknownMemberID.Code
	}
}

// Heartbeat handles Heartbeat: it resets the member's session deadline and
// answers REBALANCE_IN_PROGRESS during a join phase (the member must rejoin),
// ILLEGAL_GENERATION for another generation, UNKNOWN_MEMBER_ID or
// FENCED_INSTANCE_ID for a member that is not (or no longer) in the group.
func (g *Groups) Heartbeat(req *kmsg.HeartbeatRequest) *kmsg.HeartbeatResponse {
	resp := kmsg.NewPtrHeartbeatResponse()
	resp.Version = req.Version
	resp.ErrorCode = g.heartbeat(req)
	return resp
}

func (g *Groups) heartbeat(req *kmsg.HeartbeatRequest) int16 {
	if req.Group == "" {
		return kerr.InvalidGroupID.Code
	}
	grp, code := g.get(req.Group, false)
	if code != 0 {
		return code
	}
	if grp == nil {
		return kerr.UnknownMemberID.Code
	}
	grp.mu.Lock()
	defer grp.mu.Unlock()
	if grp.state == groupStateDead {
		return grp.deadCode
	}
	instanceID := ""
	if req.Version >= 3 {
		instanceID = memberInstance(req.InstanceID)
	}
	if code := grp.validateMemberLocked(req.MemberID, instanceID); code != 0 {
		return code
	}
	if req.Generation != grp.generation {
		return kerr.IllegalGeneration.Code
	}
	m := grp.byID[req.MemberID]
	m.deadline = grp.now().Add(m.sessionTimeout)
	if grp.state == groupStatePreparing {
		return kerr.RebalanceInProgress.Code
	}
	return 0
}

// Leave handles LeaveGroup. A member leaving a settled group starts a
// rebalance; a group left by everyone becomes Empty once the join phase
// ends. A member waiting in JoinGroup or SyncGroup when it leaves is answered
// UNKNOWN_MEMBER_ID.
func (g *Groups) Leave(req *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	resp := kmsg.NewPtrLeaveGroupResponse()
	resp.Version = req.Version
	leaving := req.Members
	if req.Version < 3 {
		leaving = []kmsg.LeaveGroupRequestMember{{MemberID: req.MemberID}}
	}
	codes, top := g.leave(req.Group, leaving)
	resp.ErrorCode = top
	if req.Version < 3 {
		if top == 0 && len(codes) == 1 {
			resp.ErrorCode = codes[0]
		}
		return resp
	}
	if top != 0 {
		return resp
	}
	for i, l := range leaving {
		rm := kmsg.NewLeaveGroupResponseMember()
		rm.MemberID = l.MemberID
		rm.InstanceID = l.InstanceID
		rm.ErrorCode = codes[i]
		resp.Members = append(resp.Members, rm)
	}
	return resp
}

// leave removes members (Kafka's handleLeaveGroup) and returns a code per
// member, or a top-level code.
func (g *Groups) leave(groupID string, leaving []kmsg.LeaveGroupRequestMember) (codes []int16, top int16) {
	if groupID == "" {
		return nil, kerr.InvalidGroupID.Code
	}
	grp, code := g.get(groupID, false)
	if code != 0 {
		return nil, code
	}
	codes = make([]int16, len(leaving))
	if grp == nil {
		for i := range codes {
			codes[i] = kerr.UnknownMemberID.Code
		}
		return codes, 0
	}
	grp.mu.Lock()
	if grp.state == groupStateDead {
		grp.mu.Unlock()
		return nil, grp.deadCode
	}
	removed := false
	for i, l := range leaving {
		var member bool
		codes[i], member = grp.leaveOneLocked(l.MemberID, memberInstance(l.InstanceID))
		removed = removed || member
	}
	if removed {
		grp.afterRemoveLocked("member left the group")
	} else {
		grp.checkJoinLocked() // a pending member that left no longer holds up a join phase
	}
	grp.mu.Unlock()
	g.deliver()
	return codes, 0
}

// leaveOneLocked removes one member or pending member and returns the
// member's code and whether a (non-pending) member was removed.
func (grp *group) leaveOneLocked(memberID, instanceID string) (int16, bool) {
	if memberID == "" {
		// An administrative removal by group.instance.id.
		cur, ok := grp.static[instanceID]
		if instanceID == "" || !ok {
			return kerr.UnknownMemberID.Code, false
		}
		grp.removeMemberLocked(grp.byID[cur], kerr.UnknownMemberID.Code)
		return 0, true
	}
	if _, ok := grp.pending[memberID]; ok {
		delete(grp.pending, memberID)
		return 0, false
	}
	if code := grp.validateMemberLocked(memberID, instanceID); code != 0 {
		return code, false
	}
	grp.removeMemberLocked(grp.byID[memberID], kerr.UnknownMemberID.Code)
	return 0, true
}
