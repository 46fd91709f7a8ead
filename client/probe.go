package client

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ProbeBrokers sends each broker (by node id, as the client's last
// Metadata answer named them) one Metadata request for no topics, all at
// once, each bounded by timeout, and returns the error of each broker
// that did not answer (nil map entries are never stored: a broker absent
// from the result answered).
//
// Why: a Varve Metadata answer lists every registered broker, dead or
// alive, and a partition keeps the leader its leader last published until
// another replica takes over, so whether a broker and the partitions it
// alone leads are reachable can only be learnt by asking it.
func ProbeBrokers(ctx context.Context, cl *kgo.Client, ids []int32, timeout time.Duration) map[int32]error {
	var mu sync.Mutex
	failed := map[int32]error{}
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			req := kmsg.NewPtrMetadataRequest()
			req.Topics = []kmsg.MetadataRequestTopic{} // none (nil would mean all)
			_, err := cl.Broker(int(id)).Request(pctx, req)
			if err != nil {
				mu.Lock()
				failed[id] = err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failed
}
