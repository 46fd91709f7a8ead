package broker

// AlterConfigs (key 33), v0-2.
//
// Replaces a topic's whole set of explicit configs (configs left out
// return to their defaults), validated first: an unknown name or a bad
// value is INVALID_CONFIG and changes nothing. Broker configs are
// read-only here (they come from flags): INVALID_REQUEST.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleAlterConfigs(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.AlterConfigsRequest)
	resp := r.ResponseKind().(*kmsg.AlterConfigsResponse)
	for _, rr := range r.Resources {
		res := kmsg.NewAlterConfigsResponseResource()
		res.ResourceType, res.ResourceName = rr.ResourceType, rr.ResourceName
		configs := map[string]string{}
		for _, c := range rr.Configs {
			if c.Value != nil {
				configs[c.Name] = *c.Value
			}
		}
		err := b.alterResource(ctx, rr.ResourceType, rr.ResourceName, func(map[string]string) (map[string]string, error) {
			return configs, nil
		}, r.ValidateOnly)
		if err != nil {
			res.ErrorCode, res.ErrorMessage = errorFields(err)
		}
		resp.Resources = append(resp.Resources, res)
	}
	return resp, nil
}
