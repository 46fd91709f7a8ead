package broker

// CreateTopics (key 19), v2-7.
//
// NumPartitions -1 takes the broker default; ReplicationFactor must be 1
// or -1 on a single broker; manual replica assignments must name only this
// broker. Configs are validated against the topic config table
// (INVALID_CONFIG names the key). ValidateOnly checks without creating.
// v5+ answers with the topic id, partition count, replication factor and
// the topic's configs.

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleCreateTopics(b *Broker, _ context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.CreateTopicsRequest)
	resp := r.ResponseKind().(*kmsg.CreateTopicsResponse)
	seen := map[string]int{}
	for _, rt := range r.Topics {
		seen[rt.Topic]++
	}
	for _, rt := range r.Topics {
		st := kmsg.NewCreateTopicsResponseTopic()
		st.Topic = rt.Topic
		st.NumPartitions, st.ReplicationFactor = -1, -1
		t, spec, err := b.createTopicFromRequest(&rt, r.ValidateOnly, seen[rt.Topic] > 1)
		if err != nil {
			st.ErrorCode, st.ErrorMessage = errorFields(err)
		} else {
			st.NumPartitions, st.ReplicationFactor = spec.partitions, 1
			if t != nil {
				st.TopicID = t.id
			}
			for _, c := range b.describeTopicConfigs(spec.configs, nil, false) {
				tc := kmsg.NewCreateTopicsResponseTopicConfig()
				tc.Name, tc.Value, tc.ReadOnly, tc.Source, tc.IsSensitive = c.Name, c.Value, c.ReadOnly, int8(c.Source), false
				st.Configs = append(st.Configs, tc)
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}

func (b *Broker) createTopicFromRequest(rt *kmsg.CreateTopicsRequestTopic, validateOnly, duplicate bool) (*topic, topicSpec, error) {
	spec := topicSpec{name: rt.Topic, partitions: rt.NumPartitions, replicationFactor: rt.ReplicationFactor, configs: map[string]string{}}
	if duplicate {
		return nil, spec, fmt.Errorf("%w: topic %q named twice in one request", ErrInvalidRequest, rt.Topic)
	}
	if len(rt.ReplicaAssignment) > 0 {
		if rt.NumPartitions != -1 || rt.ReplicationFactor != -1 {
			return nil, spec, fmt.Errorf("%w: replica assignment with a partition count or replication factor", ErrInvalidRequest)
		}
		for i, a := range rt.ReplicaAssignment {
			if a.Partition != int32(i) || len(a.Replicas) != 1 || a.Replicas[0] != b.cfg.NodeID {
				return nil, spec, fmt.Errorf("%w: assignment of partition %d must be [%d]", ErrInvalidReplication, a.Partition, b.cfg.NodeID)
			}
		}
		spec.partitions, spec.replicationFactor = int32(len(rt.ReplicaAssignment)), 1
	}
	for _, c := range rt.Configs {
		if c.Value == nil {
			continue // null means the default
		}
		spec.configs[c.Name] = *c.Value
	}
	if validateOnly {
		_, err := b.checkTopicSpec(&spec)
		return nil, spec, err
	}
	t, err := b.createTopic(spec)
	if err == nil {
		spec.partitions = int32(len(t.load().partitions))
	}
	return t, spec, errors.Join(err)
}
