package broker

// InitProducerId (key 22), v0-4.
//
// Hands an idempotent producer a producer id never handed out before
// (blocks reserved durably in the metadata store) at epoch 0, every time,
// as Kafka does without a transactional id: a producer that sends back its
// old id and epoch (v3+) also gets a fresh id, so no client can bump, and
// so fence, a producer id it does not own. Transactional ids are refused:
// transactions do not exist yet.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleInitProducerID(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.InitProducerIDRequest)
	resp := r.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if r.TransactionalID != nil {
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		return resp, nil
	}
	id, err := b.allocateProducerID(ctx)
	if err != nil {
		b.logger.Error("allocate producer id", "err", err)
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp, nil
	}
	resp.ProducerID, resp.ProducerEpoch = id, 0
	return resp, nil
}
