package broker

// IncrementalAlterConfigs (key 44), v0-1.
//
// SET and DELETE on a topic's explicit configs; APPEND and SUBTRACT apply
// to list configs only, and the one list config (cleanup.policy) accepts
// just "delete", so they are INVALID_CONFIG. The result is validated as a
// whole before anything changes. Broker configs are read-only here.

import (
	"context"
	"fmt"
	"maps"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleIncrementalAlterConfigs(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.IncrementalAlterConfigsRequest)
	resp := r.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
	for _, rr := range r.Resources {
		res := kmsg.NewIncrementalAlterConfigsResponseResource()
		res.ResourceType, res.ResourceName = rr.ResourceType, rr.ResourceName
		err := b.alterResource(ctx, rr.ResourceType, rr.ResourceName, func(cur map[string]string) (map[string]string, error) {
			next := maps.Clone(cur)
			if next == nil {
				next = map[string]string{}
			}
			for _, c := range rr.Configs {
				switch c.Op {
				case kmsg.IncrementalAlterConfigOpSet:
					if c.Value == nil {
						return nil, fmt.Errorf("%w: SET %q without a value", ErrInvalidConfig, c.Name)
					}
					next[c.Name] = *c.Value
				case kmsg.IncrementalAlterConfigOpDelete:
					delete(next, c.Name)
				default:
					return nil, fmt.Errorf("%w: operation %d on %q is not supported", ErrInvalidConfig, c.Op, c.Name)
				}
			}
			return next, nil
		}, r.ValidateOnly)
		if err != nil {
			res.ErrorCode, res.ErrorMessage = errorFields(err)
		}
		resp.Resources = append(resp.Resources, res)
	}
	return resp, nil
}

// alterResource applies change to a resource's explicit configs. Only
// topics can change; broker configs come from flags.
func (b *Broker) alterResource(ctx context.Context, typ kmsg.ConfigResourceType, name string, change func(map[string]string) (map[string]string, error), validateOnly bool) error {
	if typ != kmsg.ConfigResourceTypeTopic {
		return fmt.Errorf("%w: only topic configs can be altered; broker configs are read-only", ErrInvalidRequest)
	}
	return b.alterTopicConfigs(ctx, name, change, validateOnly)
}
