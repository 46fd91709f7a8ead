package metadata

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func sampleCommands() []any {
	return []any{
		RegisterBroker{Broker: Broker{ID: 3, RaftAddr: "b3:9093", Rack: "r1", Listeners: []Listener{{"PLAINTEXT", "b3", 9092}, {"SSL", "b3", 9094}}}},
		CreateTopic{Name: "orders", ID: tid(1), Partitions: 3, ReplicationFactor: 2, Configs: map[string]string{"retention.ms": "1000", "cleanup.policy": "delete"}, CreatedMs: 1700000000000},
		CreateTopic{Name: "pinned", ID: tid(2), Partitions: 2, Assignment: [][]int32{{1, 2}, {2, 1}}},
		DeleteTopic{Name: "orders"},
		CreatePartitions{Name: "orders", Total: 6},
		CreatePartitions{Name: "orders", Total: 4, Assignment: [][]int32{{3, 1}}},
		AlterConfigs{Name: "orders", Configs: map[string]string{"retention.ms": "5"}},
		SetLeader{Topic: tid(1), Partition: 2, Leader: 3, Epoch: 7},
		AllocateProducerIDs{Count: 1000},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, cmd := range sampleCommands() {
		t.Run(reflect.TypeOf(cmd).Name(), func(t *testing.T) {
			b := mustEncode(t, cmd)
			if b[1] != 1 {
				t.Fatalf("version byte %d, want 1", b[1])
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode(%q): %v", b, err)
			}
			if !reflect.DeepEqual(got, cmd) {
				t.Fatalf("Decode(Encode(x)) = %#v, want %#v", got, cmd)
			}
			// A pointer encodes to the same bytes as the value.
			p := reflect.New(reflect.TypeOf(cmd))
			p.Elem().Set(reflect.ValueOf(cmd))
			if bp := mustEncode(t, p.Interface()); string(bp) != string(b) {
				t.Fatalf("pointer encodes as %q, value as %q", bp, b)
			}
		})
	}
}

// TestEncodingIsStable pins the wire format of version 1: changing it breaks
// every log and snapshot already written.
func TestEncodingIsStable(t *testing.T) {
	tests := []struct {
		cmd  any
		want string
	}{
		{RegisterBroker{Broker: Broker{ID: 1, RaftAddr: "a:1", Listeners: []Listener{{"P", "h", 9092}}}},
			"\x01\x01" + `{"broker":{"id":1,"raft_addr":"a:1","listeners":[{"name":"P","host":"h","port":9092}]}}`},
		{CreateTopic{Name: "t", ID: TopicID{15: 1}, Partitions: 1, ReplicationFactor: 1, CreatedMs: 5},
			"\x02\x01" + `{"name":"t","id":"AAAAAAAAAAAAAAAAAAAAAQ","partitions":1,"replication_factor":1,"created_ms":5}`},
		{DeleteTopic{Name: "t"}, "\x03\x01" + `{"name":"t"}`},
		{CreatePartitions{Name: "t", Total: 2, Assignment: [][]int32{{1}}}, "\x04\x01" + `{"name":"t","total":2,"assignment":[[1]]}`},
		{AlterConfigs{Name: "t", Configs: map[string]string{"b": "2", "a": "1"}}, "\x05\x01" + `{"name":"t","configs":{"a":"1","b":"2"}}`},
		{SetLeader{Topic: TopicID{15: 1}, Partition: 0, Leader: 1, Epoch: 2}, "\x06\x01" + `{"topic":"AAAAAAAAAAAAAAAAAAAAAQ","partition":0,"leader":1,"epoch":2}`},
		{AllocateProducerIDs{Count: 3}, "\x07\x01" + `{"count":3}`},
	}
	for _, tt := range tests {
		if got := string(mustEncode(t, tt.cmd)); got != tt.want {
			t.Errorf("Encode(%#v)\n got %q\nwant %q", tt.cmd, got, tt.want)
		}
	}
}

func TestEncodeUnknownType(t *testing.T) {
	for _, cmd := range []any{nil, 7, "x", struct{}{}, &Topic{}, (*DeleteTopic)(nil), (*CreateTopic)(nil)} {
		if _, err := Encode(cmd); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("Encode(%#v): err = %v, want ErrInvalidCommand", cmd, err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		msg  string // a part of the error text
	}{
		{"empty", "", "shorter"},
		{"one byte", "\x01", "shorter"},
		{"header only", "\x03\x01", "not a JSON object"},
		{"unknown type 0", "\x00\x01{}", "unknown type 0"},
		{"unknown type 127", "\x7f\x01{}", "unknown type 127"},
		{"version 0", "\x03\x00{\"name\":\"t\"}", "version 0"},
		{"version 2", "\x03\x02{\"name\":\"t\"}", "version 2"},
		{"not json", "\x03\x01hello", "not a JSON object"},
		{"json array", "\x03\x01[1]", "not a JSON object"},
		{"json null", "\x03\x01null", "not a JSON object"},
		{"truncated", "\x03\x01{\"name\":", "unexpected EOF"},
		{"unknown field", "\x03\x01{\"name\":\"t\",\"force\":true}", "unknown field"},
		{"trailing object", "\x03\x01{\"name\":\"t\"}{}", "trailing"},
		{"trailing garbage", "\x03\x01{\"name\":\"t\"}x", "trailing"},
		{"wrong field type", "\x07\x01{\"count\":\"many\"}", "cannot unmarshal"},
		{"int32 overflow", "\x02\x01{\"name\":\"t\",\"partitions\":4294967296}", "cannot unmarshal"},
		{"fractional", "\x07\x01{\"count\":1.5}", "cannot unmarshal"},
		{"short topic id", "\x06\x01{\"topic\":\"AAAA\"}", "22 base64url"},
		{"topic id as array", "\x06\x01{\"topic\":[1,2]}", "cannot unmarshal"},
		{"non-canonical topic id", "\x06\x01{\"topic\":\"AAAAAAAAAAAAAAAAAAAAAR\"}", "22 base64url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := Decode([]byte(tt.in))
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Decode(%q) = %#v, %v; want ErrInvalidCommand", tt.in, cmd, err)
			}
			if cmd != nil {
				t.Fatalf("Decode(%q) returned %#v with its error", tt.in, cmd)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.HasPrefix(err.Error(), "metadata: ") {
				t.Fatalf("Decode(%q): error %q, want it to mention %q", tt.in, err, tt.msg)
			}
			// Apply answers the same error and still records the index.
			f := NewFSM()
			res := f.Apply(1, 1, []byte(tt.in))
			if !errors.Is(res.Err, ErrInvalidCommand) || res.Changed || f.State().Index != 1 {
				t.Fatalf("Apply(%q) = %+v, index %d", tt.in, res, f.State().Index)
			}
		})
	}
}

func TestTopicIDString(t *testing.T) {
	id := TopicID{0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0xff}
	s := id.String()
	if s != "AAECAwQFBgcICQoLDA0O_w" {
		t.Fatalf("String() = %q", s)
	}
	back, err := ParseTopicID(s)
	if err != nil || back != id {
		t.Fatalf("ParseTopicID(%q) = %v, %v", s, back, err)
	}
	for _, bad := range []string{"", "AAECAwQFBgcICQoLDA0O_w=", "AAECAwQFBgcICQoLDA0O/w", "AAECAwQFBgcICQoLDA0O_x", "AAECAwQFBgcICQoLDA0O"} {
		if _, err := ParseTopicID(bad); err == nil {
			t.Errorf("ParseTopicID(%q) succeeded", bad)
		}
	}
}

// FuzzDecode: Decode never panics; what decodes re-encodes stably (nil and
// empty lists and maps are the same command); and applying any bytes to a
// populated FSM never panics and leaves a state that Restore accepts (the
// commands keep the invariants Restore checks).
func FuzzDecode(f *testing.F) {
	for _, cmd := range sampleCommands() {
		f.Add(mustEncode(f, cmd))
	}
	for _, s := range []string{"", "\x01", "\x02\x01{}", "\x7f\x01{}", "\x02\x01{\"name\":\"a\",\"id\":\"AAAAAAAAAAAAAAAAAAAAAQ\",\"partitions\":70000,\"replication_factor\":3}",
		"\x02\x01{\"name\":\"x\",\"id\":\"AAAAAAAAAAAAAAAAAAAAAg\",\"partitions\":2,\"assignment\":[[1,1],[2]]}", "\x06\x01{\"topic\":\"7gAAAAAAAAAAAAAAAAAAAQ\",\"partition\":-1}"} {
		f.Add([]byte(s))
	}
	h := newHarness(f, 3)
	h.ok(CreateTopic{Name: "orders", ID: tid(1), Partitions: 3, ReplicationFactor: 2})
	h.ok(SetLeader{Topic: tid(1), Partition: 0, Leader: h.topic("orders").Partitions[0].Replicas[0], Epoch: 3})
	base := h.f.State()
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, err := Decode(b)
		if err == nil {
			e1 := mustEncode(t, cmd)
			again, err := Decode(e1)
			if err != nil {
				t.Fatalf("re-decode of %#v: %v", cmd, err)
			}
			if e2 := mustEncode(t, again); string(e1) != string(e2) {
				t.Fatalf("encoding not stable: %q then %q", e1, e2)
			}
		} else if !errors.Is(err, ErrInvalidCommand) {
			t.Fatalf("Decode error %v does not wrap ErrInvalidCommand", err)
		}

		fsm := NewFSM()
		fsm.state.Store(base)
		res := fsm.Apply(base.Index+1, 1, b)
		if err != nil && (!errors.Is(res.Err, ErrInvalidCommand) || res.Changed) {
			t.Fatalf("Decode failed (%v) but Apply answered %+v", err, res)
		}
		if fsm.State().Index != base.Index+1 || (res.Err != nil && res.Changed) {
			t.Fatalf("Apply = %+v, index %d", res, fsm.State().Index)
		}
		snap, serr := fsm.Snapshot()
		if serr != nil {
			t.Fatal(serr)
		}
		if rerr := NewFSM().Restore(snap); rerr != nil {
			t.Fatalf("state after applying %q does not restore: %v", b, rerr)
		}
	})
}
