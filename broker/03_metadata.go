package broker

// Metadata (key 3), v0-12.
//
// Every broker answers from its copy of the metadata group's state: the
// registered brokers with the address of the listener the request arrived
// on, the metadata leader as controller, and the topics asked for (all
// when the list is null, or empty before v1). Partition leaders and epochs
// are those the leaders published (epoch = Raft term, never going down); a
// partition without one answers LEADER_NOT_AVAILABLE with leader -1 and
// epoch -1, and so does one whose leader's broker is fenced (the metadata
// leader has not heard from it for BrokerSessionTimeout, fence.go: it
// died and no other replica took over); replicas on fenced brokers are
// listed as offline. ISR is what the leader published from its followers'
// acknowledged indexes (every replica until it has). A missing
// topic is created only when the request allows it (always for v0-3,
// AllowAutoTopicCreation from v4) and auto.create.topics.enable is on;
// otherwise UNKNOWN_TOPIC_OR_PARTITION. A topic asked for by id (v10+)
// that does not exist is UNKNOWN_TOPIC_ID.

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
	"github.com/varvelog/varve/replication"
)

func handleMetadata(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.MetadataRequest)
	resp := r.ResponseKind().(*kmsg.MetadataResponse)
	resp.Brokers = b.brokerEntries(req.Conn.Listener)
	resp.ClusterID = &b.clusterID
	resp.ControllerID = b.machine.Leader()

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
			t, err = b.topicForMetadata(ctx, *rt.Topic, allowCreate)
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
func (b *Broker) topicForMetadata(ctx context.Context, name string, allowCreate bool) (*topic, error) {
	if t := b.lookupTopic(name); t != nil {
		return t, nil
	}
	if err := validateTopicName(name); err != nil {
		return nil, err
	}
	if !allowCreate || !b.cfg.AutoCreateTopics || internalTopic(name) {
		return nil, ErrUnknownTopic
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	t, err := b.createTopic(ctx, topicSpec{name: name, partitions: -1, replicationFactor: -1})
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
	st := b.meta.State()
	for _, p := range t.load().partitions {
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.Partition = p.index
		mp.Leader, mp.LeaderEpoch = st.ShownLeader(&p.part), p.part.LeaderEpoch
		mp.Replicas = p.part.Replicas
		mp.ISR = []int32{}
		if mp.Leader < 0 {
			mp.Leader, mp.LeaderEpoch = -1, -1
			mp.ErrorCode = kerr.LeaderNotAvailable.Code
		} else {
			mp.ISR = p.part.InSync()
		}
		for _, id := range p.part.Replicas {
			if st.IsFenced(id) || (id == b.cfg.NodeID && p.g != nil && replicaOffline(p.g)) {
				mp.OfflineReplicas = append(mp.OfflineReplicas, id)
			}
		}
		mt.Partitions = append(mt.Partitions, mp)
	}
	return mt
}

// replicaOffline reports whether this broker's replica stopped after a
// storage failure: of its partition log, or of its Raft WAL (which stops
// the replica without touching the log).
func replicaOffline(g *replication.Group) bool {
	if g.Log().Err() != nil {
		return true
	}
	_, err := g.Ready()
	return err != nil && errorCode(err) == kerr.KafkaStorageError.Code
}

// brokerEntries lists every registered broker as the given listener
// advertises it (a broker without that listener is left out: a client
// could not reach it).
func (b *Broker) brokerEntries(listener string) []kmsg.MetadataResponseBroker {
	st := b.meta.State()
	out := []kmsg.MetadataResponseBroker{}
	for _, id := range st.BrokerIDs() {
		br := st.Brokers[id]
		for _, l := range br.Listeners {
			if l.Name != listener {
				continue
			}
			mb := kmsg.NewMetadataResponseBroker()
			mb.NodeID, mb.Host, mb.Port = id, l.Host, l.Port
			if br.Rack != "" {
				rack := br.Rack
				mb.Rack = &rack
			}
			out = append(out, mb)
		}
	}
	return out
}
