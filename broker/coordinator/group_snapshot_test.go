package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestGroupRestoreAfterCoordinatorMove(t *testing.T) {
	h1 := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h1.form(groupJoiner{meta: "A", protocols: []string{"cooperative-sticky", "range"}}, groupJoiner{instance: "i-b", meta: "B", protocols: []string{"cooperative-sticky", "range"}})
	a, b := f.ids[0], f.ids[1]
	snaps := h1.stableSnapshots()
	snap := snaps[len(snaps)-1]

	// The broker persists the snapshot as Kafka's group metadata record and
	// the next coordinator decodes it.
	enc := snap.GroupMetadata(3, 1_700_000_000_000).AppendTo(nil)
	md := kmsg.NewGroupMetadataValue()
	md.Version = 3
	if err := md.ReadFrom(enc); err != nil {
		t.Fatal(err)
	}
	dec := SnapshotFromGroupMetadata("g", &md)
	if got := h1.g.Unload(func(string) bool { return true }); len(got) != 1 || got[0] != "g" {
		t.Fatalf("unloaded %v", got)
	}

	h2 := newGroupHarness(t)
	h2.clk.Advance(time.Hour) // another broker, another clock
	if err := h2.g.Restore(dec); err != nil {
		t.Fatal(err)
	}
	d := h2.describe("g")
	if d.State != "Stable" || d.Protocol != "cooperative-sticky" || len(d.Members) != 2 || d.Members[0].MemberID != a ||
		d.Members[1].MemberID != b || groupStr(d.Members[1].InstanceID) != "i-b" || string(d.Members[1].MemberAssignment) != "assign-"+b {
		t.Fatalf("restored %+v", d)
	}
	// Members carry on with the same generation: no rebalance.
	ib := "i-b"
	for i := 0; i < 3; i++ {
		h2.advance(9 * time.Second)
		groupWantCode(t, "a heartbeat", h2.heartbeat("g", a, 1), nil)
		hb := kmsg.NewPtrHeartbeatRequest()
		hb.Version, hb.Group, hb.MemberID, hb.Generation, hb.InstanceID = 4, "g", b, 1, &ib
		groupWantCode(t, "b heartbeat", h2.g.Heartbeat(hb).ErrorCode, nil)
	}
	if err := h2.g.CheckCommit("g", a, nil, 1); err != nil {
		t.Fatal(err)
	}
	s := h2.g.Sync(context.Background(), groupSyncReq("g", 1, a, nil))
	if s.ErrorCode != 0 || string(s.MemberAssignment) != "assign-"+a {
		t.Fatalf("sync after restore %+v", s)
	}
	// A static member restarting after the move still gets its assignment.
	r := h2.join(groupJoiner{instance: "i-b", meta: "B", protocols: []string{"cooperative-sticky", "range"}})
	if r.ErrorCode != 0 || r.Generation != 1 || r.MemberID == b {
		t.Fatalf("static restart %+v", r)
	}
	s = h2.g.Sync(context.Background(), groupSyncReq("g", 1, r.MemberID, nil))
	if s.ErrorCode != 0 || string(s.MemberAssignment) != "assign-"+b {
		t.Fatalf("static restart sync %+v", s)
	}
	if d := h2.describe("g"); d.State != "Stable" {
		t.Fatalf("state %s", d.State)
	}
	// Sessions still expire on the new coordinator: b stops heartbeating.
	h2.advance(5 * time.Second)
	groupWantCode(t, "a heartbeat", h2.heartbeat("g", a, 1), nil)
	h2.advance(5 * time.Second)
	if d := h2.describe("g"); d.State != "PreparingRebalance" || len(d.Members) != 1 || d.Members[0].MemberID != a {
		t.Fatalf("after sessions expired: %+v", d)
	}
}

func TestGroupRestoreEmptyAndInvalid(t *testing.T) {
	h := newGroupHarness(t)
	if err := h.g.Restore(Snapshot{Group: "g", ProtocolType: "consumer", Generation: 4}); err != nil {
		t.Fatal(err)
	}
	if d := h.describe("g"); d.State != "Empty" || d.ProtocolType != "consumer" {
		t.Fatalf("restored empty group %+v", d)
	}
	r := h.join(groupJoiner{version: 3})
	if r.ErrorCode != 0 || r.Generation != 5 {
		t.Fatalf("join after restoring generation 4: %+v", r)
	}

	good := func() Snapshot {
		return Snapshot{Group: "x", ProtocolType: "consumer", Protocol: "range", Generation: 1, Leader: "m1",
			Members: []MemberSnapshot{{MemberID: "m1", SessionTimeoutMillis: 10000, RebalanceTimeoutMillis: 30000,
				Protocols: []Protocol{{Name: "range"}}}}}
	}
	for _, tc := range []struct {
		name string
		mod  func(*Snapshot)
	}{
		{"leader not a member", func(s *Snapshot) { s.Leader = "m2" }},
		{"no protocol", func(s *Snapshot) { s.Protocol = "" }},
		{"member lacks the protocol", func(s *Snapshot) { s.Protocol = "sticky" }},
		{"duplicate member", func(s *Snapshot) { s.Members = append(s.Members, s.Members[0]) }},
		{"duplicate instance", func(s *Snapshot) {
			s.Members[0].InstanceID = "i"
			m := s.Members[0]
			m.MemberID = "m2"
			s.Members = append(s.Members, m)
		}},
		{"negative generation", func(s *Snapshot) { s.Generation = -1 }},
		{"zero session", func(s *Snapshot) { s.Members[0].SessionTimeoutMillis = 0 }},
		{"leader without members", func(s *Snapshot) { s.Members = nil }},
	} {
		s := good()
		tc.mod(&s)
		if err := h.g.Restore(s); !errors.Is(err, ErrInvalidSnapshot) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if err := h.g.Restore(good()); err != nil {
		t.Fatalf("valid snapshot: %v", err)
	}
}

func TestGroupSnapshotGroupMetadata(t *testing.T) {
	s := Snapshot{Group: "g", ProtocolType: "consumer", Protocol: "range", Generation: 7, Leader: "m1",
		Members: []MemberSnapshot{
			{MemberID: "m1", InstanceID: "i", ClientID: "c", ClientHost: "/h", SessionTimeoutMillis: 45000,
				RebalanceTimeoutMillis: 300000, Protocols: []Protocol{{Name: "sticky", Metadata: []byte("s1")}, {Name: "range", Metadata: []byte("r1")}},
				Assignment: []byte("a1")},
			{MemberID: "m2", SessionTimeoutMillis: 10000, RebalanceTimeoutMillis: 20000, Protocols: []Protocol{{Name: "range", Metadata: []byte("r2")}},
				Assignment: []byte{}},
		}}
	for _, version := range []int16{3, 4} {
		md := s.GroupMetadata(version, 1234)
		if md.Version != version || groupStr(md.Protocol) != "range" || groupStr(md.Leader) != "m1" || md.CurrentStateTimestamp != 1234 ||
			len(md.Members) != 2 || groupStr(md.Members[0].InstanceID) != "i" || md.Members[1].InstanceID != nil ||
			string(md.Members[0].Subscription) != "r1" || string(md.Members[0].Assignment) != "a1" || md.Members[0].RebalanceTimeoutMillis != 300000 {
			t.Fatalf("v%d record %+v", version, md)
		}
		read := kmsg.NewGroupMetadataValue()
		read.Version = version
		if err := read.ReadFrom(md.AppendTo(nil)); err != nil {
			t.Fatal(err)
		}
		got := SnapshotFromGroupMetadata("g", &read)
		want := s
		want.Members = []MemberSnapshot{s.Members[0], s.Members[1]}
		want.Members[0].Protocols = []Protocol{{Name: "range", Metadata: []byte("r1")}} // only the selected protocol is kept
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("v%d round trip:\n got %+v\nwant %+v", version, got, want)
		}
	}

	// An Empty group: null protocol and leader, no members.
	empty := Snapshot{Group: "e", ProtocolType: "consumer", Generation: 3}
	md := empty.GroupMetadata(3, 0)
	if md.Protocol != nil || md.Leader != nil || len(md.Members) != 0 {
		t.Fatalf("empty record %+v", md)
	}
	if got := SnapshotFromGroupMetadata("e", md); !reflect.DeepEqual(got, empty) {
		t.Fatalf("empty round trip %+v", got)
	}

	// A version 0 record has no rebalance timeout: the session timeout is used.
	old := s.GroupMetadata(3, 0)
	old.Members[0].RebalanceTimeoutMillis = -1
	if got := SnapshotFromGroupMetadata("g", old); got.Members[0].RebalanceTimeoutMillis != 45000 {
		t.Fatalf("v0 rebalance timeout %d", got.Members[0].RebalanceTimeoutMillis)
	}
	h := newGroupHarness(t)
	if err := h.g.Restore(SnapshotFromGroupMetadata("g", old)); err != nil {
		t.Fatal(err)
	}
}

func TestGroupCloseUnblocksWaiters(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	// g2: a follower waiting for the leader's assignment.
	chA := h.joinAsync(context.Background(), groupJoiner{version: 3, group: "g2"})
	h.waitJoins("g2", 1)
	chB := h.joinAsync(context.Background(), groupJoiner{version: 3, group: "g2"})
	h.waitJoins("g2", 2)
	h.advance(3 * time.Second)
	h.advance(3 * time.Second)
	groupRecv(t, chA)
	b := groupRecv(t, chB)
	chS := h.syncAsync(context.Background(), groupSyncReq("g2", 1, b.MemberID, nil))
	h.waitSyncs("g2", 1)
	// g1: a join waiting out the initial delay (the clock no longer moves).
	chJ := h.joinAsync(context.Background(), groupJoiner{version: 3, group: "g1"})
	h.waitJoins("g1", 1)

	h.g.Close()
	groupWantCode(t, "waiting join", groupRecv(t, chJ).ErrorCode, kerr.NotCoordinator)
	groupWantCode(t, "waiting sync", groupRecv(t, chS).ErrorCode, kerr.NotCoordinator)

	// Everything afterwards answers NOT_COORDINATOR.
	groupWantCode(t, "join", h.join(groupJoiner{version: 3, group: "g2"}).ErrorCode, kerr.NotCoordinator)
	groupWantCode(t, "sync", h.g.Sync(context.Background(), groupSyncReq("g2", 1, b.MemberID, nil)).ErrorCode, kerr.NotCoordinator)
	groupWantCode(t, "heartbeat", h.heartbeat("g2", b.MemberID, 1), kerr.NotCoordinator)
	groupWantCode(t, "leave", h.g.Leave(groupLeaveReq(3, "g2", groupLeaving(b.MemberID, ""))).ErrorCode, kerr.NotCoordinator)
	if d := h.describe("g2"); d.ErrorCode != kerr.NotCoordinator.Code {
		t.Fatalf("describe %+v", d)
	}
	if err := h.g.CheckCommit("g2", b.MemberID, nil, 1); err != kerr.NotCoordinator {
		t.Fatalf("commit check %v", err)
	}
	if err := h.g.Delete([]string{"g2"})["g2"]; err != kerr.NotCoordinator {
		t.Fatalf("delete %v", err)
	}
	if err := h.g.Restore(Snapshot{Group: "g3"}); err != kerr.NotCoordinator {
		t.Fatalf("restore %v", err)
	}
	h.g.Tick()
	h.g.Close() // idempotent
}

func TestGroupUnloadUnblocksWaiters(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	ch1 := h.joinAsync(context.Background(), groupJoiner{version: 3, group: "g1"})
	h.waitJoins("g1", 1)
	ch2 := h.joinAsync(context.Background(), groupJoiner{version: 3, group: "g2"})
	h.waitJoins("g2", 1)
	if got := h.g.Unload(func(id string) bool { return id == "g1" }); len(got) != 1 || got[0] != "g1" {
		t.Fatalf("unloaded %v", got)
	}
	groupWantCode(t, "unloaded group's join", groupRecv(t, ch1).ErrorCode, kerr.NotCoordinator)
	h.advance(3 * time.Second)
	if r := groupRecv(t, ch2); r.ErrorCode != 0 || r.Generation != 1 {
		t.Fatalf("other group's join %+v", r)
	}
}

// checkInvariants locks every group and checks what the state machine
// promises (see the group type).
func groupCheckInvariants(t *testing.T, g *Groups) {
	t.Helper()
	for _, grp := range g.all() {
		grp.mu.Lock()
		err := grp.invariantsLocked()
		grp.mu.Unlock()
		if err != nil {
			t.Errorf("group %s: %v", grp.id, err)
		}
	}
}

func (grp *group) invariantsLocked() error {
	if grp.state == groupStateDead {
		return nil
	}
	if len(grp.byID) != len(grp.members) {
		return fmt.Errorf("%d members by id, %d in order", len(grp.byID), len(grp.members))
	}
	if (grp.state == groupStateEmpty) != (len(grp.members) == 0) {
		return fmt.Errorf("state %s with %d members", grp.state, len(grp.members))
	}
	if len(grp.members) > 0 && grp.byID[grp.leader] == nil {
		return fmt.Errorf("leader %q is not a member", grp.leader)
	}
	if len(grp.members) == 0 && grp.leader != "" {
		return fmt.Errorf("leader %q without members", grp.leader)
	}
	statics := 0
	for _, m := range grp.members {
		if grp.byID[m.id] != m {
			return fmt.Errorf("member %s misfiled", m.id)
		}
		if m.instanceID != "" {
			statics++
			if grp.static[m.instanceID] != m.id {
				return fmt.Errorf("instance %s maps to %q, not %s", m.instanceID, grp.static[m.instanceID], m.id)
			}
		}
		if m.join != nil && grp.state != groupStatePreparing {
			return fmt.Errorf("join waiter in %s", grp.state)
		}
		if m.sync != nil && grp.state != groupStateCompleting {
			return fmt.Errorf("sync waiter in %s", grp.state)
		}
	}
	if statics != len(grp.static) {
		return fmt.Errorf("%d static members, %d instance ids", statics, len(grp.static))
	}
	if (grp.state == groupStateStable || grp.state == groupStateCompleting) && grp.selectProtocolLocked() == "" {
		return errors.New("members share no protocol")
	}
	return nil
}

// TestGroupConcurrentMembers runs clients through the protocol concurrently
// with a running clock, for the race detector and the invariants.
func TestGroupConcurrentMembers(t *testing.T) {
	h := newGroupHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	run := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	run(func() { // the broker's ticker
		for ctx.Err() == nil {
			h.clk.Advance(100 * time.Millisecond)
			h.g.Tick()
			time.Sleep(time.Millisecond)
		}
	})
	run(func() { // admin readers
		for ctx.Err() == nil {
			h.g.List(kmsg.NewPtrListGroupsRequest())
			h.describe("g")
			groupCheckInvariants(t, h.g)
			time.Sleep(time.Millisecond)
		}
	})
	for i := 0; i < 6; i++ {
		run(func() { groupConsumerLoop(ctx, h, i, errs) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	groupCheckInvariants(t, h.g)
	stable := len(h.stableSnapshots())
	t.Logf("%d stable generations or static rejoins, final state %s", stable, h.describe("g").State)
	if stable < 3 {
		t.Errorf("only %d groups became stable: the clients made no progress", stable)
	}
	if j, s := h.waiting("g"); j != 0 || s != 0 {
		t.Fatalf("%d joins and %d syncs still waiting after every call returned", j, s)
	}
}

// consumerLoop is a client: join, sync, heartbeat a while, sometimes leave
// or restart (static members).
func groupConsumerLoop(ctx context.Context, h *groupHarness, n int, errs chan<- error) {
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	j := groupJoiner{client: fmt.Sprintf("c%d", n), meta: fmt.Sprint(n), protocols: []string{"cooperative-sticky", "range"}}
	if n%2 == 0 {
		j.instance = fmt.Sprintf("i-%d", n)
	}
	for ctx.Err() == nil {
		r := h.g.Join(ctx, j.req(), j.client, "h")
		switch r.ErrorCode {
		case 0:
		case kerr.MemberIDRequired.Code:
			j.memberID = r.MemberID
			continue
		case kerr.UnknownMemberID.Code, kerr.FencedInstanceID.Code:
			j.memberID = ""
			continue
		default:
			continue
		}
		j.memberID = r.MemberID
		var assign map[string]string
		if r.LeaderID == r.MemberID && !r.SkipAssignment {
			assign = make(map[string]string)
			for _, m := range r.Members {
				assign[m.MemberID] = "p-" + m.MemberID
			}
		}
		sreq := groupSyncReq("g", r.Generation, r.MemberID, assign)
		if j.instance != "" {
			inst := j.instance
			sreq.InstanceID = &inst
		}
		s := h.g.Sync(ctx, sreq)
		if s.ErrorCode == 0 && len(s.MemberAssignment) > 0 && string(s.MemberAssignment) != "p-"+r.MemberID {
			// A restarted static member keeps its predecessor's assignment.
			if j.instance == "" {
				errs <- fmt.Errorf("member %s got assignment %q", r.MemberID, s.MemberAssignment)
			}
		}
		for i := 0; i < 5 && ctx.Err() == nil; i++ {
			if h.heartbeat("g", r.MemberID, r.Generation) != 0 {
				break
			}
			time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
		}
		switch rng.IntN(8) {
		case 0:
			h.g.Leave(groupLeaveReq(3, "g", groupLeaving(j.memberID, j.instance)))
			j.memberID = ""
		case 1:
			j.memberID = "" // a static member restarts; a dynamic one joins anew
		}
	}
}
