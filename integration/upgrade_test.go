package integration

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/broker/metadata"
)

// TestRollingUpgradeFeatureLevel runs a mixed-version cluster through a
// rolling upgrade for one compatible change: publishing leaders in batches
// (SetLeaders, feature level 2). The brokers start as level-1 builds (their
// metadata decodes level-1 commands only, as an older build would). Each is
// restarted as a level-2 build in turn while producers write; until the
// last one is, the cluster stays at level 1 and no broker writes a
// SetLeaders. Then the cluster's level is raised, the next leadership
// changes are published with SetLeaders, every broker's Metadata agrees,
// and every acknowledged record is read back exactly once.
func TestRollingUpgradeFeatureLevel(t *testing.T) {
	c := NewCluster(t, Brokers(3), WithConfig(func(cfg *broker.Config) { cfg.MaxFeatureLevel = 1 }))
	const topic = "upgrade"
	const parts = 6
	createReplicated(t, c, topic, parts, 3)
	watch := watchMetadata(t, c, topic)
	var acks ackLog
	stop := make(chan struct{})
	wg := produceLoad(t, c, topic, parts, &acks, stop)

	batched := func() (n int64) {
		for i := range c.Size() {
			if b := c.Broker(i); b != nil {
				n += b.MetadataApplied(metadata.SetLeaders{})
			}
		}
		return n
	}
	for i := range c.Size() {
		c.SetBrokerConfig(i, func(cfg *broker.Config) { cfg.MaxFeatureLevel = 2 })
		c.Restart(i) // leaderships move: SetLeader, or SetLeaders once allowed
		if i == c.Size()-1 {
			break
		}
		time.Sleep(time.Second) // let leadership balancing republish leaders
		for j := range c.Size() {
			if got := c.Broker(j).FeatureLevel(); got != 1 {
				t.Fatalf("after upgrading %d of 3 brokers, broker slot %d sees feature level %d, want 1", i+1, j, got)
			}
		}
		if n := batched(); n != 0 {
			t.Fatalf("after upgrading %d of 3 brokers, %d SetLeaders were applied at feature level 1", i+1, n)
		}
	}
	for j := range c.Size() {
		eventually(t, 30*time.Second, fmt.Sprintf("broker slot %d at feature level 2", j), func() bool {
			return c.Broker(j).FeatureLevel() == 2
		})
	}
	c.Restart(0) // its leaderships move and come back: published in batches now
	eventually(t, 30*time.Second, "leaders published with SetLeaders", func() bool { return batched() > 0 })
	for p := range int32(parts) {
		eventually(t, 30*time.Second, "every broker names the same leader", func() bool {
			var leaders []int32
			for i := range c.Size() {
				_, leader := replicasOf(t, c, i, topic, p)
				leaders = append(leaders, leader)
			}
			return leaders[0] >= 0 && slices.Min(leaders) == slices.Max(leaders)
		})
	}

	recs := finishLoad(t, stop, wg, &acks)
	checkWatch(t, watch)
	for _, addr := range c.Addrs() {
		checkExactlyOnce(t, c, addr, topic, recs)
	}
}
