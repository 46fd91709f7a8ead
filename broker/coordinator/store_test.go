package coordinator

import (
	"bytes"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"
)

const storeTestPartitions = 50

// storeLog collects what the store logs, for tests that check a skip was
// reported.
type storeLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *storeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *storeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func storeOpen(t *testing.T, dir string) (*OffsetStore, *storeLog) {
	t.Helper()
	logs := new(storeLog)
	s, err := OpenOffsetStore(dir, dir == "", storeTestPartitions, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

// storeGroupIn finds a group name of offsets partition p.
func storeGroupIn(t *testing.T, p int32, prefix string) string {
	t.Helper()
	for i := range 10000 {
		g := fmt.Sprintf("%s-%d", prefix, i)
		if OffsetsPartition(g, storeTestPartitions) == p {
			return g
		}
	}
	t.Fatalf("no group %s-* in partition %d", prefix, p)
	return ""
}

func storeCommit(group, topic string, p int32, offset, commitMs int64) OffsetEvent {
	return OffsetEvent{Kind: OffsetEventCommit, Commit: CommitKey{group, topic, p},
		Offset: OffsetValue{Offset: offset, LeaderEpoch: 3, Metadata: "m" + topic, CommitMs: commitMs, ExpireMs: -1}}
}

func storeApply(t *testing.T, s *OffsetStore, partition int32, index uint64, evs ...OffsetEvent) {
	t.Helper()
	if err := s.Apply(partition, index, [][]byte{recordsMustBatch(t, evs...)}); err != nil {
		t.Fatalf("apply %d@%d: %v", index, partition, err)
	}
}

func storeWantOffset(t *testing.T, s *OffsetStore, group, topic string, p int32, want int64) {
	t.Helper()
	v, ok := s.Offset(group, topic, p)
	switch {
	case want < 0 && ok:
		t.Fatalf("%s %s/%d: offset %+v, want none", group, topic, p, v)
	case want >= 0 && (!ok || v.Offset != want):
		t.Fatalf("%s %s/%d: offset %+v (found %v), want %d", group, topic, p, v, ok, want)
	}
}

func TestOffsetsPartition(t *testing.T) {
	// Computed with Java 17: Utils.abs(group.hashCode()) % n, Kafka's
	// Utils.abs being (n == Integer.MIN_VALUE) ? 0 : Math.abs(n).
	for _, tc := range []struct {
		group        string
		hash         int32 // Java's String.hashCode, for the record
		n1, n16, n50 int32
	}{
		{"", 0, 0, 0, 0},
		{"a", 97, 0, 1, 47},
		{"my-group", -1906497762, 0, 2, 12}, // (hash & 0x7fffffff) % 50 would be 36
		{"console-consumer-12345", 158455506, 0, 2, 6},
		{"polygenelubricants", -2147483648, 0, 0, 0}, // Integer.MIN_VALUE
		{"test-group", 627841412, 0, 4, 12},
		{"groupé", -1237460406, 0, 6, 6},
		{"消费者组", 871131088, 0, 0, 38},
		{"😀group", -1231696132, 0, 4, 32}, // a surrogate pair
		{"Ünïcödé-グループ", 557422286, 0, 14, 36},
		{"kafka-lag-exporter", 983336067, 0, 3, 17},
		{"connect-cluster", 1440343063, 0, 7, 13},
		{"\x00", 0, 0, 0, 0},
	} {
		for _, c := range []struct{ n, want int32 }{{1, tc.n1}, {16, tc.n16}, {50, tc.n50}} {
			if got := OffsetsPartition(tc.group, c.n); got != c.want {
				t.Errorf("OffsetsPartition(%q, %d) = %d, want %d (hashCode %d)", tc.group, c.n, got, c.want, tc.hash)
			}
		}
	}
	if got := OffsetsPartition("g", 0); got != -1 {
		t.Errorf("n=0: %d", got)
	}
	if got := OffsetsPartition("g", -3); got != -1 {
		t.Errorf("n=-3: %d", got)
	}
}

func TestStoreApplyAndRead(t *testing.T) {
	s, logs := storeOpen(t, "")
	p := int32(12)
	g1, g2 := "my-group", "test-group" // both partition 12 of 50
	md := recordsTestGroup(3)
	storeApply(t, s, p, 1,
		storeCommit(g1, "orders", 0, 10, 100),
		storeCommit(g1, "orders", 1, 11, 100),
		storeCommit(g1, "payments", 0, 12, 100),
		storeCommit(g2, "orders", 0, 20, 100),
		OffsetEvent{Kind: OffsetEventGroup, Group: g1, Metadata: md},
	)
	if got := s.AppliedIndex(p); got != 1 {
		t.Fatalf("applied index %d", got)
	}
	v, ok := s.Offset(g1, "orders", 1)
	want := OffsetValue{Offset: 11, LeaderEpoch: 3, Metadata: "morders", CommitMs: 100, ExpireMs: -1}
	if !ok || v != want {
		t.Fatalf("offset %+v %v, want %+v", v, ok, want)
	}
	storeWantOffset(t, s, g1, "orders", 2, -1)
	storeWantOffset(t, s, "a", "orders", 0, -1)
	got := s.GroupOffsets(g1)
	if len(got) != 2 || len(got["orders"]) != 2 || got["orders"][0].Offset != 10 || got["payments"][0].Offset != 12 {
		t.Fatalf("group offsets %+v", got)
	}
	if got := s.GroupOffsets("nobody"); got != nil {
		t.Fatalf("offsets of an unknown group: %+v", got)
	}
	gm, ok := s.GroupMetadata(g1)
	if !ok || !reflect.DeepEqual(gm, md) {
		t.Fatalf("group metadata %+v %v", gm, ok)
	}
	if _, ok := s.GroupMetadata(g2); ok {
		t.Fatal("metadata for a group that has only commits")
	}
	if got := s.Groups(p); !slices.Equal(got, []string{g1, g2}) {
		t.Fatalf("groups %q", got)
	}
	if got := s.Groups(13); len(got) != 0 {
		t.Fatalf("groups of an empty partition %q", got)
	}
	if strings.Contains(logs.String(), "level=WARN") || strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("unexpected log:\n%s", logs)
	}
}

// TestStoreKeys checks that names cannot run into each other: group ids may
// hold "/" or be empty, and one may be a prefix of another.
func TestStoreKeys(t *testing.T) {
	s, _ := storeOpen(t, "")
	groups := []string{"", "g", "g/", "g/x", "gx", "g\xff", "\xff\xff"}
	for i, g := range groups {
		storeApply(t, s, OffsetsPartition(g, storeTestPartitions), uint64(i+1),
			storeCommit(g, "t", 0, int64(i), 1), storeCommit(g, "t/1", 1, int64(100+i), 1),
			OffsetEvent{Kind: OffsetEventGroup, Group: g, Metadata: recordsTestGroup(4)})
	}
	for i, g := range groups {
		got := s.GroupOffsets(g)
		if len(got) != 2 || len(got["t"]) != 1 || got["t"][0].Offset != int64(i) || got["t/1"][1].Offset != int64(100+i) {
			t.Fatalf("group %q: %+v", g, got)
		}
		if !slices.Contains(s.Groups(OffsetsPartition(g, storeTestPartitions)), g) {
			t.Fatalf("group %q not listed", g)
		}
	}
	var all []string
	for p := range int32(storeTestPartitions) {
		all = append(all, s.Groups(p)...)
	}
	slices.Sort(all)
	if want := slices.Sorted(slices.Values(groups)); !slices.Equal(all, want) {
		t.Fatalf("groups %q, want %q", all, want)
	}
}

func TestStoreReplaySkipped(t *testing.T) {
	s, _ := storeOpen(t, "")
	g := storeGroupIn(t, 4, "r")
	storeApply(t, s, 4, 5, storeCommit(g, "t", 0, 10, 1))
	storeApply(t, s, 4, 5, storeCommit(g, "t", 0, 99, 1), storeCommit(g, "t", 1, 99, 1))
	storeApply(t, s, 4, 3, storeCommit(g, "t", 0, 98, 1))
	storeWantOffset(t, s, g, "t", 0, 10)
	storeWantOffset(t, s, g, "t", 1, -1)
	if got := s.AppliedIndex(4); got != 5 {
		t.Fatalf("applied index %d", got)
	}
	storeApply(t, s, 4, 6, storeCommit(g, "t", 0, 11, 1))
	storeWantOffset(t, s, g, "t", 0, 11)

	// The same entry applied again at later indexes changes nothing more.
	b := recordsMustBatch(t, storeCommit(g, "t", 0, 12, 1), OffsetEvent{Kind: OffsetEventCommitTombstone, Commit: CommitKey{g, "t", 5}})
	for idx := uint64(7); idx <= 8; idx++ {
		if err := s.Apply(4, idx, [][]byte{b, b}); err != nil {
			t.Fatal(err)
		}
		storeWantOffset(t, s, g, "t", 0, 12)
	}
	// Partitions keep separate indexes, and an entry may carry no batch.
	if err := s.Apply(5, 1, nil); err != nil {
		t.Fatal(err)
	}
	if s.AppliedIndex(5) != 1 || s.AppliedIndex(4) != 8 || s.AppliedIndex(6) != 0 {
		t.Fatalf("applied indexes %d %d %d", s.AppliedIndex(5), s.AppliedIndex(4), s.AppliedIndex(6))
	}
	if err := s.Apply(storeTestPartitions, 1, nil); err == nil {
		t.Fatal("partition out of range accepted")
	}
	if err := s.Apply(-1, 1, nil); err == nil {
		t.Fatal("negative partition accepted")
	}
}

func TestStoreTombstones(t *testing.T) {
	s, _ := storeOpen(t, "")
	g := storeGroupIn(t, 7, "t")
	storeApply(t, s, 7, 1, storeCommit(g, "t", 0, 1, 1), storeCommit(g, "t", 1, 2, 1),
		OffsetEvent{Kind: OffsetEventGroup, Group: g, Metadata: recordsTestGroup(3)})
	storeApply(t, s, 7, 2, OffsetEvent{Kind: OffsetEventCommitTombstone, Commit: CommitKey{g, "t", 0}},
		OffsetEvent{Kind: OffsetEventCommitTombstone, Commit: CommitKey{g, "never", 0}})
	storeWantOffset(t, s, g, "t", 0, -1)
	storeWantOffset(t, s, g, "t", 1, 2)

	// A group tombstone removes the metadata, not the commits.
	storeApply(t, s, 7, 3, OffsetEvent{Kind: OffsetEventGroupTombstone, Group: g})
	if _, ok := s.GroupMetadata(g); ok {
		t.Fatal("metadata survived its tombstone")
	}
	storeWantOffset(t, s, g, "t", 1, 2)
	if !slices.Equal(s.Groups(7), []string{g}) {
		t.Fatalf("groups %q", s.Groups(7))
	}

	// Within one entry the last record for a key wins.
	storeApply(t, s, 7, 4, storeCommit(g, "t", 2, 5, 1), OffsetEvent{Kind: OffsetEventCommitTombstone, Commit: CommitKey{g, "t", 2}},
		OffsetEvent{Kind: OffsetEventCommitTombstone, Commit: CommitKey{g, "t", 3}}, storeCommit(g, "t", 3, 6, 1))
	storeWantOffset(t, s, g, "t", 2, -1)
	storeWantOffset(t, s, g, "t", 3, 6)

	storeApply(t, s, 7, 5, OffsetEvent{Kind: OffsetEventCommitTombstone, Commit: CommitKey{g, "t", 1}},
		OffsetEvent{Kind: OffsetEventCommitTombstone, Commit: CommitKey{g, "t", 3}})
	if got := s.GroupOffsets(g); got != nil {
		t.Fatalf("offsets left %+v", got)
	}
	if got := s.Groups(7); len(got) != 0 {
		t.Fatalf("groups %q", got)
	}
}

func TestStoreRestart(t *testing.T) {
	dir := t.TempDir()
	g1, g2 := storeGroupIn(t, 3, "a"), storeGroupIn(t, 40, "b")
	func() {
		defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
		s, err := OpenOffsetStore(dir, false, storeTestPartitions, nil)
		if err != nil {
			t.Fatal(err)
		}
		storeApply(t, s, 3, 17, storeCommit(g1, "t", 0, 100, 1), OffsetEvent{Kind: OffsetEventGroup, Group: g1, Metadata: recordsTestGroup(4)})
		storeApply(t, s, 40, 9, storeCommit(g2, "u", 2, 200, 1))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	s, _ := storeOpen(t, dir)
	if s.AppliedIndex(3) != 17 || s.AppliedIndex(40) != 9 {
		t.Fatalf("applied indexes %d %d", s.AppliedIndex(3), s.AppliedIndex(40))
	}
	storeWantOffset(t, s, g1, "t", 0, 100)
	storeWantOffset(t, s, g2, "u", 2, 200)
	if md, ok := s.GroupMetadata(g1); !ok || !reflect.DeepEqual(md, recordsTestGroup(4)) {
		t.Fatalf("metadata %+v %v", md, ok)
	}
	// Raft replays entries after its snapshot on start: skipped.
	storeApply(t, s, 3, 17, storeCommit(g1, "t", 0, 1, 1))
	storeWantOffset(t, s, g1, "t", 0, 100)
	storeApply(t, s, 3, 18, storeCommit(g1, "t", 0, 101, 1))
	storeWantOffset(t, s, g1, "t", 0, 101)
}

func TestStoreDropPartition(t *testing.T) {
	s, _ := storeOpen(t, "")
	g1, g2 := storeGroupIn(t, 1, "d"), storeGroupIn(t, 2, "d")
	var evs []OffsetEvent
	for i := range 5000 { // more than one drop chunk
		evs = append(evs, storeCommit(g1, "t", int32(i), int64(i), 1))
	}
	evs = append(evs, OffsetEvent{Kind: OffsetEventGroup, Group: g1, Metadata: recordsTestGroup(3)})
	storeApply(t, s, 1, 10, evs...)
	storeApply(t, s, 2, 20, storeCommit(g2, "t", 0, 7, 1), OffsetEvent{Kind: OffsetEventGroup, Group: g2, Metadata: recordsTestGroup(3)})

	if err := s.DropPartition(1); err != nil {
		t.Fatal(err)
	}
	if s.AppliedIndex(1) != 0 || len(s.Groups(1)) != 0 || s.GroupOffsets(g1) != nil {
		t.Fatalf("partition 1 left: index %d, groups %q", s.AppliedIndex(1), s.Groups(1))
	}
	if _, ok := s.GroupMetadata(g1); ok {
		t.Fatal("metadata survived the drop")
	}
	if s.AppliedIndex(2) != 20 || !slices.Equal(s.Groups(2), []string{g2}) {
		t.Fatal("partition 2 touched")
	}
	storeWantOffset(t, s, g2, "t", 0, 7)
	if _, ok := s.GroupMetadata(g2); !ok {
		t.Fatal("partition 2 metadata gone")
	}
	// Rebuild from the start.
	storeApply(t, s, 1, 1, storeCommit(g1, "t", 0, 3, 1))
	storeWantOffset(t, s, g1, "t", 0, 3)
	storeWantOffset(t, s, g1, "t", 1, -1)
	if err := s.DropPartition(storeTestPartitions); err == nil {
		t.Fatal("partition out of range accepted")
	}
}

// TestStoreInterruptedDrop: a crash after the drop marker but before the
// keys are gone is finished on open.
func TestStoreInterruptedDrop(t *testing.T) {
	dir := t.TempDir()
	g := storeGroupIn(t, 9, "i")
	s, err := OpenOffsetStore(dir, false, storeTestPartitions, nil)
	if err != nil {
		t.Fatal(err)
	}
	storeApply(t, s, 9, 4, storeCommit(g, "t", 0, 1, 1), OffsetEvent{Kind: OffsetEventGroup, Group: g, Metadata: recordsTestGroup(3)})
	// DropPartition's first step only.
	err = s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(storeDropKey(9), nil); err != nil {
			return err
		}
		return txn.Delete(storeAppliedKey(9))
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, _ = storeOpen(t, dir)
	if len(s.Groups(9)) != 0 || s.AppliedIndex(9) != 0 {
		t.Fatalf("drop not finished: groups %q", s.Groups(9))
	}
	if keys, _ := s.keys([]byte(storeVersion), 0); len(keys) != 0 {
		t.Fatalf("keys left: %q", keys)
	}
}

func TestStoreExpired(t *testing.T) {
	const day = 24 * time.Hour
	const dayMs = int64(24 * 3600 * 1000)
	s, _ := storeOpen(t, "")
	p := int32(21)
	simple := storeGroupIn(t, p, "simple") // commits only: no metadata
	empty := storeGroupIn(t, p, "empty")   // consumer group, Empty since day 10
	active := storeGroupIn(t, p, "active") // members: never expires
	oldMd := storeGroupIn(t, p, "old")     // Empty, no current state timestamp
	noType := storeGroupIn(t, p, "notype") // Empty, no protocol type
	explicit := storeGroupIn(t, p, "expl") // commits with expire timestamps

	emptyMd := kmsg.NewGroupMetadataValue()
	emptyMd.Version, emptyMd.ProtocolType, emptyMd.Generation, emptyMd.CurrentStateTimestamp = 3, "consumer", 4, 10*dayMs
	oldEmpty := emptyMd
	oldEmpty.CurrentStateTimestamp = -1
	noTypeMd := emptyMd
	noTypeMd.ProtocolType = ""
	withExpire := func(tp string, expire int64) OffsetEvent {
		ev := storeCommit(explicit, tp, 0, 1, 0)
		ev.Offset.ExpireMs, ev.Offset.LeaderEpoch = expire, -1
		return ev
	}
	storeApply(t, s, p, 1,
		storeCommit(simple, "a", 0, 1, 1*dayMs), storeCommit(simple, "a", 1, 1, 5*dayMs),
		storeCommit(empty, "a", 0, 1, 1*dayMs), storeCommit(empty, "b", 0, 1, 9*dayMs),
		OffsetEvent{Kind: OffsetEventGroup, Group: empty, Metadata: &emptyMd},
		storeCommit(active, "a", 0, 1, 1*dayMs),
		OffsetEvent{Kind: OffsetEventGroup, Group: active, Metadata: recordsTestGroup(3)},
		storeCommit(oldMd, "a", 0, 1, 2*dayMs),
		OffsetEvent{Kind: OffsetEventGroup, Group: oldMd, Metadata: &oldEmpty},
		storeCommit(noType, "a", 0, 1, 3*dayMs),
		OffsetEvent{Kind: OffsetEventGroup, Group: noType, Metadata: &noTypeMd},
		withExpire("x", 4*dayMs), withExpire("y", 100*dayMs),
	)
	sorted := func(ks []CommitKey) []string {
		var out []string
		for _, k := range ks {
			out = append(out, fmt.Sprintf("%s/%s/%d", strings.SplitN(k.Group, "-", 2)[0], k.Topic, k.Partition))
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		nowDays float64
		want    []string
	}{
		{1, nil},
		{7.5, []string{"expl/x/0"}},
		{8, []string{"expl/x/0", "simple/a/0"}}, // exactly at retention: expired (>=)
		{9, []string{"expl/x/0", "old/a/0", "simple/a/0"}},
		{10, []string{"expl/x/0", "notype/a/0", "old/a/0", "simple/a/0"}},
		{12, []string{"expl/x/0", "notype/a/0", "old/a/0", "simple/a/0", "simple/a/1"}},
		{17, []string{"empty/a/0", "empty/b/0", "expl/x/0", "notype/a/0", "old/a/0", "simple/a/0", "simple/a/1"}},
		{100, []string{"empty/a/0", "empty/b/0", "expl/x/0", "expl/y/0", "notype/a/0", "old/a/0", "simple/a/0", "simple/a/1"}},
	} {
		got := sorted(s.Expired(p, int64(tc.nowDays*float64(dayMs)), 7*day))
		if !slices.Equal(got, tc.want) {
			t.Errorf("day %v: expired %q, want %q", tc.nowDays, got, tc.want)
		}
	}
	if got := s.Expired(p+1, 100*dayMs, 7*day); len(got) != 0 {
		t.Fatalf("other partition: %v", got)
	}

	// Stored metadata that does not decode: the group's state is unknown,
	// so none of its commits expire.
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(storeGroupKey(p, simple), []byte{0, 3, 0}) })
	if err != nil {
		t.Fatal(err)
	}
	if got := sorted(s.Expired(p, 100*dayMs, 7*day)); slices.Contains(got, "simple/a/0") || len(got) != 6 {
		t.Fatalf("with broken metadata: %q", got)
	}
	if _, ok := s.GroupMetadata(simple); ok {
		t.Fatal("broken metadata decoded")
	}
}

// TestStoreSkipsBadRecords: what does not decode is logged and skipped; the
// rest of the entry applies and the index moves on.
func TestStoreSkipsBadRecords(t *testing.T) {
	s, logs := storeOpen(t, "")
	g := storeGroupIn(t, 30, "s")
	bad := recordsMustBatch(t, storeCommit(g, "t", 9, 9, 1))
	bad[len(bad)-1] ^= 1 // CRC mismatch: the whole batch is skipped
	unknown := recordsRawBatch(
		[2][]byte{{0, 3, 0, 1, 'g'}, {0, 0}}, // a KIP-848 record
		[2][]byte{(&kmsg.OffsetCommitKey{Version: 1, Group: g, Topic: "t", Partition: 1}).AppendTo(nil),
			(&kmsg.OffsetCommitValue{Version: 3, Offset: 5, LeaderEpoch: 1, CommitTimestamp: 1}).AppendTo(nil)},
	)
	if err := s.Apply(30, 1, [][]byte{recordsMustBatch(t, storeCommit(g, "t", 0, 1, 1)), bad, []byte("junk"), unknown}); err != nil {
		t.Fatal(err)
	}
	storeWantOffset(t, s, g, "t", 0, 1)
	storeWantOffset(t, s, g, "t", 1, 5)
	storeWantOffset(t, s, g, "t", 9, -1)
	if s.AppliedIndex(30) != 1 {
		t.Fatal("index not applied")
	}
	out := logs.String()
	if strings.Count(out, "skipped offsets batch") != 2 || strings.Count(out, "skipped offsets record") != 1 {
		t.Fatalf("log:\n%s", out)
	}
}

// TestStoreMisroutedGroup: a record applied to a partition its group does
// not hash to is kept under that partition (as Kafka loads it), logged,
// and invisible to lookups by group.
func TestStoreMisroutedGroup(t *testing.T) {
	s, logs := storeOpen(t, "")
	storeApply(t, s, 3, 1, storeCommit("a", "t", 0, 1, 1)) // "a" is partition 47
	if !slices.Equal(s.Groups(3), []string{"a"}) {
		t.Fatalf("groups %q", s.Groups(3))
	}
	storeWantOffset(t, s, "a", "t", 0, -1)
	if !strings.Contains(logs.String(), "group_partition=47") {
		t.Fatalf("log:\n%s", logs)
	}
}

// TestStoreLargeEntry applies an entry past badger's transaction limit.
func TestStoreLargeEntry(t *testing.T) {
	s, _ := storeOpen(t, "")
	g := storeGroupIn(t, 0, "big")
	const n = 20000
	if limit := s.db.MaxBatchCount(); n <= limit {
		t.Fatalf("%d commits fit one transaction (limit %d): the test no longer splits", n, limit)
	} else {
		t.Logf("badger transaction limit: %d keys, %d bytes", limit, s.db.MaxBatchSize())
	}
	evs := make([]OffsetEvent, 0, n)
	for i := range n {
		evs = append(evs, storeCommit(g, fmt.Sprintf("topic-%03d", i%300), int32(i/300), int64(i), 1))
	}
	storeApply(t, s, 0, 1, evs...)
	got := s.GroupOffsets(g)
	total := 0
	for _, ps := range got {
		total += len(ps)
	}
	if total != n || s.AppliedIndex(0) != 1 {
		t.Fatalf("%d offsets, index %d", total, s.AppliedIndex(0))
	}
	storeWantOffset(t, s, g, fmt.Sprintf("topic-%03d", (n-1)%300), int32((n-1)/300), n-1)
}

func TestStoreClosed(t *testing.T) {
	s, err := OpenOffsetStore("", true, storeTestPartitions, nil)
	if err != nil {
		t.Fatal(err)
	}
	storeApply(t, s, 1, 1, storeCommit("g", "t", 0, 1, 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(1, 2, nil); err != ErrOffsetStoreClosed {
		t.Fatalf("apply after close: %v", err)
	}
	if err := s.DropPartition(1); err != ErrOffsetStoreClosed {
		t.Fatalf("drop after close: %v", err)
	}
	if _, ok := s.Offset("g", "t", 0); ok || s.AppliedIndex(1) != 0 || s.Groups(1) != nil || s.GroupOffsets("g") != nil ||
		s.Expired(1, 1<<50, time.Hour) != nil {
		t.Fatal("reads after close answered")
	}
	if _, ok := s.GroupMetadata("g"); ok {
		t.Fatal("metadata after close")
	}
}

func TestStoreOpenErrors(t *testing.T) {
	for _, tc := range []struct {
		dir      string
		inMemory bool
		n        int32
	}{
		{"", true, 0},
		{"", true, -1},
		{t.TempDir(), true, 1},
		{"", false, 1},
	} {
		if s, err := OpenOffsetStore(tc.dir, tc.inMemory, tc.n, nil); err == nil {
			s.Close()
			t.Errorf("OpenOffsetStore(%q, %v, %d) succeeded", tc.dir, tc.inMemory, tc.n)
		}
	}
}
