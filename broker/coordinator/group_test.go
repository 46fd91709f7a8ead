package coordinator

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupClock is the Config.Now of every test: time moves only by advance.
type groupClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *groupClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *groupClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// groupHarness is a Groups with a fake clock, recorded callbacks, and tracked
// goroutines for blocking calls: cleanup closes the Groups and fails the test
// if any call is still blocked (a goroutine leak).
type groupHarness struct {
	t   *testing.T
	g   *Groups
	clk *groupClock
	wg  sync.WaitGroup

	mu      sync.Mutex
	stable  []Snapshot
	empty   []Snapshot
	deleted []string
}

func newGroupHarness(t *testing.T, mods ...func(*Config)) *groupHarness {
	t.Helper()
	h := &groupHarness{t: t, clk: &groupClock{now: time.Unix(1_700_000_000, 0)}}
	cfg := DefaultConfig()
	cfg.Now = h.clk.Now
	cfg.InitialRebalanceDelay = 0
	cfg.OnStable = func(s Snapshot) { h.mu.Lock(); h.stable = append(h.stable, s); h.mu.Unlock() }
	cfg.OnEmpty = func(s Snapshot) { h.mu.Lock(); h.empty = append(h.empty, s); h.mu.Unlock() }
	cfg.OnDeleted = func(id string) { h.mu.Lock(); h.deleted = append(h.deleted, id); h.mu.Unlock() }
	for _, mod := range mods {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h.g = New(cfg)
	t.Cleanup(func() {
		h.g.Close()
		done := make(chan struct{})
		go func() { h.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("a blocking call did not return after Close")
		}
	})
	return h
}

func groupWithDelay(d time.Duration) func(*Config) {
	return func(c *Config) { c.InitialRebalanceDelay = d }
}

// advance moves the clock and ticks.
func (h *groupHarness) advance(d time.Duration) {
	h.clk.Advance(d)
	h.g.Tick()
}

func (h *groupHarness) stableSnapshots() []Snapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Snapshot(nil), h.stable...)
}

// groupJoiner describes a JoinGroup request.
type groupJoiner struct {
	version   int16         // default 5 (see v0)
	v0        bool          // version 0
	group     string        // default "g"
	memberID  string        //
	instance  string        // group.instance.id ("" = dynamic)
	client    string        // client id, default "client"
	session   time.Duration // default 10 s
	rebalance time.Duration // default 30 s
	ptype     string        // default "consumer"
	protocols []string      // default {"range"}
	meta      string        // each protocol's metadata is name + "/" + meta
}

func (j groupJoiner) req() *kmsg.JoinGroupRequest {
	req := kmsg.NewPtrJoinGroupRequest()
	req.Version = 5
	if j.version != 0 {
		req.Version = j.version
	}
	if j.v0 {
		req.Version = 0
	}
	req.Group = groupOr(j.group, "g")
	req.MemberID = j.memberID
	if j.instance != "" {
		inst := j.instance
		req.InstanceID = &inst
	}
	req.SessionTimeoutMillis = int32(groupOrDur(j.session, 10*time.Second) / time.Millisecond)
	req.RebalanceTimeoutMillis = int32(groupOrDur(j.rebalance, 30*time.Second) / time.Millisecond)
	req.ProtocolType = groupOr(j.ptype, "consumer")
	protocols := j.protocols
	if protocols == nil {
		protocols = []string{"range"}
	}
	for _, p := range protocols {
		jp := kmsg.NewJoinGroupRequestProtocol()
		jp.Name = p
		jp.Metadata = []byte(p + "/" + j.meta)
		req.Protocols = append(req.Protocols, jp)
	}
	return req
}

func groupOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func groupOrDur(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// join runs a JoinGroup that must not block.
func (h *groupHarness) join(j groupJoiner) *kmsg.JoinGroupResponse {
	return h.g.Join(context.Background(), j.req(), groupOr(j.client, "client"), "/10.0.0.1")
}

// joinAsync runs a JoinGroup on a tracked goroutine.
func (h *groupHarness) joinAsync(ctx context.Context, j groupJoiner) <-chan *kmsg.JoinGroupResponse {
	ch := make(chan *kmsg.JoinGroupResponse, 1)
	req := j.req()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		ch <- h.g.Join(ctx, req, groupOr(j.client, "client"), "/10.0.0.1")
	}()
	return ch
}

func groupSyncReq(group string, gen int32, memberID string, assign map[string]string) *kmsg.SyncGroupRequest {
	req := kmsg.NewPtrSyncGroupRequest()
	req.Version = 5
	req.Group = group
	req.Generation = gen
	req.MemberID = memberID
	for id, a := range assign {
		sa := kmsg.NewSyncGroupRequestGroupAssignment()
		sa.MemberID = id
		sa.MemberAssignment = []byte(a)
		req.GroupAssignment = append(req.GroupAssignment, sa)
	}
	return req
}

func (h *groupHarness) syncAsync(ctx context.Context, req *kmsg.SyncGroupRequest) <-chan *kmsg.SyncGroupResponse {
	ch := make(chan *kmsg.SyncGroupResponse, 1)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		ch <- h.g.Sync(ctx, req)
	}()
	return ch
}

func (h *groupHarness) heartbeat(group, memberID string, gen int32) int16 {
	req := kmsg.NewPtrHeartbeatRequest()
	req.Version = 4
	req.Group = group
	req.MemberID = memberID
	req.Generation = gen
	return h.g.Heartbeat(req).ErrorCode
}

// waiting counts the calls blocked in the group: joins and syncs.
func (h *groupHarness) waiting(id string) (joins, syncs int) {
	grp, _ := h.g.get(id, false)
	if grp == nil {
		return 0, 0
	}
	grp.mu.Lock()
	defer grp.mu.Unlock()
	for _, m := range grp.members {
		if m.join != nil {
			joins++
		}
		if m.sync != nil {
			syncs++
		}
	}
	return joins, syncs
}

func (h *groupHarness) waitJoins(id string, n int) {
	h.t.Helper()
	groupEventually(h.t, func() bool { j, _ := h.waiting(id); return j == n })
}

func (h *groupHarness) waitSyncs(id string, n int) {
	h.t.Helper()
	groupEventually(h.t, func() bool { _, s := h.waiting(id); return s == n })
}

func (h *groupHarness) describe(id string) kmsg.DescribeGroupsResponseGroup {
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Version = 5
	req.Groups = []string{id}
	return h.g.Describe(req)[0]
}

func groupEventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func groupRecv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("call did not return within 5s")
		panic("unreachable")
	}
}

func groupWantCode(t *testing.T, what string, got int16, want *kerr.Error) {
	t.Helper()
	var wantCode int16
	if want != nil {
		wantCode = want.Code
	}
	if got != wantCode {
		t.Fatalf("%s: error code %d (%v), want %d (%v)", what, got, kerr.ErrorForCode(got), wantCode, want)
	}
}

func groupStr(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// groupFormed is a Stable group built by form.
type groupFormed struct {
	group  string
	gen    int32
	leader string
	ids    []string // member ids in join order
}

// form brings joiners into one Stable generation through the protocol: each
// joins (a dynamic v4+ member goes through MEMBER_ID_REQUIRED first) in order,
// the initial delay (the groupHarness must have one) is run out with the clock,
// and the leader assigns "assign-<member id>" to each member.
func (h *groupHarness) form(joiners ...groupJoiner) groupFormed {
	h.t.Helper()
	group := groupOr(joiners[0].group, "g")
	var chans []<-chan *kmsg.JoinGroupResponse
	for i, j := range joiners {
		if j.memberID == "" && j.instance == "" && !j.v0 && (j.version == 0 || j.version >= 4) {
			r := h.join(j)
			groupWantCode(h.t, "first join", r.ErrorCode, kerr.MemberIDRequired)
			j.memberID = r.MemberID
		}
		chans = append(chans, h.joinAsync(context.Background(), j))
		h.waitJoins(group, i+1)
	}
	for n := 0; ; n++ {
		if j, _ := h.waiting(group); j == 0 {
			break
		}
		if n == 20 {
			h.t.Fatal("join phase did not end")
		}
		h.advance(h.g.cfg.InitialRebalanceDelay)
	}
	f := groupFormed{group: group}
	for i, ch := range chans {
		r := groupRecv(h.t, ch)
		groupWantCode(h.t, "join", r.ErrorCode, nil)
		if i == 0 {
			f.gen, f.leader = r.Generation, r.LeaderID
		} else if r.Generation != f.gen || r.LeaderID != f.leader {
			h.t.Fatalf("member %d joined generation %d leader %s, first member %d %s", i, r.Generation, r.LeaderID, f.gen, f.leader)
		}
		f.ids = append(f.ids, r.MemberID)
	}
	h.syncAll(f)
	return f
}

// syncAll runs SyncGroup for every member of f, the leader last, assigning
// "assign-<member id>", and checks what each member gets.
func (h *groupHarness) syncAll(f groupFormed) {
	h.t.Helper()
	assign := make(map[string]string)
	for _, id := range f.ids {
		assign[id] = "assign-" + id
	}
	chans := make(map[string]<-chan *kmsg.SyncGroupResponse)
	for _, id := range f.ids {
		if id != f.leader {
			chans[id] = h.syncAsync(context.Background(), groupSyncReq(f.group, f.gen, id, nil))
		}
	}
	h.waitSyncs(f.group, len(chans))
	chans[f.leader] = h.syncAsync(context.Background(), groupSyncReq(f.group, f.gen, f.leader, assign))
	for id, ch := range chans {
		r := groupRecv(h.t, ch)
		groupWantCode(h.t, "sync "+id, r.ErrorCode, nil)
		if string(r.MemberAssignment) != assign[id] {
			h.t.Fatalf("member %s got assignment %q, want %q", id, r.MemberAssignment, assign[id])
		}
	}
}

func TestGroupJoinSyncTwoMembers(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	chA := h.joinAsync(context.Background(), groupJoiner{version: 3, client: "a", meta: "A"})
	h.waitJoins("g", 1)
	chB := h.joinAsync(context.Background(), groupJoiner{version: 3, client: "b", meta: "B", protocols: []string{"roundrobin", "range"}})
	h.waitJoins("g", 2)
	if d := h.describe("g"); d.State != "PreparingRebalance" || len(d.Members) != 2 || d.Protocol != "" {
		t.Fatalf("during the join phase: %+v", d)
	}

	// B joined during the initial delay of generation 0: the delay is
	// extended once, so the first deadline passes without a generation.
	h.advance(3 * time.Second)
	if j, _ := h.waiting("g"); j != 2 {
		t.Fatalf("%d joins waiting after the first delay, want 2 (extended)", j)
	}
	h.advance(3 * time.Second)
	a, b := groupRecv(t, chA), groupRecv(t, chB)
	for _, r := range []*kmsg.JoinGroupResponse{a, b} {
		groupWantCode(t, "join", r.ErrorCode, nil)
		if r.Generation != 1 || r.LeaderID != a.MemberID || groupStr(r.Protocol) != "range" || groupStr(r.ProtocolType) != "consumer" {
			t.Fatalf("join response %+v, want generation 1, leader %s, range", r, a.MemberID)
		}
	}
	if !strings.HasPrefix(a.MemberID, "a-") || !strings.HasPrefix(b.MemberID, "b-") || a.MemberID == b.MemberID {
		t.Fatalf("member ids %q %q, want client id prefixes", a.MemberID, b.MemberID)
	}
	if len(b.Members) != 0 {
		t.Fatalf("follower got %d members", len(b.Members))
	}
	if len(a.Members) != 2 || a.Members[0].MemberID != a.MemberID || a.Members[1].MemberID != b.MemberID ||
		string(a.Members[0].ProtocolMetadata) != "range/A" || string(a.Members[1].ProtocolMetadata) != "range/B" {
		t.Fatalf("leader's member list %+v", a.Members)
	}
	if d := h.describe("g"); d.State != "CompletingRebalance" {
		t.Fatalf("state %s after the join phase", d.State)
	}

	// The follower waits for the leader's assignment.
	chSyncB := h.syncAsync(context.Background(), groupSyncReq("g", 1, b.MemberID, nil))
	h.waitSyncs("g", 1)
	if got := h.stableSnapshots(); len(got) != 0 {
		t.Fatalf("OnStable before the leader synced: %+v", got)
	}
	sa := h.g.Sync(context.Background(), groupSyncReq("g", 1, a.MemberID, map[string]string{a.MemberID: "pa", b.MemberID: "pb", "ghost": "px"}))
	groupWantCode(t, "leader sync", sa.ErrorCode, nil)
	sb := groupRecv(t, chSyncB)
	groupWantCode(t, "follower sync", sb.ErrorCode, nil)
	if string(sa.MemberAssignment) != "pa" || string(sb.MemberAssignment) != "pb" || groupStr(sb.Protocol) != "range" || groupStr(sb.ProtocolType) != "consumer" {
		t.Fatalf("assignments %q %q protocol %s", sa.MemberAssignment, sb.MemberAssignment, groupStr(sb.Protocol))
	}
	groupWantCode(t, "heartbeat", h.heartbeat("g", b.MemberID, 1), nil)

	snaps := h.stableSnapshots()
	if len(snaps) != 1 {
		t.Fatalf("%d OnStable calls, want 1", len(snaps))
	}
	s := snaps[0]
	if s.Group != "g" || s.Generation != 1 || s.Leader != a.MemberID || s.Protocol != "range" || s.ProtocolType != "consumer" || len(s.Members) != 2 {
		t.Fatalf("snapshot %+v", s)
	}
	ma, mb := s.Members[0], s.Members[1]
	if ma.MemberID != a.MemberID || ma.ClientID != "a" || ma.ClientHost != "/10.0.0.1" || ma.SessionTimeoutMillis != 10000 ||
		ma.RebalanceTimeoutMillis != 30000 || string(ma.Assignment) != "pa" || len(ma.Protocols) != 1 || string(ma.Protocols[0].Metadata) != "range/A" {
		t.Fatalf("snapshot member a %+v", ma)
	}
	if mb.MemberID != b.MemberID || string(mb.Assignment) != "pb" || len(mb.Protocols) != 2 || mb.Protocols[0].Name != "roundrobin" {
		t.Fatalf("snapshot member b %+v", mb)
	}
	d := h.describe("g")
	if d.State != "Stable" || d.Protocol != "range" || len(d.Members) != 2 || string(d.Members[1].MemberAssignment) != "pb" ||
		string(d.Members[1].ProtocolMetadata) != "range/B" || d.Members[1].ClientID != "b" {
		t.Fatalf("describe %+v", d)
	}
}

func TestGroupInitialDelayZeroCompletesAtOnce(t *testing.T) {
	h := newGroupHarness(t)
	r := h.join(groupJoiner{version: 3})
	groupWantCode(t, "join", r.ErrorCode, nil)
	if r.Generation != 1 || r.LeaderID != r.MemberID || len(r.Members) != 1 {
		t.Fatalf("join %+v", r)
	}
	// The leader syncs alone: Stable at once, with an empty assignment
	// when the leader assigns itself nothing.
	s := h.g.Sync(context.Background(), groupSyncReq("g", 1, r.MemberID, nil))
	groupWantCode(t, "sync", s.ErrorCode, nil)
	if s.MemberAssignment == nil || len(s.MemberAssignment) != 0 {
		t.Fatalf("assignment %v, want empty non-nil", s.MemberAssignment)
	}
}

func TestGroupInitialDelayCappedByRebalanceTimeout(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	ch := h.joinAsync(context.Background(), groupJoiner{version: 3, rebalance: 7 * time.Second})
	h.waitJoins("g", 1)
	// New members keep arriving every 3 s; the phase may be extended only
	// up to the rebalance timeout: 3 s + 3 s + 1 s.
	var late []<-chan *kmsg.JoinGroupResponse
	for i := 0; i < 2; i++ {
		late = append(late, h.joinAsync(context.Background(), groupJoiner{version: 3, rebalance: 7 * time.Second}))
		h.waitJoins("g", 2+i)
		h.advance(3 * time.Second)
	}
	if j, _ := h.waiting("g"); j != 3 {
		t.Fatalf("join phase ended after 6 s")
	}
	late = append(late, h.joinAsync(context.Background(), groupJoiner{version: 3, rebalance: 7 * time.Second}))
	h.waitJoins("g", 4)
	h.advance(999 * time.Millisecond)
	if j, _ := h.waiting("g"); j != 4 {
		t.Fatalf("join phase ended before 7 s")
	}
	h.advance(time.Millisecond)
	for _, c := range append(late, ch) {
		r := groupRecv(t, c)
		if r.ErrorCode != 0 || r.Generation != 1 {
			t.Fatalf("join %+v", r)
		}
	}
}

func TestGroupJoinValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		j    groupJoiner
		want *kerr.Error
	}{
		{"empty group id", groupJoiner{group: "-", version: 3}, kerr.InvalidGroupID},
		{"session below min", groupJoiner{version: 3, session: 5999 * time.Millisecond}, kerr.InvalidSessionTimeout},
		{"session above max", groupJoiner{version: 3, session: 31 * time.Minute}, kerr.InvalidSessionTimeout},
		{"unknown member of unknown group", groupJoiner{version: 3, memberID: "nobody"}, kerr.UnknownMemberID},
		{"empty protocol type", groupJoiner{version: 3, ptype: "-"}, kerr.InconsistentGroupProtocol},
		{"no protocols", groupJoiner{version: 3, protocols: []string{}}, kerr.InconsistentGroupProtocol},
		{"v4 first join", groupJoiner{version: 4}, kerr.MemberIDRequired},
		{"v3 first join", groupJoiner{version: 3}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newGroupHarness(t)
			j := tc.j
			req := j.req()
			if j.group == "-" {
				req.Group = ""
			}
			if j.ptype == "-" {
				req.ProtocolType = ""
			}
			r := h.g.Join(context.Background(), req, "c", "h")
			groupWantCode(t, tc.name, r.ErrorCode, tc.want)
			if tc.want != nil && r.Generation != -1 {
				t.Fatalf("generation %d on error, want -1", r.Generation)
			}
		})
	}
}

func TestGroupMemberIDRequired(t *testing.T) {
	h := newGroupHarness(t)
	r := h.join(groupJoiner{version: 4, client: "kgo"})
	groupWantCode(t, "first join", r.ErrorCode, kerr.MemberIDRequired)
	if !strings.HasPrefix(r.MemberID, "kgo-") || len(r.MemberID) != len("kgo-")+36 || r.Generation != -1 {
		t.Fatalf("MEMBER_ID_REQUIRED response %+v", r)
	}
	if d := h.describe("g"); d.State != "Empty" || len(d.Members) != 0 {
		t.Fatalf("a pending member is not a member: %+v", d)
	}
	r2 := h.join(groupJoiner{version: 4, client: "kgo", memberID: r.MemberID})
	groupWantCode(t, "rejoin", r2.ErrorCode, nil)
	if r2.MemberID != r.MemberID || r2.Generation != 1 || r2.LeaderID != r.MemberID {
		t.Fatalf("rejoin %+v", r2)
	}

	// A pending member expires after its session timeout.
	p := h.join(groupJoiner{version: 4, session: 6 * time.Second})
	groupWantCode(t, "second first join", p.ErrorCode, kerr.MemberIDRequired)
	h.advance(6 * time.Second)
	late := h.join(groupJoiner{version: 4, memberID: p.MemberID, session: 6 * time.Second})
	groupWantCode(t, "rejoin after expiry", late.ErrorCode, kerr.UnknownMemberID)
}

func TestGroupJoinPhaseWaitsForPendingMembers(t *testing.T) {
	h := newGroupHarness(t)
	a := h.join(groupJoiner{version: 4})
	a = h.join(groupJoiner{version: 4, memberID: a.MemberID})
	groupWantCode(t, "a join", a.ErrorCode, nil)
	groupWantCode(t, "a sync", h.g.Sync(context.Background(), groupSyncReq("g", 1, a.MemberID, nil)).ErrorCode, nil)

	// B gets an id; the leader rejoins (a rebalance) while B is pending:
	// the join phase waits for B rather than ending without it.
	b := h.join(groupJoiner{version: 4})
	groupWantCode(t, "b first join", b.ErrorCode, kerr.MemberIDRequired)
	chA := h.joinAsync(context.Background(), groupJoiner{version: 4, memberID: a.MemberID})
	h.waitJoins("g", 1)
	if d := h.describe("g"); d.State != "PreparingRebalance" {
		t.Fatalf("join phase ended without the pending member: %s", d.State)
	}
	chB := h.joinAsync(context.Background(), groupJoiner{version: 4, memberID: b.MemberID})
	ra, rb := groupRecv(t, chA), groupRecv(t, chB)
	if ra.ErrorCode != 0 || rb.ErrorCode != 0 || ra.Generation != 2 || rb.Generation != 2 || len(ra.Members) != 2 {
		t.Fatalf("joins %+v %+v", ra, rb)
	}
}

func TestGroupThirdMemberTriggersRebalance(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{meta: "A"}, groupJoiner{meta: "B"})
	a, b := f.ids[0], f.ids[1]
	if f.gen != 1 || f.leader != a {
		t.Fatalf("groupFormed %+v", f)
	}

	c := h.join(groupJoiner{client: "c", meta: "C"})
	groupWantCode(t, "c first join", c.ErrorCode, kerr.MemberIDRequired)
	if d := h.describe("g"); d.State != "Stable" {
		t.Fatalf("a pending member rebalanced the group: %s", d.State)
	}
	chC := h.joinAsync(context.Background(), groupJoiner{client: "c", meta: "C", memberID: c.MemberID})
	groupEventually(t, func() bool { return h.describe("g").State == "PreparingRebalance" })
	groupWantCode(t, "a heartbeat", h.heartbeat("g", a, 1), kerr.RebalanceInProgress)
	groupWantCode(t, "b heartbeat", h.heartbeat("g", b, 1), kerr.RebalanceInProgress)
	// Sync and commits of the old generation during the join phase.
	groupWantCode(t, "sync during join phase", h.g.Sync(context.Background(), groupSyncReq("g", 1, b, nil)).ErrorCode, kerr.RebalanceInProgress)
	if err := h.g.CheckCommit("g", b, nil, 1); err != nil {
		t.Fatalf("commit during PreparingRebalance: %v", err)
	}

	// Both rejoin with their ids (a cooperative client keeps its id and
	// its partitions meanwhile).
	chA := h.joinAsync(context.Background(), groupJoiner{meta: "A", memberID: a})
	chB := h.joinAsync(context.Background(), groupJoiner{meta: "B", memberID: b})
	ra, rb, rc := groupRecv(t, chA), groupRecv(t, chB), groupRecv(t, chC)
	for _, r := range []*kmsg.JoinGroupResponse{ra, rb, rc} {
		groupWantCode(t, "rejoin", r.ErrorCode, nil)
		if r.Generation != 2 || r.LeaderID != a {
			t.Fatalf("rejoin %+v, want generation 2 leader %s", r, a)
		}
	}
	if ra.MemberID != a || rb.MemberID != b || rc.MemberID != c.MemberID {
		t.Fatalf("member ids changed: %s %s %s", ra.MemberID, rb.MemberID, rc.MemberID)
	}
	var ids []string
	for _, m := range ra.Members {
		ids = append(ids, m.MemberID+"="+string(m.ProtocolMetadata))
	}
	if want := a + "=range/A," + b + "=range/B," + c.MemberID + "=range/C"; strings.Join(ids, ",") != want {
		t.Fatalf("leader's members %v, want %s", ids, want)
	}
	groupWantCode(t, "old generation heartbeat", h.heartbeat("g", b, 1), kerr.IllegalGeneration)
	groupWantCode(t, "heartbeat while completing", h.heartbeat("g", b, 2), nil)
	if err := h.g.CheckCommit("g", b, nil, 2); err != kerr.RebalanceInProgress {
		t.Fatalf("commit during CompletingRebalance: %v", err)
	}
	h.syncAll(groupFormed{group: "g", gen: 2, leader: a, ids: []string{a, b, c.MemberID}})
	if d := h.describe("g"); d.State != "Stable" || len(d.Members) != 3 {
		t.Fatalf("describe %+v", d)
	}
	if n := len(h.stableSnapshots()); n != 2 {
		t.Fatalf("%d OnStable calls, want 2", n)
	}
}

func TestGroupSessionExpiry(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{}, groupJoiner{})
	a, b := f.ids[0], f.ids[1]

	h.advance(6 * time.Second)
	groupWantCode(t, "a heartbeat", h.heartbeat("g", a, 1), nil)
	h.advance(3999 * time.Millisecond) // b's last sign of life (sync) was 10 s ago, minus 1 ms
	if d := h.describe("g"); d.State != "Stable" {
		t.Fatalf("b expired early: %s", d.State)
	}
	h.advance(time.Millisecond)
	d := h.describe("g")
	if d.State != "PreparingRebalance" || len(d.Members) != 1 || d.Members[0].MemberID != a {
		t.Fatalf("after b's session expired: %+v", d)
	}
	groupWantCode(t, "expired heartbeat", h.heartbeat("g", b, 1), kerr.UnknownMemberID)
	groupWantCode(t, "a heartbeat", h.heartbeat("g", a, 1), kerr.RebalanceInProgress)
	r := h.join(groupJoiner{memberID: a})
	if r.ErrorCode != 0 || r.Generation != 2 || r.LeaderID != a || len(r.Members) != 1 {
		t.Fatalf("rejoin %+v", r)
	}

	// The last member expiring leaves the group Empty at a new generation.
	groupWantCode(t, "sync", h.g.Sync(context.Background(), groupSyncReq("g", 2, a, nil)).ErrorCode, nil)
	h.advance(10 * time.Second)
	if d := h.describe("g"); d.State != "Empty" {
		t.Fatalf("group of one expired member: %s", d.State)
	}
	h.mu.Lock()
	empties := append([]Snapshot(nil), h.empty...)
	h.mu.Unlock()
	if len(empties) != 1 || empties[0].Generation != 3 || len(empties[0].Members) != 0 || empties[0].ProtocolType != "consumer" {
		t.Fatalf("OnEmpty %+v", empties)
	}
}

func TestGroupRebalanceTimeoutRemovesLaggards(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{v0: true, session: 20 * time.Second}, groupJoiner{v0: true, session: 20 * time.Second})
	a, b := f.ids[0], f.ids[1]
	// v0 has no rebalance timeout: the session timeout (20 s) is used.
	c := h.joinAsync(context.Background(), groupJoiner{v0: true, session: 20 * time.Second})
	h.waitJoins("g", 1)
	ca := h.joinAsync(context.Background(), groupJoiner{v0: true, session: 20 * time.Second, memberID: a})
	h.waitJoins("g", 2)
	// b heartbeats but never rejoins.
	for i := 0; i < 3; i++ {
		h.advance(6 * time.Second)
		groupWantCode(t, "b heartbeat", h.heartbeat("g", b, 1), kerr.RebalanceInProgress)
	}
	h.advance(1999 * time.Millisecond)
	if j, _ := h.waiting("g"); j != 2 {
		t.Fatal("join phase ended before the rebalance timeout")
	}
	h.advance(time.Millisecond)
	rc, ra := groupRecv(t, c), groupRecv(t, ca)
	if rc.Generation != 2 || ra.Generation != 2 || ra.LeaderID != a || len(ra.Members) != 2 {
		t.Fatalf("joins %+v %+v", ra, rc)
	}
	groupWantCode(t, "removed member heartbeat", h.heartbeat("g", b, 2), kerr.UnknownMemberID)
}

func TestGroupPendingSyncExpiry(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	// Sessions outlast the rebalance timeout, so only the sync deadline can
	// remove anyone.
	chA := h.joinAsync(context.Background(), groupJoiner{version: 3, session: 30 * time.Second, rebalance: 15 * time.Second})
	h.waitJoins("g", 1)
	chB := h.joinAsync(context.Background(), groupJoiner{version: 3, session: 30 * time.Second, rebalance: 15 * time.Second})
	h.waitJoins("g", 2)
	h.advance(3 * time.Second)
	h.advance(3 * time.Second)
	a, b := groupRecv(t, chA), groupRecv(t, chB)
	// Only the leader syncs; b heartbeats but never syncs, and is removed
	// one rebalance timeout after the join phase ended.
	groupWantCode(t, "leader sync", h.g.Sync(context.Background(), groupSyncReq("g", 1, a.MemberID, nil)).ErrorCode, nil)
	h.advance(5 * time.Second)
	groupWantCode(t, "b heartbeat", h.heartbeat("g", b.MemberID, 1), nil)
	h.advance(10 * time.Second)
	d := h.describe("g")
	if d.State != "PreparingRebalance" || len(d.Members) != 1 || d.Members[0].MemberID != a.MemberID {
		t.Fatalf("after the sync deadline: %+v", d)
	}
}

func TestGroupSyncErrors(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{instance: "i-a"}, groupJoiner{})
	a := f.ids[0]
	other := "other"
	for _, tc := range []struct {
		name string
		mod  func(*kmsg.SyncGroupRequest)
		want *kerr.Error
	}{
		{"ok", func(*kmsg.SyncGroupRequest) {}, nil},
		{"empty group", func(r *kmsg.SyncGroupRequest) { r.Group = "" }, kerr.InvalidGroupID},
		{"unknown group", func(r *kmsg.SyncGroupRequest) { r.Group = "nope" }, kerr.UnknownMemberID},
		{"unknown member", func(r *kmsg.SyncGroupRequest) { r.MemberID = "nobody"; r.InstanceID = nil }, kerr.UnknownMemberID},
		{"instance of another member id", func(r *kmsg.SyncGroupRequest) { r.MemberID = "nobody" }, kerr.FencedInstanceID},
		{"wrong generation", func(r *kmsg.SyncGroupRequest) { r.Generation = 7 }, kerr.IllegalGeneration},
		{"wrong protocol type", func(r *kmsg.SyncGroupRequest) { r.ProtocolType = &other }, kerr.InconsistentGroupProtocol},
		{"wrong protocol", func(r *kmsg.SyncGroupRequest) { r.Protocol = &other }, kerr.InconsistentGroupProtocol},
		{"protocol unchecked before v5", func(r *kmsg.SyncGroupRequest) { r.Version = 4; r.Protocol = &other }, nil},
		{"unknown instance", func(r *kmsg.SyncGroupRequest) { r.InstanceID = &other }, kerr.UnknownMemberID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := groupSyncReq("g", f.gen, a, nil)
			inst := "i-a"
			req.InstanceID = &inst
			tc.mod(req)
			r := h.g.Sync(context.Background(), req)
			groupWantCode(t, tc.name, r.ErrorCode, tc.want)
			if tc.want == nil && string(r.MemberAssignment) != "assign-"+a {
				t.Fatalf("stable sync got %q", r.MemberAssignment)
			}
		})
	}
}

func TestGroupMaxSize(t *testing.T) {
	h := newGroupHarness(t, func(c *Config) { c.MaxGroupSize = 2 })
	a := h.join(groupJoiner{version: 3})
	groupWantCode(t, "sync", h.g.Sync(context.Background(), groupSyncReq("g", 1, a.MemberID, nil)).ErrorCode, nil)
	chB := h.joinAsync(context.Background(), groupJoiner{version: 3})
	h.waitJoins("g", 1)
	chA := h.joinAsync(context.Background(), groupJoiner{version: 3, memberID: a.MemberID})
	ra, rb := groupRecv(t, chA), groupRecv(t, chB)
	if ra.Generation != 2 || rb.Generation != 2 {
		t.Fatalf("joins %+v %+v", ra, rb)
	}
	r := h.join(groupJoiner{version: 3})
	groupWantCode(t, "third member", r.ErrorCode, kerr.GroupMaxSizeReached)
	if r.MemberID != "" {
		t.Fatalf("rejected member got id %q", r.MemberID)
	}
	if d := h.describe("g"); d.State != "CompletingRebalance" || len(d.Members) != 2 {
		t.Fatalf("describe %+v", d)
	}
}

func TestGroupJoinContextCancel(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	f := h.form(groupJoiner{}, groupJoiner{})
	a, b := f.ids[0], f.ids[1]
	// a rejoins (a rebalance) and gives up; b rejoins and completes
	// the phase alone once the rebalance timeout ends.
	ctx, cancel := context.WithCancel(context.Background())
	chA := h.joinAsync(ctx, groupJoiner{memberID: a})
	h.waitJoins("g", 1)
	cancel()
	ra := groupRecv(t, chA)
	groupWantCode(t, "cancelled join", ra.ErrorCode, kerr.RebalanceInProgress)
	if ra.MemberID != a {
		t.Fatalf("cancelled join lost the member id: %q", ra.MemberID)
	}
	h.waitJoins("g", 0)
	chB := h.joinAsync(context.Background(), groupJoiner{memberID: b})
	h.waitJoins("g", 1)
	h.advance(30 * time.Second)
	rb := groupRecv(t, chB)
	if rb.ErrorCode != 0 || rb.Generation != 2 || rb.LeaderID != b || len(rb.Members) != 1 {
		t.Fatalf("join %+v", rb)
	}

}

func TestGroupSyncContextCancel(t *testing.T) {
	h := newGroupHarness(t, groupWithDelay(3*time.Second))
	chA := h.joinAsync(context.Background(), groupJoiner{version: 3})
	h.waitJoins("g", 1)
	chB := h.joinAsync(context.Background(), groupJoiner{version: 3})
	h.waitJoins("g", 2)
	h.advance(3 * time.Second)
	h.advance(3 * time.Second)
	a, b := groupRecv(t, chA), groupRecv(t, chB)

	ctx, cancel := context.WithCancel(context.Background())
	chS := h.syncAsync(ctx, groupSyncReq("g", 1, b.MemberID, nil))
	h.waitSyncs("g", 1)
	cancel()
	groupWantCode(t, "cancelled sync", groupRecv(t, chS).ErrorCode, kerr.RebalanceInProgress)
	h.waitSyncs("g", 0)
	if d := h.describe("g"); d.State != "CompletingRebalance" || len(d.Members) != 2 {
		t.Fatalf("after a cancelled sync: %+v", d)
	}
	// The follower syncs again and gets the leader's assignment.
	chS = h.syncAsync(context.Background(), groupSyncReq("g", 1, b.MemberID, nil))
	h.waitSyncs("g", 1)
	sa := h.g.Sync(context.Background(), groupSyncReq("g", 1, a.MemberID, map[string]string{b.MemberID: "x"}))
	groupWantCode(t, "leader sync", sa.ErrorCode, nil)
	if s := groupRecv(t, chS); s.ErrorCode != 0 || !bytes.Equal(s.MemberAssignment, []byte("x")) {
		t.Fatalf("sync after cancel %+v", s)
	}
}
