package broker

// FindCoordinator (key 10), v0-6.
//
// A group's coordinator is the broker leading partition
// abs(javaStringHashCode(group)) mod N of __consumer_offsets (Kafka's
// mapping, N fixed when the topic is created); the answer is that broker
// as the listener the request arrived on advertises it. The topic is
// created on the first request, as Kafka does; until it has a leader the
// answer is COORDINATOR_NOT_AVAILABLE (retriable). v4+ carries a batch of
// keys. Transactions are not supported: key type 1 is INVALID_REQUEST.

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker/coordinator"
	"github.com/varvelog/varve/protocol"
)

func handleFindCoordinator(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.FindCoordinatorRequest)
	resp := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
	keys := r.CoordinatorKeys
	if r.Version < 4 {
		keys = []string{r.CoordinatorKey}
	}
	for _, key := range keys {
		c := kmsg.NewFindCoordinatorResponseCoordinator()
		c.Key = key
		c.NodeID, c.Port = -1, -1
		id, host, port, err := b.findCoordinator(r.CoordinatorType, key, req.Conn.Listener)
		if err != nil {
			c.ErrorCode, c.ErrorMessage = errorFields(err)
		} else {
			c.NodeID, c.Host, c.Port = id, host, port
		}
		resp.Coordinators = append(resp.Coordinators, c)
	}
	if r.Version < 4 && len(resp.Coordinators) == 1 {
		c := resp.Coordinators[0]
		resp.ErrorCode, resp.ErrorMessage, resp.NodeID, resp.Host, resp.Port = c.ErrorCode, c.ErrorMessage, c.NodeID, c.Host, c.Port
		resp.Coordinators = nil
	}
	return resp, nil
}

// findCoordinator names the broker coordinating group key, as listener
// advertises it.
func (b *Broker) findCoordinator(keyType int8, key, listener string) (int32, string, int32, error) {
	if keyType != 0 {
		return 0, "", 0, fmt.Errorf("%w: coordinator key type %d (transactions are not supported)", ErrInvalidRequest, keyType)
	}
	st := b.meta.State()
	t, ok := st.Topics[offsetsTopic]
	if !ok {
		b.ensureOffsetsTopic()
		return 0, "", 0, fmt.Errorf("%w: creating %s", ErrCoordinatorNotAvailable, offsetsTopic)
	}
	p := coordinator.OffsetsPartition(key, int32(len(t.Partitions)))
	leader := st.ShownLeader(&t.Partitions[p])
	if leader < 0 {
		return 0, "", 0, fmt.Errorf("%w: %s partition %d has no leader", ErrCoordinatorNotAvailable, offsetsTopic, p)
	}
	for _, e := range b.brokerEntries(listener) {
		if e.NodeID == leader {
			return leader, e.Host, e.Port, nil
		}
	}
	return 0, "", 0, fmt.Errorf("%w: broker %d has no %s listener registered", ErrCoordinatorNotAvailable, leader, listener)
}
