package replication

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/varvelog/varve/partition/vfs"
)

// TestGroupMetricsHooks: a group reports through GroupConfig.Metrics that
// it gained leadership, one commit latency per produce entry it proposed
// (each append here is alone in its entry), and the WAL's fsyncs; closing
// it reports no loss it did not have.
func TestGroupMetricsHooks(t *testing.T) {
	b := newBroker(t, 3)
	cfg := soloConfig(b, vfs.NewMem(), "/data")
	var gained, lost, commits, syncs atomic.Int64
	cfg.Metrics = Metrics{
		Committed: func(d time.Duration) {
			if d <= 0 {
				t.Errorf("commit latency %v", d)
			}
			commits.Add(1)
		},
		Leadership: func(g bool) {
			if g {
				gained.Add(1)
			} else {
				lost.Add(1)
			}
		},
		WALSync: func(time.Duration) { syncs.Add(1) },
	}
	g := mustOpenGroup(t, cfg)
	waitReady(t, g, 10*time.Second)
	if gained.Load() != 1 || lost.Load() != 0 {
		t.Fatalf("leadership gained %d lost %d, want 1 and 0", gained.Load(), lost.Load())
	}
	syncsBefore := syncs.Load()
	if syncsBefore < 1 {
		t.Fatal("no WAL fsync reported for the bootstrap and the epoch-start entry")
	}
	for i := range 5 {
		appendOK(t, g, makeBatch("v", string(rune('a'+i))))
	}
	if n := commits.Load(); n != 5 {
		t.Fatalf("%d commit latencies for 5 sequential appends, want 5", n)
	}
	if n := syncs.Load() - syncsBefore; n < 5 {
		t.Fatalf("%d WAL fsyncs for 5 committed entries, want at least 5", n)
	}
}
