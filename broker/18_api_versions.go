package broker

// ApiVersions (key 18), v0-4.
//
// Answers with the apis table. An ApiVersions request at a version above
// ours never reaches here: the protocol layer answers it with the KIP-511
// v0 response. No finalized features are advertised: in particular not
// transaction.version, which would switch franz-go to the KIP-890
// transactions flow.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleApiVersions(b *Broker, _ context.Context, req *protocol.Request) (kmsg.Response, error) {
	resp := req.Body.(*kmsg.ApiVersionsRequest).ResponseKind().(*kmsg.ApiVersionsResponse)
	for _, a := range b.apis.list {
		k := kmsg.NewApiVersionsResponseApiKey()
		k.ApiKey, k.MinVersion, k.MaxVersion = a.key, a.min, a.max
		resp.ApiKeys = append(resp.ApiKeys, k)
	}
	return resp, nil
}
