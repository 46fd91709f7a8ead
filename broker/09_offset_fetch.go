package broker

// OffsetFetch (key 9), v1-9.
//
// Served by the group's coordinator from its materialised offsets (the
// ready leader of the offsets partition has applied every committed
// record). A partition without a commit, and any partition of a group
// that does not exist, answers offset -1 with no error (Sarama and others
// fetch outside any group this way). Topics null (v2+) means every
// committed partition of the group. v8+ asks for several groups at once.
// RequireStable (v7+) needs nothing here: there are no transactions.

import (
	"context"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/coordinator"
	"github.com/varvelog/varve/protocol"
)

// fetchedTopic is one topic of an OffsetFetch answer.
type fetchedTopic struct {
	topic string
	parts []kmsg.OffsetFetchResponseGroupTopicPartition
}

func handleOffsetFetch(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.OffsetFetchRequest)
	resp := r.ResponseKind().(*kmsg.OffsetFetchResponse)
	if r.Version >= 8 {
		for _, rg := range r.Groups {
			g := kmsg.NewOffsetFetchResponseGroup()
			g.Group = rg.Group
			var asked map[string][]int32
			if rg.Topics != nil {
				asked = map[string][]int32{}
				for _, t := range rg.Topics {
					asked[t.Topic] = append(asked[t.Topic], t.Partitions...)
				}
			}
			topics, err := b.fetchOffsets(rg.Group, asked, topicOrder(rg.Topics))
			g.ErrorCode = errorCode(err)
			for _, ft := range topics {
				t := kmsg.NewOffsetFetchResponseGroupTopic()
				t.Topic, t.Partitions = ft.topic, ft.parts
				g.Topics = append(g.Topics, t)
			}
			resp.Groups = append(resp.Groups, g)
		}
		return resp, nil
	}
	var asked map[string][]int32
	var order []string
	if r.Topics != nil {
		asked = map[string][]int32{}
		for _, t := range r.Topics {
			asked[t.Topic] = append(asked[t.Topic], t.Partitions...)
			if !slices.Contains(order, t.Topic) {
				order = append(order, t.Topic)
			}
		}
	}
	topics, err := b.fetchOffsets(r.Group, asked, order)
	code := errorCode(err)
	if r.Version >= 2 {
		resp.ErrorCode = code
	}
	for _, ft := range topics {
		t := kmsg.NewOffsetFetchResponseTopic()
		t.Topic = ft.topic
		for _, p := range ft.parts {
			op := kmsg.NewOffsetFetchResponseTopicPartition()
			op.Partition, op.Offset, op.LeaderEpoch, op.Metadata, op.ErrorCode = p.Partition, p.Offset, p.LeaderEpoch, p.Metadata, p.ErrorCode
			if r.Version < 2 && code != 0 {
				op.ErrorCode = code // v0-1 have no top-level error
			}
			t.Partitions = append(t.Partitions, op)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp, nil
}

func topicOrder(ts []kmsg.OffsetFetchRequestGroupTopic) []string {
	var out []string
	for _, t := range ts {
		if !slices.Contains(out, t.Topic) {
			out = append(out, t.Topic)
		}
	}
	return out
}

// fetchOffsets answers one group: the asked partitions (every committed
// one when asked is nil), in the asked order.
func (b *Broker) fetchOffsets(group string, asked map[string][]int32, order []string) ([]fetchedTopic, error) {
	if _, err := b.coordinatorFor(group); err != nil {
		var out []fetchedTopic
		for _, name := range order {
			ft := fetchedTopic{topic: name}
			for _, p := range asked[name] {
				ft.parts = append(ft.parts, fetchedPartition(p, nil))
			}
			out = append(out, ft)
		}
		return out, err
	}
	b.gstate.mu.Lock()
	store := b.gstate.store
	b.gstate.mu.Unlock()
	committed := map[string]map[int32]coordinator.OffsetValue{}
	if store != nil {
		committed = store.GroupOffsets(group)
	}
	if asked == nil {
		asked = map[string][]int32{}
		for name, ps := range committed {
			for p := range ps {
				asked[name] = append(asked[name], p)
			}
			slices.Sort(asked[name])
			order = append(order, name)
		}
		slices.Sort(order)
	}
	var out []fetchedTopic
	for _, name := range order {
		ft := fetchedTopic{topic: name}
		for _, p := range asked[name] {
			var v *coordinator.OffsetValue
			if c, ok := committed[name][p]; ok {
				v = &c
			}
			ft.parts = append(ft.parts, fetchedPartition(p, v))
		}
		out = append(out, ft)
	}
	return out, nil
}

func fetchedPartition(p int32, v *coordinator.OffsetValue) kmsg.OffsetFetchResponseGroupTopicPartition {
	fp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
	fp.Partition, fp.Offset, fp.LeaderEpoch = p, -1, -1
	if v != nil {
		md := v.Metadata
		fp.Offset, fp.LeaderEpoch, fp.Metadata = v.Offset, v.LeaderEpoch, &md
	} else {
		empty := ""
		fp.Metadata = &empty
	}
	return fp
}
