package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// joinAll joins every groupJoiner into generation 1 during the initial delay and
// returns their responses.
func (h *groupHarness) joinAll(joiners ...groupJoiner) []*kmsg.JoinGroupResponse {
	h.t.Helper()
	var chans []<-chan *kmsg.JoinGroupResponse
	for i, j := range joiners {
		chans = append(chans, h.joinAsync(context.Background(), j))
		h.waitJoins("g", i+1)
	}
	for n := 0; n < 20; n++ {
		if j, _ := h.waiting("g"); j == 0 {
			break
		}
		h.advance(h.g.cfg.InitialRebalanceDelay)
	}
	var out []*kmsg.JoinGroupResponse
	for _, ch := range chans {
		out = append(out, groupRecv(h.t, ch))
	}
	return out
}

func TestGroupProtocolSelection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members [][]string // each member's protocols, the first groupJoiner leads
		want    string
	}{
		{"single", [][]string{{"range"}}, "range"},
		{"tie goes to the leader's preference", [][]string{{"range", "roundrobin"}, {"roundrobin", "range"}}, "range"},
		{"tie, other leader", [][]string{{"roundrobin", "range"}, {"range", "roundrobin"}}, "roundrobin"},
		{"most first choices", [][]string{{"sticky", "range"}, {"range", "sticky"}, {"range", "sticky"}}, "range"},
		{"only the common one", [][]string{{"cooperative-sticky", "range"}, {"cooperative-sticky", "range"}, {"range"}}, "range"},
		{"unanimous", [][]string{{"cooperative-sticky", "range"}, {"cooperative-sticky", "range"}}, "cooperative-sticky"},
		{"vote among candidates only", [][]string{{"x", "range", "sticky"}, {"sticky", "range"}}, "range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newGroupHarness(t, groupWithDelay(3*time.Second))
			var js []groupJoiner
			for _, ps := range tc.members {
				js = append(js, groupJoiner{version: 3, protocols: ps})
			}
			for _, r := range h.joinAll(js...) {
				if r.ErrorCode != 0 || groupStr(r.Protocol) != tc.want {
					t.Fatalf("join %+v, want protocol %s", r, tc.want)
				}
			}
		})
	}
}

func TestGroupInconsistentProtocol(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	rs := h.joinAll(groupJoiner{version: 3, protocols: []string{"range", "roundrobin"}}, groupJoiner{version: 3, protocols: []string{"range"}})
	a, b := rs[0].MemberID, rs[1].MemberID
	for _, tc := range []struct {
		name string
		j    groupJoiner
		want *kerr.Error
	}{
		{"other protocol type", groupJoiner{version: 3, ptype: "connect"}, kerr.InconsistentGroupProtocol},
		{"no common protocol", groupJoiner{version: 3, protocols: []string{"roundrobin"}}, kerr.InconsistentGroupProtocol},
		{"v5 new member, no common protocol", groupJoiner{protocols: []string{"sticky"}}, kerr.InconsistentGroupProtocol},
		{"member drops what others need", groupJoiner{version: 3, memberID: a, protocols: []string{"sticky"}}, kerr.InconsistentGroupProtocol},
	} {
		r := h.join(tc.j)
		groupWantCode(t, tc.name, r.ErrorCode, tc.want)
	}
	if d := h.describe("g"); d.State != "CompletingRebalance" {
		t.Fatalf("rejected joins disturbed the group: %s", d.State)
	}
	// b may switch to a protocol every other member offers (Kafka would
	// refuse, counting b's own old protocols); the group moves to it.
	chB := h.joinAsync(context.Background(), groupJoiner{version: 3, memberID: b, protocols: []string{"roundrobin"}})
	h.waitJoins("g", 1)
	ra := h.join(groupJoiner{version: 3, memberID: a, protocols: []string{"range", "roundrobin"}})
	rb := groupRecv(t, chB)
	if ra.ErrorCode != 0 || rb.ErrorCode != 0 || ra.Generation != 2 || groupStr(ra.Protocol) != "roundrobin" {
		t.Fatalf("joins %+v %+v", ra, rb)
	}
}

func groupLeaveReq(version int16, group string, members ...kmsg.LeaveGroupRequestMember) *kmsg.LeaveGroupRequest {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Version = version
	req.Group = group
	if version < 3 && len(members) == 1 {
		req.MemberID = members[0].MemberID
	} else {
		req.Members = members
	}
	return req
}

func groupLeaving(memberID, instanceID string) kmsg.LeaveGroupRequestMember {
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = memberID
	if instanceID != "" {
		m.InstanceID = &instanceID
	}
	return m
}

func TestGroupLeave(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{}, groupJoiner{instance: "i-b"}, groupJoiner{})
	a, c := f.ids[0], f.ids[2]

	// A v3 batch: by member id, by instance id, and two unknowns.
	resp := h.g.Leave(groupLeaveReq(3, "g", groupLeaving(a, ""), groupLeaving("", "i-b"), groupLeaving("x", ""), groupLeaving("", "nope")))
	groupWantCode(t, "batch top level", resp.ErrorCode, nil)
	want := []struct {
		id, inst string
		code     *kerr.Error
	}{{a, "", nil}, {"", "i-b", nil}, {"x", "", kerr.UnknownMemberID}, {"", "nope", kerr.UnknownMemberID}}
	if len(resp.Members) != len(want) {
		t.Fatalf("%d member results, want %d", len(resp.Members), len(want))
	}
	for i, w := range want {
		m := resp.Members[i]
		if m.MemberID != w.id || (w.inst != "" && groupStr(m.InstanceID) != w.inst) {
			t.Fatalf("result %d is for %q/%s", i, m.MemberID, groupStr(m.InstanceID))
		}
		groupWantCode(t, "member "+w.id+w.inst, m.ErrorCode, w.code)
	}
	d := h.describe("g")
	if d.State != "PreparingRebalance" || len(d.Members) != 1 || d.Members[0].MemberID != c {
		t.Fatalf("after the batch leave %+v", d)
	}
	groupWantCode(t, "left member heartbeat", h.heartbeat("g", a, 1), kerr.UnknownMemberID)
	rc := h.join(groupJoiner{memberID: c})
	if rc.ErrorCode != 0 || rc.Generation != 2 || rc.LeaderID != c {
		t.Fatalf("rejoin %+v", rc)
	}

	// A member waiting in JoinGroup that leaves (from another connection)
	// gets UNKNOWN_MEMBER_ID; a pending member may leave without a
	// rebalance.
	p := h.join(groupJoiner{})
	groupWantCode(t, "pending", p.ErrorCode, kerr.MemberIDRequired)
	groupWantCode(t, "pending leave", h.g.Leave(groupLeaveReq(1, "g", groupLeaving(p.MemberID, ""))).ErrorCode, nil)
	if d := h.describe("g"); d.State != "CompletingRebalance" {
		t.Fatalf("pending leave rebalanced: %s", d.State)
	}

	// v0-2: one member, top-level error; the last one leaving empties the
	// group at a new generation.
	groupWantCode(t, "v0 leave", h.g.Leave(groupLeaveReq(0, "g", groupLeaving(c, ""))).ErrorCode, nil)
	groupWantCode(t, "v0 leave again", h.g.Leave(groupLeaveReq(0, "g", groupLeaving(c, ""))).ErrorCode, kerr.UnknownMemberID)
	if d := h.describe("g"); d.State != "Empty" || len(d.Members) != 0 || d.ProtocolType != "consumer" {
		t.Fatalf("after everyone left %+v", d)
	}
	h.mu.Lock()
	empties := h.empty
	h.mu.Unlock()
	if len(empties) != 1 || empties[0].Generation != 3 {
		t.Fatalf("OnEmpty %+v", empties)
	}

	groupWantCode(t, "empty group id", h.g.Leave(groupLeaveReq(3, "", groupLeaving(c, ""))).ErrorCode, kerr.InvalidGroupID)
	r := h.g.Leave(groupLeaveReq(3, "unknown", groupLeaving("m", "")))
	groupWantCode(t, "unknown group", r.ErrorCode, nil)
	groupWantCode(t, "unknown group member", r.Members[0].ErrorCode, kerr.UnknownMemberID)
}

func TestGroupLeaveAnswersWaitingJoin(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{}, groupJoiner{})
	a, b := f.ids[0], f.ids[1]
	chA := h.joinAsync(context.Background(), groupJoiner{memberID: a})
	h.waitJoins("g", 1)
	groupWantCode(t, "leave", h.g.Leave(groupLeaveReq(3, "g", groupLeaving(a, ""))).Members[0].ErrorCode, nil)
	ra := groupRecv(t, chA)
	groupWantCode(t, "waiting join", ra.ErrorCode, kerr.UnknownMemberID)
	rb := h.join(groupJoiner{memberID: b})
	if rb.ErrorCode != 0 || rb.Generation != 2 || rb.LeaderID != b {
		t.Fatalf("join %+v", rb)
	}
}

func TestGroupDescribeListDelete(t *testing.T) {
	h := newGroupHarness(t)
	// "stable": one member, synced.
	s := h.join(groupJoiner{version: 3, group: "stable", client: "cs", meta: "S"})
	groupWantCode(t, "sync", h.g.Sync(context.Background(), groupSyncReq("stable", 1, s.MemberID, map[string]string{s.MemberID: "as"})).ErrorCode, nil)
	// "prep": a member joined, a second joining.
	p := h.join(groupJoiner{version: 3, group: "prep"})
	groupWantCode(t, "sync", h.g.Sync(context.Background(), groupSyncReq("prep", 1, p.MemberID, nil)).ErrorCode, nil)
	h.joinAsync(context.Background(), groupJoiner{version: 3, group: "prep"})
	h.waitJoins("prep", 1)
	// "offsets": a group with only a simple commit.
	if err := h.g.CheckCommit("offsets", "", nil, -1); err != nil {
		t.Fatal(err)
	}

	dreq := kmsg.NewPtrDescribeGroupsRequest()
	dreq.Version = 5
	dreq.Groups = []string{"stable", "prep", "offsets", "unknown"}
	ds := h.g.Describe(dreq)
	if len(ds) != 4 {
		t.Fatalf("%d groups described", len(ds))
	}
	st := ds[0]
	if st.Group != "stable" || st.State != "Stable" || st.ProtocolType != "consumer" || st.Protocol != "range" || len(st.Members) != 1 {
		t.Fatalf("stable %+v", st)
	}
	if m := st.Members[0]; m.MemberID != s.MemberID || m.ClientID != "cs" || m.ClientHost != "/10.0.0.1" ||
		string(m.ProtocolMetadata) != "range/S" || string(m.MemberAssignment) != "as" || m.InstanceID != nil {
		t.Fatalf("stable member %+v", m)
	}
	if pr := ds[1]; pr.State != "PreparingRebalance" || pr.Protocol != "" || len(pr.Members) != 2 ||
		pr.Members[0].ProtocolMetadata != nil || pr.Members[0].MemberAssignment != nil {
		t.Fatalf("preparing %+v", pr)
	}
	if of := ds[2]; of.State != "Empty" || of.ErrorCode != 0 || of.ProtocolType != "" || len(of.Members) != 0 {
		t.Fatalf("offsets-only %+v", of)
	}
	if un := ds[3]; un.State != "Dead" || un.ErrorCode != 0 || un.Group != "unknown" {
		t.Fatalf("unknown v5 %+v", un)
	}
	dreq.Version = 6
	dreq.Groups = []string{"unknown"}
	if un := h.g.Describe(dreq)[0]; un.State != "Dead" || un.ErrorCode != kerr.GroupIDNotFound.Code || un.ErrorMessage == nil {
		t.Fatalf("unknown v6 %+v", un)
	}

	list := func(version int16, states, types []string) string {
		req := kmsg.NewPtrListGroupsRequest()
		req.Version, req.StatesFilter, req.TypesFilter = version, states, types
		var out []string
		for _, g := range h.g.List(req) {
			if g.GroupType != "classic" {
				t.Fatalf("group type %q", g.GroupType)
			}
			out = append(out, g.Group+":"+g.GroupState+":"+g.ProtocolType)
		}
		return strings.Join(out, ",")
	}
	all := "offsets:Empty:,prep:PreparingRebalance:consumer,stable:Stable:consumer"
	for _, tc := range []struct {
		name    string
		version int16
		states  []string
		types   []string
		want    string
	}{
		{"all", 5, nil, nil, all},
		{"states, any case", 4, []string{"stable", "EMPTY"}, nil, "offsets:Empty:,stable:Stable:consumer"},
		{"states before v4 ignored", 3, []string{"Stable"}, nil, all},
		{"classic type", 5, nil, []string{"Classic"}, all},
		{"consumer type", 5, nil, []string{"consumer"}, ""},
		{"types before v5 ignored", 4, nil, []string{"consumer"}, all},
		{"no match", 5, []string{"Dead"}, nil, ""},
	} {
		if got := list(tc.version, tc.states, tc.types); got != tc.want {
			t.Errorf("list %s: %q, want %q", tc.name, got, tc.want)
		}
	}

	errs := h.g.Delete([]string{"stable", "prep", "offsets", "unknown"})
	if errs["stable"] != kerr.NonEmptyGroup || errs["prep"] != kerr.NonEmptyGroup || errs["unknown"] != kerr.GroupIDNotFound {
		t.Fatalf("delete %v", errs)
	}
	if err, ok := errs["offsets"]; !ok || err != nil {
		t.Fatalf("delete of an Empty group: %v (present %v)", err, ok)
	}
	h.mu.Lock()
	deleted := strings.Join(h.deleted, ",")
	h.mu.Unlock()
	if deleted != "offsets" {
		t.Fatalf("OnDeleted %q", deleted)
	}
	if got := list(5, nil, nil); got != "prep:PreparingRebalance:consumer,stable:Stable:consumer" {
		t.Fatalf("list after delete %q", got)
	}
	if d := h.describe("offsets"); d.State != "Dead" {
		t.Fatalf("deleted group %+v", d)
	}
}

func TestGroupCheckCommit(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{instance: "i-a"}, groupJoiner{})
	a, b := f.ids[0], f.ids[1]
	ia, nope := "i-a", "nope"
	for _, tc := range []struct {
		name       string
		group      string
		member     string
		instance   *string
		generation int32
		want       error
	}{
		{"simple commit, unknown group", "solo", "", nil, -1, nil},
		{"simple commit, Empty group", "solo", "", nil, -1, nil},
		{"member commit, Empty group", "solo", "m", nil, -1, kerr.UnknownMemberID},
		{"generation, unknown group", "unknown", "", nil, 1, kerr.GroupIDNotFound},
		{"member of a generation, unknown group", "unknown", "m", nil, 0, kerr.GroupIDNotFound},
		{"member id, unknown group", "unknown2", "m", nil, -1, kerr.UnknownMemberID},
		{"member of the generation", "g", b, nil, 1, nil},
		{"static member of the generation", "g", a, &ia, 1, nil},
		{"wrong generation", "g", b, nil, 2, kerr.IllegalGeneration},
		{"unknown member", "g", "nobody", nil, 1, kerr.UnknownMemberID},
		{"simple commit to a group with members", "g", "", nil, -1, kerr.UnknownMemberID},
		{"instance of another member", "g", b, &ia, 1, kerr.FencedInstanceID},
		{"unknown instance", "g", a, &nope, 1, kerr.UnknownMemberID},
	} {
		if err := h.g.CheckCommit(tc.group, tc.member, tc.instance, tc.generation); err != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, id := range []string{"unknown", "unknown2"} {
		if d := h.describe(id); d.State != "Dead" {
			t.Errorf("a refused commit created group %s: %s", id, d.State)
		}
	}
	// A member's commit keeps its session alive, like a heartbeat.
	h.advance(8 * time.Second)
	if err := h.g.CheckCommit("g", b, nil, 1); err != nil {
		t.Fatal(err)
	}
	groupWantCode(t, "a heartbeat", h.heartbeat("g", a, 1), nil)
	h.advance(8 * time.Second)
	if d := h.describe("g"); d.State != "Stable" || len(d.Members) != 2 {
		t.Fatalf("committing member expired: %+v", d)
	}
}
