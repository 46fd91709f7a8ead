package broker

// CreateTopics (key 19), v2-7.
//
// NumPartitions -1 takes the broker default, ReplicationFactor -1 the
// smaller of 3 and the number of brokers; manual replica assignments name
// registered brokers, the first of each list its preferred leader. The
// topic is created through the metadata group (forwarded to its leader)
// and the answer comes once this broker's metadata has it; partition
// leaders are elected moments later (LEADER_NOT_AVAILABLE until then).
// Configs are validated against the topic config table
// (INVALID_CONFIG names the key). ValidateOnly checks without creating.
// v5+ answers with the topic id, partition count, replication factor and
// the topic's configs.

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/protocol"
)

func handleCreateTopics(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.CreateTopicsRequest)
	ctx, cancel := requestContext(ctx, r.TimeoutMillis)
	defer cancel()
	resp := r.ResponseKind().(*kmsg.CreateTopicsResponse)
	seen := map[string]int{}
	for _, rt := range r.Topics {
		seen[rt.Topic]++
	}
	for _, rt := range r.Topics {
		st := kmsg.NewCreateTopicsResponseTopic()
		st.Topic = rt.Topic
		st.NumPartitions, st.ReplicationFactor = -1, -1
		t, spec, err := b.createTopicFromRequest(ctx, &rt, r.ValidateOnly, seen[rt.Topic] > 1)
		if err != nil {
			st.ErrorCode, st.ErrorMessage = errorFields(err)
		} else {
			st.NumPartitions, st.ReplicationFactor = spec.partitions, spec.replicationFactor
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

func (b *Broker) createTopicFromRequest(ctx context.Context, rt *kmsg.CreateTopicsRequestTopic, validateOnly, duplicate bool) (*topic, topicSpec, error) {
	spec := topicSpec{name: rt.Topic, partitions: rt.NumPartitions, replicationFactor: rt.ReplicationFactor, configs: map[string]string{}}
	if duplicate {
		return nil, spec, fmt.Errorf("%w: topic %q named twice in one request", ErrInvalidRequest, rt.Topic)
	}
	if len(rt.ReplicaAssignment) > 0 {
		if rt.NumPartitions != -1 || rt.ReplicationFactor != -1 {
			return nil, spec, fmt.Errorf("%w: replica assignment with a partition count or replication factor", ErrInvalidRequest)
		}
		for i, a := range rt.ReplicaAssignment {
			if a.Partition != int32(i) || len(a.Replicas) == 0 || len(a.Replicas) != len(rt.ReplicaAssignment[0].Replicas) {
				return nil, spec, fmt.Errorf("%w: assignment of partition %d", metadata.ErrInvalidAssignment, a.Partition)
			}
			spec.assignment = append(spec.assignment, a.Replicas)
		}
		spec.partitions, spec.replicationFactor = int32(len(rt.ReplicaAssignment)), int16(len(rt.ReplicaAssignment[0].Replicas))
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
	t, err := b.createTopic(ctx, spec)
	if err == nil {
		spec.partitions = int32(len(t.load().partitions))
	}
	return t, spec, errors.Join(err)
}
