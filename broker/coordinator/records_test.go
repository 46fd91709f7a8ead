package coordinator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/records"
	"github.com/varvelog/varve/partition"
)

const recordsTestNow = int64(1_700_000_000_123)

func recordsStr(s string) *string { return &s }

// recordsTestGroup is a group value with every field set, at version v.
func recordsTestGroup(v int16) *kmsg.GroupMetadataValue {
	md := kmsg.NewGroupMetadataValue()
	md.Version = v
	md.ProtocolType = "consumer"
	md.Generation = 7
	md.Protocol = recordsStr("cooperative-sticky")
	md.Leader = recordsStr("m-1")
	md.CurrentStateTimestamp = recordsTestNow - 5
	md.Members = []kmsg.GroupMetadataValueMember{
		{
			MemberID: "m-1", InstanceID: recordsStr("static-1"), ClientID: "client-a", ClientHost: "/10.0.0.1",
			RebalanceTimeoutMillis: 60000, SessionTimeoutMillis: 45000,
			Subscription: []byte{0, 3, 0, 0, 0, 1, 0, 1, 't'}, Assignment: []byte{0, 3, 1, 2, 3},
		},
		{
			MemberID: "m-2", ClientID: "client-b", ClientHost: "/10.0.0.2",
			RebalanceTimeoutMillis: 30000, SessionTimeoutMillis: 10000,
			Subscription: []byte{9}, Assignment: []byte{8, 7},
		},
	}
	return &md
}

// recordsKmsg parses a batch with kmsg alone, independently of
// broker/records: the header and every record.
func recordsKmsg(t *testing.T, b []byte) (kmsg.RecordBatch, []kmsg.Record) {
	t.Helper()
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(b); err != nil {
		t.Fatalf("kmsg RecordBatch: %v", err)
	}
	if got := crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)); int32(got) != rb.CRC {
		t.Fatalf("crc %08x, header %08x", got, uint32(rb.CRC))
	}
	var recs []kmsg.Record
	for rest := rb.Records; len(rest) > 0; {
		n, w := binary.Varint(rest)
		if w <= 0 || int(n) > len(rest)-w {
			t.Fatalf("bad record length at %d", len(rb.Records)-len(rest))
		}
		var r kmsg.Record
		if err := r.ReadFrom(rest[:w+int(n)]); err != nil {
			t.Fatalf("kmsg Record: %v", err)
		}
		recs = append(recs, r)
		rest = rest[w+int(n):]
	}
	if int32(len(recs)) != rb.NumRecords {
		t.Fatalf("%d records, header says %d", len(recs), rb.NumRecords)
	}
	return rb, recs
}

// recordsCollect decodes a batch, splitting skip errors from a batch error.
func recordsCollect(t *testing.T, b []byte) (evs []OffsetEvent, skipped []error, batchErr error) {
	t.Helper()
	for ev, err := range OffsetEvents(b) {
		switch {
		case errors.Is(err, ErrOffsetRecordSkipped):
			skipped = append(skipped, err)
		case err != nil:
			if batchErr != nil {
				t.Fatalf("two batch errors: %v, then %v", batchErr, err)
			}
			batchErr = err
		default:
			if batchErr != nil {
				t.Fatalf("event after the batch error %v", batchErr)
			}
			evs = append(evs, ev)
		}
	}
	return evs, skipped, batchErr
}

func recordsMustBatch(t testing.TB, evs ...OffsetEvent) []byte {
	t.Helper()
	b, err := OffsetBatch(recordsTestNow, evs...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recordsCheckHeader checks the fixed batch fields OffsetBatch promises.
func recordsCheckHeader(t *testing.T, b []byte, n int32) {
	t.Helper()
	h, err := partition.ValidateBatch(b, 0)
	if err != nil {
		t.Fatalf("ValidateBatch: %v", err)
	}
	want := partition.BatchHeader{
		BaseOffset: 0, Length: int32(len(b) - 12), PartitionLeaderEpoch: -1, Magic: 2, CRC: h.CRC,
		Attributes: 0, LastOffsetDelta: n - 1, BaseTimestamp: recordsTestNow, MaxTimestamp: recordsTestNow,
		ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, NumRecords: n,
	}
	if h != want {
		t.Fatalf("header\n got %+v\nwant %+v", h, want)
	}
	if err := records.Check(b, &h, records.Limits{}); err != nil {
		t.Fatalf("records.Check: %v", err)
	}
}

func TestRecordsCommitRoundTrip(t *testing.T) {
	commits := []OffsetEvent{
		{Kind: OffsetEventCommit, Commit: CommitKey{"g1", "orders", 3},
			Offset: OffsetValue{Offset: 42, LeaderEpoch: 5, Metadata: "meta", CommitMs: recordsTestNow - 1, ExpireMs: -1}},
		{Kind: OffsetEventCommit, Commit: CommitKey{"g1", "orders", 4},
			Offset: OffsetValue{Offset: 0, LeaderEpoch: -1, Metadata: "", CommitMs: recordsTestNow, ExpireMs: -1}},
		// An explicit expire timestamp: value version 1, no leader epoch.
		{Kind: OffsetEventCommit, Commit: CommitKey{"消费者组", "tópico/ü", 0},
			Offset: OffsetValue{Offset: 1 << 40, LeaderEpoch: -1, Metadata: "é", CommitMs: 10, ExpireMs: 86_400_010}},
		{Kind: OffsetEventCommitTombstone, Commit: CommitKey{"", "t", 2147483647}},
	}
	b := recordsMustBatch(t, commits...)
	recordsCheckHeader(t, b, int32(len(commits)))

	// Kafka's view, through kmsg only.
	_, recs := recordsKmsg(t, b)
	wantValueVersion := []int16{3, 3, 1, -1}
	for i, r := range recs {
		want := commits[i]
		var k kmsg.OffsetCommitKey
		if err := k.ReadFrom(r.Key); err != nil {
			t.Fatalf("record %d key: %v", i, err)
		}
		if k.Version != 1 || k.Group != want.Commit.Group || k.Topic != want.Commit.Topic || k.Partition != want.Commit.Partition {
			t.Fatalf("record %d key %+v, want version 1 and %+v", i, k, want.Commit)
		}
		if r.OffsetDelta != int32(i) || r.TimestampDelta64 != 0 || len(r.Headers) != 0 || r.Attributes != 0 {
			t.Fatalf("record %d: %+v", i, r)
		}
		if want.Kind == OffsetEventCommitTombstone {
			if r.Value != nil {
				t.Fatalf("record %d: tombstone has value %x", i, r.Value)
			}
			continue
		}
		var v kmsg.OffsetCommitValue
		if err := v.ReadFrom(r.Value); err != nil {
			t.Fatalf("record %d value: %v", i, err)
		}
		o := want.Offset
		wantV := kmsg.OffsetCommitValue{Version: wantValueVersion[i], Offset: o.Offset, Metadata: o.Metadata, CommitTimestamp: o.CommitMs}
		if wantV.Version == 3 {
			wantV.LeaderEpoch = o.LeaderEpoch
		} else {
			wantV.ExpireTimestamp = o.ExpireMs
		}
		if !reflect.DeepEqual(v, wantV) {
			t.Fatalf("record %d value\n got %+v\nwant %+v", i, v, wantV)
		}
	}

	// And back through OffsetEvents.
	evs, skipped, err := recordsCollect(t, b)
	if err != nil || len(skipped) != 0 {
		t.Fatalf("decode: %v, skipped %v", err, skipped)
	}
	for i := range commits {
		commits[i].Group, commits[i].LogOffset = commits[i].Commit.Group, int64(i)
	}
	if !reflect.DeepEqual(evs, commits) {
		t.Fatalf("events\n got %+v\nwant %+v", evs, commits)
	}
}

func TestRecordsGroupRoundTrip(t *testing.T) {
	empty := kmsg.NewGroupMetadataValue()
	empty.Version, empty.Generation = 3, 12 // Empty group: no protocol type, leader or members
	in := []OffsetEvent{
		{Kind: OffsetEventGroup, Group: "g-v3", Metadata: recordsTestGroup(3)},
		{Kind: OffsetEventGroup, Group: "g-v4 😀", Metadata: recordsTestGroup(4)},
		{Kind: OffsetEventGroup, Group: "g-empty", Metadata: &empty},
		{Kind: OffsetEventGroupTombstone, Group: "g-dead"},
	}
	b := recordsMustBatch(t, in...)
	recordsCheckHeader(t, b, int32(len(in)))

	_, recs := recordsKmsg(t, b)
	for i, r := range recs {
		var k kmsg.GroupMetadataKey
		if err := k.ReadFrom(r.Key); err != nil {
			t.Fatalf("record %d key: %v", i, err)
		}
		if k.Version != 2 || k.Group != in[i].Group {
			t.Fatalf("record %d key %+v, want version 2 and %q", i, k, in[i].Group)
		}
		if in[i].Kind == OffsetEventGroupTombstone {
			if r.Value != nil {
				t.Fatalf("record %d: tombstone has value %x", i, r.Value)
			}
			continue
		}
		var v kmsg.GroupMetadataValue
		if err := v.ReadFrom(r.Value); err != nil {
			t.Fatalf("record %d value: %v", i, err)
		}
		if !reflect.DeepEqual(&v, in[i].Metadata) {
			t.Fatalf("record %d value\n got %+v\nwant %+v", i, v, *in[i].Metadata)
		}
	}

	evs, skipped, err := recordsCollect(t, b)
	if err != nil || len(skipped) != 0 {
		t.Fatalf("decode: %v, skipped %v", err, skipped)
	}
	for i := range in {
		in[i].LogOffset = int64(i)
	}
	if !reflect.DeepEqual(evs, in) {
		t.Fatalf("events\n got %+v\nwant %+v", evs, in)
	}
	// Decoded values own their bytes: clobbering the batch changes nothing.
	clear(b)
	if !reflect.DeepEqual(evs[0].Metadata, recordsTestGroup(3)) {
		t.Fatal("a decoded group value aliases the batch")
	}
}

// TestRecordsOldVersions decodes every value version Kafka has written, as
// kmsg encodes them.
func TestRecordsOldVersions(t *testing.T) {
	ck := kmsg.OffsetCommitKey{Version: 0, Group: "g", Topic: "t", Partition: 1}
	commit := func(v int16) []byte {
		val := kmsg.OffsetCommitValue{Version: v, Offset: 100, LeaderEpoch: 9, Metadata: "md", CommitTimestamp: 5, ExpireTimestamp: 77}
		if v == 4 {
			val.TopicID = [16]byte{1, 2, 3}
		}
		return val.AppendTo(nil)
	}
	gk := (&kmsg.GroupMetadataKey{Version: 2, Group: "g"}).AppendTo(nil)
	var raws [][2][]byte
	for v := int16(0); v <= 4; v++ {
		raws = append(raws, [2][]byte{ck.AppendTo(nil), commit(v)})
	}
	for v := int16(0); v <= 4; v++ {
		raws = append(raws, [2][]byte{gk, recordsTestGroup(v).AppendTo(nil)})
	}
	evs, skipped, err := recordsCollect(t, recordsRawBatch(raws...))
	if err != nil || len(skipped) != 0 || len(evs) != 10 {
		t.Fatalf("decode: %d events, %v, skipped %v", len(evs), err, skipped)
	}
	wantCommit := []OffsetValue{
		{Offset: 100, LeaderEpoch: -1, Metadata: "md", CommitMs: 5, ExpireMs: -1},
		{Offset: 100, LeaderEpoch: -1, Metadata: "md", CommitMs: 5, ExpireMs: 77},
		{Offset: 100, LeaderEpoch: -1, Metadata: "md", CommitMs: 5, ExpireMs: -1},
		{Offset: 100, LeaderEpoch: 9, Metadata: "md", CommitMs: 5, ExpireMs: -1},
		{Offset: 100, LeaderEpoch: 9, Metadata: "md", CommitMs: 5, ExpireMs: -1},
	}
	for v, want := range wantCommit {
		ev := evs[v]
		if ev.Kind != OffsetEventCommit || ev.Commit != (CommitKey{"g", "t", 1}) || ev.Offset != want {
			t.Errorf("commit value v%d: %+v, want %+v", v, ev, want)
		}
	}
	for v := int16(0); v <= 4; v++ {
		ev := evs[5+v]
		var want kmsg.GroupMetadataValue
		if err := want.ReadFrom(recordsTestGroup(v).AppendTo(nil)); err != nil {
			t.Fatal(err)
		}
		if ev.Kind != OffsetEventGroup || ev.Group != "g" || !reflect.DeepEqual(ev.Metadata, &want) {
			t.Errorf("group value v%d: %+v, want %+v", v, ev.Metadata, want)
		}
	}
}

// recordsRawBatch frames arbitrary keys and values (nil: null) as an
// OffsetBatch would.
func recordsRawBatch(kvs ...[2][]byte) []byte {
	var recs, scratch []byte
	for i, kv := range kvs {
		recs, scratch = recordsAppend(recs, scratch, int32(i), kv[0], kv[1])
	}
	return recordsFrame(recordsTestNow, int32(len(kvs)), recs)
}

func TestRecordsSkipsUnknownRecords(t *testing.T) {
	good := (&kmsg.OffsetCommitKey{Version: 1, Group: "g", Topic: "t", Partition: 0}).AppendTo(nil)
	goodValue := (&kmsg.OffsetCommitValue{Version: 3, Offset: 1, LeaderEpoch: 2, CommitTimestamp: 3}).AppendTo(nil)
	groupKey := (&kmsg.GroupMetadataKey{Version: 2, Group: "g"}).AppendTo(nil)
	v := func(version int16, rest ...byte) []byte {
		return append(binary.BigEndian.AppendUint16(nil, uint16(version)), rest...)
	}
	raws := [][2][]byte{
		{good, goodValue},
		{v(3, 0, 1, 'g'), v(0, 1, 2, 3)}, // KIP-848 ConsumerGroupMetadataKey
		{v(17, 0, 1, 'g'), nil},          // a future record type's tombstone
		{v(-1), v(0)},                    // negative key version
		{[]byte{0}, goodValue},           // key too short for a version
		{nil, goodValue},                 // null key
		{good, v(5, 1, 2, 3)},            // unknown commit value version
		{good, v(-2)},                    // negative commit value version
		{good, []byte{0}},                // value too short for a version
		{good, v(3, 0, 0, 0)},            // truncated commit value
		{good[:len(good)-2], goodValue},  // truncated commit key
		{groupKey, v(5)},                 // unknown group value version
		{groupKey, v(3, 0, 8, 'c')},      // truncated group value
		{groupKey[:3], nil},              // truncated group key
		{v(2, 0x80, 0), recordsTestGroup(3).AppendTo(nil)}, // negative group string length
		{groupKey, nil},
	}
	evs, skipped, err := recordsCollect(t, recordsRawBatch(raws...))
	if err != nil {
		t.Fatalf("batch error: %v", err)
	}
	if len(skipped) != len(raws)-2 {
		t.Fatalf("%d skipped, want %d: %v", len(skipped), len(raws)-2, skipped)
	}
	for _, e := range skipped {
		t.Log(e)
	}
	want := []OffsetEvent{
		{Kind: OffsetEventCommit, Group: "g", Commit: CommitKey{"g", "t", 0},
			Offset: OffsetValue{Offset: 1, LeaderEpoch: 2, CommitMs: 3, ExpireMs: -1}, LogOffset: 0},
		{Kind: OffsetEventGroupTombstone, Group: "g", LogOffset: int64(len(raws) - 1)},
	}
	if !reflect.DeepEqual(evs, want) {
		t.Fatalf("events\n got %+v\nwant %+v", evs, want)
	}
	if !strings.Contains(skipped[0].Error(), "offset 1: unknown key version 3") {
		t.Fatalf("skip error %q does not say where and why", skipped[0])
	}
}

// recordsRecompress rewrites an uncompressed batch with its records
// section compressed by codec, as a client's batch would be.
func recordsRecompress(t *testing.T, b []byte, codec int16, compressed []byte) []byte {
	t.Helper()
	out := append(bytes.Clone(b[:partition.BatchHeaderSize]), compressed...)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint16(out[21:], uint16(codec))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

func TestRecordsDecodeCompressed(t *testing.T) {
	in := []OffsetEvent{
		{Kind: OffsetEventCommit, Group: "g", Commit: CommitKey{"g", "t", 1},
			Offset: OffsetValue{Offset: 5, LeaderEpoch: 1, Metadata: strings.Repeat("x", 300), CommitMs: 9, ExpireMs: -1}},
		{Kind: OffsetEventGroup, Group: "g", Metadata: recordsTestGroup(3)},
		{Kind: OffsetEventCommitTombstone, Group: "g", Commit: CommitKey{"g", "t", 2}},
	}
	b := recordsMustBatch(t, in...)
	for i := range in {
		in[i].LogOffset = int64(i)
	}
	section := b[partition.BatchHeaderSize:]
	codecs := []struct {
		name     string
		id       int16
		compress func([]byte) []byte
	}{
		{"gzip", 1, func(raw []byte) []byte {
			var buf bytes.Buffer
			w := gzip.NewWriter(&buf)
			w.Write(raw)
			w.Close()
			return buf.Bytes()
		}},
		{"snappy", 2, func(raw []byte) []byte { return s2.EncodeSnappy(nil, raw) }},
		{"lz4", 3, func(raw []byte) []byte {
			var buf bytes.Buffer
			w := lz4.NewWriter(&buf)
			w.Write(raw)
			w.Close()
			return buf.Bytes()
		}},
		{"zstd", 4, func(raw []byte) []byte {
			enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
			if err != nil {
				t.Fatal(err)
			}
			defer enc.Close()
			return enc.EncodeAll(raw, nil)
		}},
	}
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			cb := recordsRecompress(t, b, c.id, c.compress(section))
			evs, skipped, err := recordsCollect(t, cb)
			if err != nil || len(skipped) != 0 {
				t.Fatalf("decode: %v, skipped %v", err, skipped)
			}
			if !reflect.DeepEqual(evs, in) {
				t.Fatalf("events\n got %+v\nwant %+v", evs, in)
			}
		})
	}
}

func TestRecordsBatchErrors(t *testing.T) {
	good := recordsMustBatch(t, OffsetEvent{Kind: OffsetEventCommitTombstone, Commit: CommitKey{"g", "t", 0}},
		OffsetEvent{Kind: OffsetEventGroupTombstone, Group: "g"})
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	withAttrs := func(attrs int16) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint16(b[21:], uint16(attrs))
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
		return b
	}
	// A correct CRC over records that do not parse: the record count says
	// 3 but the section holds 2.
	badCount := bytes.Clone(good)
	binary.BigEndian.PutUint32(badCount[23:], 2)
	binary.BigEndian.PutUint32(badCount[57:], 3)
	binary.BigEndian.PutUint32(badCount[17:], crc32.Checksum(badCount[21:], crc32.MakeTable(crc32.Castagnoli)))

	for _, tc := range []struct {
		name  string
		batch []byte
		fails bool
	}{
		{"nil", nil, true},
		{"short", good[:40], true},
		{"truncated", good[:len(good)-1], true},
		{"two batches", append(bytes.Clone(good), good...), true},
		{"crc", flipped, true},
		{"record count", badCount, true},
		{"bad codec", withAttrs(6), true},
		{"gzip garbage", withAttrs(1), true},
		{"transactional", withAttrs(0x10), true},
		{"control", withAttrs(0x20 | 0x10), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, skipped, err := recordsCollect(t, tc.batch)
			if len(skipped) != 0 {
				t.Fatalf("skipped %v", skipped)
			}
			if (err != nil) != tc.fails {
				t.Fatalf("error %v, want one: %v", err, tc.fails)
			}
			if err != nil && len(evs) != 0 && tc.name != "record count" {
				t.Fatalf("%d events before %v", len(evs), err)
			}
			if !tc.fails && len(evs) != 0 {
				t.Fatalf("control batch yielded %+v", evs)
			}
		})
	}
}

func TestRecordsEncodeErrors(t *testing.T) {
	long := strings.Repeat("x", 1<<15)
	v3 := recordsTestGroup(3)
	v3.Members[1].ClientID = long
	v4 := recordsTestGroup(4)
	v4.Members[1].ClientID = long
	for _, tc := range []struct {
		name string
		now  int64
		evs  []OffsetEvent
		ok   bool
	}{
		{"no events", recordsTestNow, nil, false},
		{"negative time", -2, []OffsetEvent{{Kind: OffsetEventGroupTombstone, Group: "g"}}, false},
		{"no timestamp", -1, []OffsetEvent{{Kind: OffsetEventGroupTombstone, Group: "g"}}, true},
		{"unknown kind", recordsTestNow, []OffsetEvent{{Kind: 9, Group: "g"}}, false},
		{"zero kind", recordsTestNow, []OffsetEvent{{Group: "g"}}, false},
		{"nil metadata", recordsTestNow, []OffsetEvent{{Kind: OffsetEventGroup, Group: "g"}}, false},
		{"metadata v2", recordsTestNow, []OffsetEvent{{Kind: OffsetEventGroup, Group: "g", Metadata: recordsTestGroup(2)}}, false},
		{"metadata v5", recordsTestNow, []OffsetEvent{{Kind: OffsetEventGroup, Group: "g", Metadata: recordsTestGroup(5)}}, false},
		{"long group", recordsTestNow, []OffsetEvent{{Kind: OffsetEventGroupTombstone, Group: long}}, false},
		{"longest group", recordsTestNow, []OffsetEvent{{Kind: OffsetEventGroupTombstone, Group: long[1:]}}, true},
		{"long topic", recordsTestNow, []OffsetEvent{{Kind: OffsetEventCommitTombstone, Commit: CommitKey{"g", long, 0}}}, false},
		{"long commit metadata", recordsTestNow, []OffsetEvent{{Kind: OffsetEventCommit, Commit: CommitKey{"g", "t", 0},
			Offset: OffsetValue{Metadata: long}}}, false},
		{"long v3 member string", recordsTestNow, []OffsetEvent{{Kind: OffsetEventGroup, Group: "g", Metadata: v3}}, false},
		{"long v4 member string", recordsTestNow, []OffsetEvent{{Kind: OffsetEventGroup, Group: "g", Metadata: v4}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := OffsetBatch(tc.now, tc.evs...)
			if (err == nil) != tc.ok {
				t.Fatalf("error %v, want ok %v", err, tc.ok)
			}
			if err != nil {
				t.Log(err)
				return
			}
			evs, skipped, err := recordsCollect(t, b)
			if err != nil || len(skipped) != 0 || len(evs) != len(tc.evs) {
				t.Fatalf("decode: %d events, %v, %v", len(evs), err, skipped)
			}
		})
	}
}

func TestRecordsEarlyStop(t *testing.T) {
	b := recordsMustBatch(t,
		OffsetEvent{Kind: OffsetEventGroupTombstone, Group: "a"},
		OffsetEvent{Kind: OffsetEventGroupTombstone, Group: "b"},
		OffsetEvent{Kind: OffsetEventGroupTombstone, Group: "c"})
	n := 0
	for ev, err := range OffsetEvents(b) {
		if err != nil || ev.Group != "a" {
			t.Fatalf("first: %+v, %v", ev, err)
		}
		n++
		break
	}
	if n != 1 {
		t.Fatalf("%d iterations", n)
	}
	// Stopping on a batch error's yield must not panic either.
	for range OffsetEvents(nil) {
		break
	}
}

// recordsFuzzSeeds are valid batches of every shape: the committed corpus
// under testdata/fuzz/FuzzOffsetEvents holds the same.
func recordsFuzzSeeds(tb testing.TB) [][]byte {
	gk := (&kmsg.GroupMetadataKey{Version: 2, Group: "g"}).AppendTo(nil)
	return [][]byte{
		recordsMustBatch(tb, OffsetEvent{Kind: OffsetEventCommit, Commit: CommitKey{"g", "t", 1},
			Offset: OffsetValue{Offset: 7, LeaderEpoch: 2, Metadata: "m", CommitMs: 3, ExpireMs: -1}}),
		recordsMustBatch(tb, OffsetEvent{Kind: OffsetEventCommit, Commit: CommitKey{"g", "t", 1},
			Offset: OffsetValue{Offset: 7, Metadata: "m", CommitMs: 3, ExpireMs: 99}},
			OffsetEvent{Kind: OffsetEventCommitTombstone, Commit: CommitKey{"g", "u", 0}}),
		recordsMustBatch(tb, OffsetEvent{Kind: OffsetEventGroup, Group: "g", Metadata: recordsTestGroup(3)},
			OffsetEvent{Kind: OffsetEventGroupTombstone, Group: "h"}),
		recordsMustBatch(tb, OffsetEvent{Kind: OffsetEventGroup, Group: "g", Metadata: recordsTestGroup(4)}),
		recordsRawBatch([2][]byte{{0, 3, 0, 1, 'g'}, {0, 0}}, [2][]byte{gk, recordsTestGroup(1).AppendTo(nil)}),
	}
}

// FuzzOffsetEvents feeds batches to OffsetEvents, as given and with their
// length and CRC fixed so that the fuzzer reaches the records. Properties:
// no panic; after a batch error nothing is yielded; and what decodes
// re-encodes (OffsetBatch) to a batch that decodes to the same events.
func FuzzOffsetEvents(f *testing.F) {
	for _, b := range recordsFuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		recordsCollect(t, b)
		if len(b) < partition.BatchHeaderSize {
			return
		}
		b = bytes.Clone(b)
		binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
		evs, _, err := recordsCollect(t, b)
		if err != nil {
			return
		}
		// Re-encode what Varve can write: group values of version 3 and 4,
		// and commits (an expire timestamp of 0 or less is none).
		var again []OffsetEvent
		for _, ev := range evs {
			if ev.Kind == OffsetEventGroup && ev.Metadata.Version < 3 {
				continue
			}
			if ev.Kind == OffsetEventCommit && ev.Offset.ExpireMs <= 0 {
				ev.Offset.ExpireMs = -1
			}
			ev.LogOffset = int64(len(again))
			again = append(again, ev)
		}
		if len(again) == 0 {
			return
		}
		nb, err := OffsetBatch(recordsTestNow, again...)
		if err != nil {
			// Only strings too long for a non-flexible version can fail.
			if !strings.Contains(err.Error(), "longer than Kafka's") {
				t.Fatalf("re-encode: %v", err)
			}
			return
		}
		evs2, skipped, err := recordsCollect(t, nb)
		if err != nil || len(skipped) != 0 {
			t.Fatalf("re-encoded batch: %v, skipped %v", err, skipped)
		}
		if !reflect.DeepEqual(evs2, again) {
			t.Fatalf("round trip\n got %+v\nwant %+v", evs2, again)
		}
	})
}
