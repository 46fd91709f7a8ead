package broker

// DeleteTopics (key 20), v1-6.
//
// By name (TopicNames before v6, Topics from v6) or by topic id (v6). The
// topic leaves the metadata first (through its Raft group); then every
// broker's reconciler stops its replicas and removes their directories.
// A re-created topic of the same name gets a
// new id and starts empty.

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleDeleteTopics(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.DeleteTopicsRequest)
	ctx, cancel := requestContext(ctx, r.TimeoutMillis)
	defer cancel()
	resp := r.ResponseKind().(*kmsg.DeleteTopicsResponse)
	targets := r.Topics
	if r.Version < 6 {
		targets = nil
		for _, n := range r.TopicNames {
			name := n
			targets = append(targets, kmsg.DeleteTopicsRequestTopic{Topic: &name})
		}
	}
	for _, rt := range targets {
		st := kmsg.NewDeleteTopicsResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		var err error
		switch {
		case rt.Topic != nil:
			if t := b.lookupTopic(*rt.Topic); t != nil {
				st.TopicID = t.id
			}
			err = b.deleteTopicChecked(ctx, *rt.Topic)
		case rt.TopicID != [16]byte{}:
			if t := b.lookupTopicID(rt.TopicID); t == nil {
				err = ErrUnknownTopicID
			} else {
				name := t.name
				st.Topic = &name
				err = b.deleteTopicChecked(ctx, name)
			}
		default:
			err = fmt.Errorf("%w: neither a topic name nor an id", ErrInvalidRequest)
		}
		if err != nil {
			st.ErrorCode, st.ErrorMessage = errorFields(err)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}

func (b *Broker) deleteTopicChecked(ctx context.Context, name string) error {
	if err := validateTopicName(name); err != nil {
		return err
	}
	return b.deleteTopic(ctx, name)
}
