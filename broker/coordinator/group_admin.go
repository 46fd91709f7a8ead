package coordinator

// DescribeGroups (15) v0-6, ListGroups (16) v0-5, DeleteGroups (42) and the
// group checks of OffsetCommit (8).

import (
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupTypeClassic is what ListGroups v5+ reports for every group here (KIP-848
// "consumer" groups are not implemented).
const groupTypeClassic = "classic"

// Describe handles DescribeGroups, one entry per requested id in request
// order. A Stable group lists its members with their metadata for the
// selected protocol and their assignments; other states list the members
// without either and no protocol, as Kafka does. A group this coordinator does
// not know is reported Dead, with GROUP_ID_NOT_FOUND from v6 (KIP-1043).
// AuthorizedOperations is left unset (no ACLs).
func (g *Groups) Describe(req *kmsg.DescribeGroupsRequest) []kmsg.DescribeGroupsResponseGroup {
	out := make([]kmsg.DescribeGroupsResponseGroup, 0, len(req.Groups))
	for _, id := range req.Groups {
		d := kmsg.NewDescribeGroupsResponseGroup()
		d.Group = id
		d.State = groupStateDead.String()
		grp, code := g.get(id, false)
		switch {
		case code != 0:
			d.ErrorCode = code
		case grp != nil:
			grp.mu.Lock()
			grp.describeLocked(&d)
			grp.mu.Unlock()
		}
		if d.State == groupStateDead.String() && d.ErrorCode == 0 && req.Version >= 6 {
			d.ErrorCode = kerr.GroupIDNotFound.Code
			msg := "Group " + id + " not found."
			d.ErrorMessage = &msg
		}
		out = append(out, d)
	}
	return out
}

func (grp *group) describeLocked(d *kmsg.DescribeGroupsResponseGroup) {
	d.State = grp.state.String()
	if grp.state == groupStateDead {
		return
	}
	d.ProtocolType = grp.protocolType
	stable := grp.state == groupStateStable
	if stable {
		d.Protocol = grp.protocol
	}
	for _, m := range grp.members {
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID = m.id
		dm.InstanceID = m.instancePtr()
		dm.ClientID = m.clientID
		dm.ClientHost = m.clientHost
		if stable {
			dm.ProtocolMetadata, _ = m.metadata(grp.protocol)
			dm.MemberAssignment = m.assignment
		}
		d.Members = append(d.Members, dm)
	}
}

// List handles ListGroups: every group, sorted by id, filtered by state (v4+,
// names compared case-insensitively as Kafka does) and by type (v5+; every
// group here is "classic").
func (g *Groups) List(req *kmsg.ListGroupsRequest) []kmsg.ListGroupsResponseGroup {
	states, types := req.StatesFilter, req.TypesFilter
	if req.Version < 4 {
		states = nil
	}
	if req.Version < 5 {
		types = nil
	}
	if len(types) > 0 && !groupContainsFold(types, groupTypeClassic) {
		return nil
	}
	var out []kmsg.ListGroupsResponseGroup
	for _, grp := range g.all() {
		grp.mu.Lock()
		st, pt := grp.state, grp.protocolType
		grp.mu.Unlock()
		if st == groupStateDead || (len(states) > 0 && !groupContainsFold(states, st.String())) {
			continue
		}
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group = grp.id
		lg.ProtocolType = pt
		lg.GroupState = st.String()
		lg.GroupType = groupTypeClassic
		out = append(out, lg)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}

func groupContainsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// Delete handles the group part of DeleteGroups: an Empty group is removed
// (OnDeleted fires; its committed offsets are the broker's to delete); others
// get NON_EMPTY_GROUP, unknown ones GROUP_ID_NOT_FOUND, all of them after Close
// NOT_COORDINATOR. The map has an entry per id: nil on success, else a
// *kerr.Error.
func (g *Groups) Delete(ids []string) map[string]error {
	out := make(map[string]error, len(ids))
	g.mu.Lock()
	for _, id := range ids {
		if g.closed {
			out[id] = kerr.NotCoordinator
			continue
		}
		grp := g.groups[id]
		if grp == nil {
			out[id] = kerr.GroupIDNotFound
			continue
		}
		grp.mu.Lock()
		if grp.state == groupStateEmpty {
			grp.state = groupStateDead
			grp.deadCode = kerr.CoordinatorNotAvailable.Code // a racing call retries and finds the group gone
			clear(grp.pending)
			delete(g.groups, id)
			g.emit(groupEvent{kind: groupEventDeleted, group: id})
			out[id] = nil
		} else {
			out[id] = kerr.NonEmptyGroup
		}
		grp.mu.Unlock()
	}
	g.mu.Unlock()
	g.deliver()
	return out
}

// CheckCommit is the group check of OffsetCommit v1+ (Kafka's
// validateOffsetCommit); nil allows the commit, otherwise the error is a
// *kerr.Error for every partition of the request.
//
// A simple commit (generation < 0, no member id, no group.instance.id) is
// allowed for an unknown or Empty group; an unknown group is then registered
// as Empty, as Kafka does, so that ListGroups, DescribeGroups and DeleteGroups
// see groups that only store offsets (after a failover the broker restores
// them with Restore(Snapshot{Group: id})). A member commit must name a current
// member (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID) of the current generation
// (ILLEGAL_GENERATION). A commit with a generation to an unknown group gets
// GROUP_ID_NOT_FOUND, which OffsetCommit before v9 reports as
// ILLEGAL_GENERATION (the caller maps it, as Kafka does). It is allowed in Stable and
// PreparingRebalance (and resets the member's session deadline) but not in
// CompletingRebalance (REBALANCE_IN_PROGRESS). A simple commit to a group with
// members gets UNKNOWN_MEMBER_ID.
func (g *Groups) CheckCommit(group, memberID string, instanceID *string, generation int32) error {
	inst := memberInstance(instanceID)
	simple := generation < 0 && memberID == "" && inst == ""
	grp, code := g.get(group, false)
	if code != 0 {
		return kerr.ErrorForCode(code)
	}
	if grp == nil {
		if !simple {
			if generation < 0 {
				return kerr.UnknownMemberID // a member id for a group with no members
			}
			return kerr.GroupIDNotFound
		}
		if grp, code = g.get(group, true); code != 0 {
			return kerr.ErrorForCode(code)
		}
	}
	grp.mu.Lock()
	defer grp.mu.Unlock()
	if grp.state == groupStateDead {
		return kerr.ErrorForCode(grp.deadCode)
	}
	if simple {
		if grp.state != groupStateEmpty {
			return kerr.UnknownMemberID
		}
		return nil
	}
	if code := grp.validateMemberLocked(memberID, inst); code != 0 {
		return kerr.ErrorForCode(code)
	}
	if generation != grp.generation {
		return kerr.IllegalGeneration
	}
	if grp.state == groupStateCompleting {
		return kerr.RebalanceInProgress
	}
	m := grp.byID[memberID]
	m.deadline = grp.now().Add(m.sessionTimeout)
	return nil
}
