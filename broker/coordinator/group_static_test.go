package coordinator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestGroupStaticMemberRestartKeepsAssignment(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{instance: "i-a", meta: "A"}, groupJoiner{instance: "i-b", meta: "B"})
	a, oldB := f.ids[0], f.ids[1]
	if !strings.HasPrefix(a, "i-a-") || !strings.HasPrefix(oldB, "i-b-") {
		t.Fatalf("static member ids %q %q, want instance id prefixes", a, oldB)
	}

	// b restarts: same instance id, no member id, same protocols.
	r := h.join(groupJoiner{instance: "i-b", meta: "B", client: "b2"})
	groupWantCode(t, "restart join", r.ErrorCode, nil)
	newB := r.MemberID
	if newB == oldB || !strings.HasPrefix(newB, "i-b-") || r.Generation != 1 || r.LeaderID != a || len(r.Members) != 0 || groupStr(r.Protocol) != "range" {
		t.Fatalf("restart join %+v, want generation 1 leader %s, new id", r, a)
	}
	d := h.describe("g")
	if d.State != "Stable" || len(d.Members) != 2 || d.Members[1].MemberID != newB || d.Members[1].ClientID != "b2" {
		t.Fatalf("describe after restart %+v", d)
	}
	s := h.g.Sync(context.Background(), groupSyncReq("g", 1, newB, nil))
	groupWantCode(t, "restart sync", s.ErrorCode, nil)
	if string(s.MemberAssignment) != "assign-"+oldB {
		t.Fatalf("restarted member got %q, want its old assignment", s.MemberAssignment)
	}
	groupWantCode(t, "leader heartbeat", h.heartbeat("g", a, 1), nil)

	// The new member id is persisted without a new generation.
	snaps := h.stableSnapshots()
	if len(snaps) != 2 {
		t.Fatalf("%d OnStable calls, want 2", len(snaps))
	}
	last := snaps[1]
	if last.Generation != 1 || last.Members[1].MemberID != newB || last.Members[1].InstanceID != "i-b" ||
		string(last.Members[1].Assignment) != "assign-"+oldB || last.Leader != a {
		t.Fatalf("snapshot after restart %+v", last)
	}

	// The old member id is fenced wherever it shows up with its instance id.
	ib := "i-b"
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Version, hb.Group, hb.MemberID, hb.Generation, hb.InstanceID = 4, "g", oldB, 1, &ib
	groupWantCode(t, "old heartbeat", h.g.Heartbeat(hb).ErrorCode, kerr.FencedInstanceID)
	hb.Version = 2 // no instance id before v3: just an unknown member
	groupWantCode(t, "old heartbeat v2", h.g.Heartbeat(hb).ErrorCode, kerr.UnknownMemberID)
	sr := groupSyncReq("g", 1, oldB, nil)
	sr.InstanceID = &ib
	groupWantCode(t, "old sync", h.g.Sync(context.Background(), sr).ErrorCode, kerr.FencedInstanceID)
	groupWantCode(t, "old join", h.join(groupJoiner{instance: "i-b", memberID: oldB, meta: "B"}).ErrorCode, kerr.FencedInstanceID)
	if err := h.g.CheckCommit("g", oldB, &ib, 1); err != kerr.FencedInstanceID {
		t.Fatalf("old commit: %v", err)
	}
	if d := h.describe("g"); d.State != "Stable" {
		t.Fatalf("fenced calls disturbed the group: %s", d.State)
	}
}

func TestGroupStaticLeaderRestart(t *testing.T) {
	for _, v := range []int16{8, 9} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			h := newGroupHarness(t, groupWithDelay(3*time.Second))
			f := h.form(groupJoiner{instance: "i-a", meta: "A"}, groupJoiner{instance: "i-b", meta: "B"})
			oldA := f.ids[0]
			r := h.join(groupJoiner{version: v, instance: "i-a", meta: "A"})
			groupWantCode(t, "leader restart", r.ErrorCode, nil)
			if r.Generation != 1 || r.MemberID == oldA {
				t.Fatalf("restart %+v", r)
			}
			if v >= 9 {
				// KIP-814: told it leads, with the members, but not to assign.
				if r.LeaderID != r.MemberID || !r.SkipAssignment || len(r.Members) != 2 || r.Members[0].MemberID != r.MemberID {
					t.Fatalf("v9 restart %+v", r)
				}
			} else if r.LeaderID != oldA || r.SkipAssignment || len(r.Members) != 0 {
				t.Fatalf("v8 restart %+v, want the old leader id %s", r, oldA)
			}
			s := h.g.Sync(context.Background(), groupSyncReq("g", 1, r.MemberID, map[string]string{r.MemberID: "ignored"}))
			if s.ErrorCode != 0 || string(s.MemberAssignment) != "assign-"+oldA {
				t.Fatalf("leader sync in Stable %+v", s)
			}
			if d := h.describe("g"); d.State != "Stable" {
				t.Fatalf("state %s", d.State)
			}
		})
	}
}

// TestGroupStaticRestartWithNewMetadataKeepsAssignment: as in Kafka, a
// static member restarting with new metadata for the selected protocol (a
// cooperative assignor's owned partitions and generation change with every
// restart) rejoins a Stable group without a rebalance and gets its old
// assignment; the leader sees the new metadata at the next rebalance.
func TestGroupStaticRestartWithNewMetadataKeepsAssignment(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{instance: "i-a", meta: "A"}, groupJoiner{instance: "i-b", meta: "B"})
	a, oldB := f.ids[0], f.ids[1]
	r := h.join(groupJoiner{instance: "i-b", meta: "B2"})
	groupWantCode(t, "restart join", r.ErrorCode, nil)
	if r.Generation != 1 || r.MemberID == oldB || r.LeaderID != a {
		t.Fatalf("restart join %+v, want generation 1 under a new member id", r)
	}
	if d := h.describe("g"); d.State != "Stable" {
		t.Fatalf("new metadata rebalanced: %s", d.State)
	}
	s := h.g.Sync(context.Background(), groupSyncReq("g", 1, r.MemberID, nil))
	if s.ErrorCode != 0 || string(s.MemberAssignment) != "assign-"+oldB {
		t.Fatalf("restarted member's sync %+v, want its old assignment", s)
	}
	groupWantCode(t, "leader heartbeat", h.heartbeat("g", a, 1), nil)
}

func TestGroupStaticRestartFencesWaitingJoin(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{instance: "i-a", meta: "A"}, groupJoiner{instance: "i-b", meta: "B"})
	oldA, b := f.ids[0], f.ids[1]
	// The leader rejoins (a rebalance) and waits; then a new process with
	// the same instance id joins: the old one is fenced.
	chOld := h.joinAsync(context.Background(), groupJoiner{instance: "i-a", memberID: oldA, meta: "A"})
	h.waitJoins("g", 1)
	chNew := h.joinAsync(context.Background(), groupJoiner{instance: "i-a", meta: "A"})
	old := groupRecv(t, chOld)
	groupWantCode(t, "fenced join", old.ErrorCode, kerr.FencedInstanceID)
	if old.MemberID != oldA {
		t.Fatalf("fenced response member id %q", old.MemberID)
	}
	h.waitJoins("g", 1)
	rb := h.join(groupJoiner{instance: "i-b", memberID: b, meta: "B"})
	rn := groupRecv(t, chNew)
	if rn.ErrorCode != 0 || rb.ErrorCode != 0 || rn.Generation != 2 || rn.LeaderID != rn.MemberID || rn.MemberID == oldA {
		t.Fatalf("joins %+v %+v", rn, rb)
	}
}

func TestGroupStaticMemberSurvivesJoinPhase(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{instance: "i-a"}, groupJoiner{instance: "i-b"})
	a, b := f.ids[0], f.ids[1]
	// Only the leader rejoins; b keeps heartbeating but does not rejoin. At
	// the rebalance timeout the static member stays in the group (Kafka
	// removes only dynamic ones then) and is in the leader's member list.
	chA := h.joinAsync(context.Background(), groupJoiner{instance: "i-a", memberID: a})
	h.waitJoins("g", 1)
	for i := 0; i < 4; i++ {
		h.advance(6 * time.Second)
		groupWantCode(t, "b heartbeat", h.heartbeat("g", b, 1), kerr.RebalanceInProgress)
	}
	h.advance(6 * time.Second) // 30 s: the rebalance timeout
	ra := groupRecv(t, chA)
	if ra.ErrorCode != 0 || ra.Generation != 2 || len(ra.Members) != 2 || ra.Members[1].MemberID != b {
		t.Fatalf("join %+v", ra)
	}
	groupWantCode(t, "leader sync", h.g.Sync(context.Background(), groupSyncReq("g", 2, a, nil)).ErrorCode, nil)
	// Its session (restarted when the join phase ended) then expires.
	h.advance(9 * time.Second)
	groupWantCode(t, "a heartbeat", h.heartbeat("g", a, 2), nil)
	h.advance(time.Second)
	d := h.describe("g")
	if d.State != "PreparingRebalance" || len(d.Members) != 1 {
		t.Fatalf("after the static member expired: %+v", d)
	}
}
