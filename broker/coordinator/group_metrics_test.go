package coordinator

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestGroupOnRebalance: OnRebalance sees each join phase that ends with
// members (false: CompletingRebalance) and each generation the leader's
// SyncGroup completes (true: Stable), in order; a join phase that ends
// with nobody left (Empty) is no rebalance.
func TestGroupOnRebalance(t *testing.T) {
	var mu sync.Mutex
	var events []bool
	h := newGroupHarness(t, groupWithDelay(3*time.Second), func(c *Config) {
		c.OnRebalance = func(completed bool) { mu.Lock(); events = append(events, completed); mu.Unlock() }
	})
	got := func() []bool { mu.Lock(); defer mu.Unlock(); return slices.Clone(events) }

	f := h.form(groupJoiner{meta: "A"}, groupJoiner{meta: "B"})
	if want := []bool{false, true}; !slices.Equal(got(), want) {
		t.Fatalf("after the first generation: events %v, want %v", got(), want)
	}
	a, b := f.ids[0], f.ids[1]

	// A third member: one more rebalance, completed by the leader's sync.
	c := h.join(groupJoiner{client: "c", meta: "C"})
	groupWantCode(t, "c first join", c.ErrorCode, kerr.MemberIDRequired)
	chC := h.joinAsync(context.Background(), groupJoiner{client: "c", meta: "C", memberID: c.MemberID})
	groupEventually(t, func() bool { return h.describe("g").State == "PreparingRebalance" })
	chA := h.joinAsync(context.Background(), groupJoiner{meta: "A", memberID: a})
	chB := h.joinAsync(context.Background(), groupJoiner{meta: "B", memberID: b})
	for _, ch := range []<-chan *kmsg.JoinGroupResponse{chA, chB, chC} {
		groupWantCode(t, "rejoin", groupRecv(t, ch).ErrorCode, nil)
	}
	if want := []bool{false, true, false}; !slices.Equal(got(), want) {
		t.Fatalf("after the second join phase: events %v, want %v", got(), want)
	}
	h.syncAll(groupFormed{group: "g", gen: 2, leader: a, ids: []string{a, b, c.MemberID}})
	if want := []bool{false, true, false, true}; !slices.Equal(got(), want) {
		t.Fatalf("after the second sync: events %v, want %v", got(), want)
	}

	// Everyone leaves: the group goes Empty through no rebalance.
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Version = 3
	req.Group = "g"
	for _, id := range []string{a, b, c.MemberID} {
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = id
		req.Members = append(req.Members, m)
	}
	groupWantCode(t, "leave", h.g.Leave(req).ErrorCode, nil)
	groupEventually(t, func() bool { return h.describe("g").State == "Empty" })
	if want := []bool{false, true, false, true}; !slices.Equal(got(), want) {
		t.Fatalf("after every member left: events %v, want %v", got(), want)
	}
}
