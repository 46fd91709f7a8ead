package broker

// Metadata (key 3), v0-12.
//
// Lists this broker (the only one) with the address of the listener the
// request arrived on, and the topics asked for (all when the list is null,
// or empty before v1). Topic ids are real (v10+), leader epochs are the
// partitions' epochs (v7+). A missing topic is created only when the
// request allows it (always for v0-3, AllowAutoTopicCreation from v4) and
// the broker's auto.create.topics.enable is on; otherwise
// UNKNOWN_TOPIC_OR_PARTITION. A topic asked for by id (v10+) that does not
// exist is UNKNOWN_TOPIC_ID.

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleMetadata(b *Broker, _ context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.MetadataRequest)
	resp := r.ResponseKind().(*kmsg.MetadataResponse)
	resp.Brokers = []kmsg.MetadataResponseBroker{b.brokerEntry(req.Conn.Listener)}
	resp.ClusterID = &b.clusterID
	resp.ControllerID = b.cfg.NodeID

	allowCreate := r.Version < 4 || r.AllowAutoTopicCreation
	var topics []*topic
	all := r.Topics == nil || (r.Version == 0 && len(r.Topics) == 0)
	if all {
		for _, n := range b.topicNames() {
			if t := b.lookupTopic(n); t != nil {
				topics = append(topics, t)
			}
		}
		for _, t := range topics {
			resp.Topics = append(resp.Topics, b.metadataTopic(t))
		}
		return resp, nil
	}
	for _, rt := range r.Topics {
		var t *topic
		var err error
		switch {
		case rt.Topic == nil && rt.TopicID != [16]byte{}:
			if t = b.lookupTopicID(rt.TopicID); t == nil {
				err = ErrUnknownTopicID
			}
		case rt.Topic == nil:
			err = ErrInvalidRequest
		default:
			t, err = b.topicForMetadata(*rt.Topic, allowCreate)
		}
		if err != nil {
			mt := kmsg.NewMetadataResponseTopic()
			mt.Topic, mt.TopicID = rt.Topic, rt.TopicID
			mt.ErrorCode = errorCode(err)
			resp.Topics = append(resp.Topics, mt)
			continue
		}
		resp.Topics = append(resp.Topics, b.metadataTopic(t))
	}
	return resp, nil
}

// topicForMetadata finds a topic, creating it when auto-creation is both
// allowed by the request and enabled on the broker.
func (b *Broker) topicForMetadata(name string, allowCreate bool) (*topic, error) {
	if t := b.lookupTopic(name); t != nil {
		return t, nil
	}
	if err := validateTopicName(name); err != nil {
		return nil, err
	}
	if !allowCreate || !b.cfg.AutoCreateTopics || internalTopic(name) {
		return nil, ErrUnknownTopic
	}
	t, err := b.createTopic(topicSpec{name: name, partitions: -1, replicationFactor: -1})
	if errors.Is(err, ErrTopicExists) {
		t = b.lookupTopic(name)
		err = nil
		if t == nil {
			err = ErrUnknownTopic
		}
	}
	return t, err
}

func (b *Broker) metadataTopic(t *topic) kmsg.MetadataResponseTopic {
	mt := kmsg.NewMetadataResponseTopic()
	name := t.name
	mt.Topic, mt.TopicID, mt.IsInternal = &name, t.id, t.internal
	for _, p := range t.load().partitions {
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.Partition = p.index
		mp.Leader = b.cfg.NodeID
		mp.LeaderEpoch = p.LeaderEpoch()
		mp.Replicas = []int32{b.cfg.NodeID}
		mp.ISR = []int32{b.cfg.NodeID}
		if p.log.Err() != nil {
			mp.ErrorCode = kerr.KafkaStorageError.Code
			mp.OfflineReplicas = []int32{b.cfg.NodeID}
		}
		mt.Partitions = append(mt.Partitions, mp)
	}
	return mt
}

// brokerEntry is this broker as the given listener advertises it.
func (b *Broker) brokerEntry(listener string) kmsg.MetadataResponseBroker {
	b.mu.RLock()
	hp := b.advertised[listener]
	b.mu.RUnlock()
	mb := kmsg.NewMetadataResponseBroker()
	mb.NodeID, mb.Host, mb.Port = b.cfg.NodeID, hp.host, hp.port
	if b.cfg.Rack != "" {
		rack := b.cfg.Rack
		mb.Rack = &rack
	}
	return mb
}
