package replication

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// TestCheckpointsSurviveWallClockJump (TESTPLAN row 19): GroupConfig.Now
// jumps an hour back after the group opened. The periodic checkpoint is
// an interval, measured on the monotonic clock, so applied entries are
// still checkpointed every CheckpointInterval (by the wall clock none
// would be for an hour, and a crash would replay that hour from the WAL).
func TestCheckpointsSurviveWallClockJump(t *testing.T) {
	b := newBroker(t, 7)
	var off atomic.Int64
	cfg := soloConfig(b, b.fs, "/data")
	cfg.CheckpointInterval = 50 * time.Millisecond
	cfg.Now = func() time.Time { return time.Now().Add(time.Duration(off.Load())) }
	g := mustOpenGroup(t, cfg)
	waitReady(t, g, 5*time.Second)
	appendOK(t, g, makeBatch("before"))
	time.Sleep(2 * cfg.CheckpointInterval)
	appendOK(t, g, makeBatch("before-2"))
	before, _ := g.Log().Checkpointed()
	off.Store(int64(-time.Hour))
	eventually(t, 5*time.Second, func() error {
		appendOK(t, g, makeBatch("after"))
		if pos, _ := g.Log().Checkpointed(); pos <= before {
			time.Sleep(cfg.CheckpointInterval)
			return errors.New("no checkpoint since the clock jumped back")
		}
		return nil
	})
}
