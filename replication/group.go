package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication/transport"
)

// Errors of a group. NotLeaderError is the usual one.
var (
	// ErrStopped: the replica stopped after a storage failure or was
	// closed; it serves nothing until reopened.
	ErrStopped = errors.New("replication: replica stopped")
)

// NotLeaderError answers a request that only the ready leader may serve.
// Leader is the broker this replica believes leads (-1 unknown) and Epoch
// its term (-1 unknown). A write answered with it may still have been
// committed (leadership lost mid-flight): the client retries, and
// idempotence makes the retry safe.
type NotLeaderError struct {
	Leader int32
	Epoch  int32
}

func (e *NotLeaderError) Error() string {
	return fmt.Sprintf("replication: not the leader (leader %d, epoch %d)", e.Leader, e.Epoch)
}

// GroupConfig configures one partition replica.
type GroupConfig struct {
	// ID is the Raft group id: derived from the topic UUID and the
	// partition, never the name.
	ID      string
	LocalID int32
	// Peers are the voters, identical on every member: a new group
	// bootstraps with them.
	Peers []Peer
	// EpochBase is added to the Raft term to make the Kafka leader epoch
	// (stamped into batches, the epoch table, Ready): a re-created topic
	// starts above every epoch clients saw under its name.
	EpochBase int32
	// RaftDir holds the group's WAL and snapshot store.
	RaftDir string
	// Log opens the partition; TruncateUncheckpointed is forced on.
	Log partition.Options
	Mux *transport.Mux
	// Timing defaults to DataTiming().
	Timing Timing
	// WriteCaching acknowledges entries before the WAL's fdatasync (see
	// wal.Options.NoSync for the risk).
	WriteCaching bool
	Logger       *slog.Logger
	// Now is the wall clock (default time.Now): the leader stamps it into
	// each produce entry as the append time. Intervals (checkpoints) run
	// on the monotonic clock instead, so a jump of this one only moves
	// timestamps.
	Now func() time.Time
	// OnLeader is called when this replica has become the ready leader of
	// epoch, from the group's own goroutine: publish it.
	OnLeader func(epoch int32)
	// CheckpointInterval bounds how long applied batches stay
	// uncheckpointed (replayed from the WAL after a crash). Default 1 s.
	CheckpointInterval time.Duration
	// SnapshotBytes of applied entries trigger a snapshot (so the WAL is
	// compacted) even before SnapshotEntries. Default 64 MiB.
	SnapshotBytes int64
	// SnapshotEntries and TrailingLogs: raft's SnapshotThreshold and
	// TrailingLogs. Defaults 256 and 128: with entries of up to a few MiB
	// raft's defaults would keep gigabytes of WAL per partition.
	SnapshotEntries uint64
	TrailingLogs    uint64
	// Join opens a replica that is being added to an existing group (a
	// reassignment's new replica) without bootstrapping it: it learns the
	// configuration from the leader. Founding members leave it false.
	Join bool
	// Rejoin is Join for a replica that was a voter of the group before it
	// lost its state: it refuses votes until the leader has demoted it
	// (Demote), then catches up and is promoted like a learner.
	Rejoin bool
	// NoSoloTiming keeps Timing even when Peers is this broker alone: the
	// group is about to get more voters (see nodeConfig.noSolo).
	NoSoloTiming bool
	// OnApply, if set, is called on the FSM goroutine after each entry has
	// been applied, with its raft index and, for a produce entry, the
	// batches the log accepted (not duplicates, not refused), as the
	// producer sent them; other entries (epoch starts, deletes) pass none: a
	// state machine derived from the log (the committed offsets of an
	// __consumer_offsets partition) follows it. An error stops the replica
	// as a storage failure. Entries at or below the partition's
	// checkpointed index are not re-applied after a restart, so the callee
	// records the index it applied with its own state and skips replays.
	OnApply func(index uint64, batches [][]byte) error
	// OnRestore, if set, is called with the log and the raft index it
	// holds once when the group opens (before raft replays anything) and
	// after every snapshot that replaced the log: the callee makes what it
	// derives from the log match it (rebuilding it if it is behind).
	OnRestore func(l *partition.Log, index uint64) error
	// MaxEntryBytes caps how many bytes of produce batches are aggregated
	// into one entry (a single larger batch goes alone). Default 1 MiB.
	MaxEntryBytes int
	// Metrics receives commit latencies, leadership changes and WAL fsync
	// latencies; the zero value reports nothing.
	Metrics Metrics
}

// Group is one partition replica kept by its own Raft group. The leader
// serves Kafka requests once its epoch-start entry has applied (Ready);
// every replica's partition.Log holds exactly the committed batches, so
// its log end is the high watermark.
type Group struct {
	cfg    GroupConfig
	logger *slog.Logger
	node   *node
	fsm    *partitionFSM

	ready      atomic.Uint64 // term this replica leads and is ready in; 0 none
	lastExpiry atomic.Int64
	snapshots  atomic.Int64 // snapshots taken
	restores   atomic.Int64 // snapshots installed
	snapBusy   atomic.Bool

	failed atomic.Pointer[error]

	pmu      sync.Mutex
	pending  []*proposal
	inflight int

	started chan struct{} // closed once node is set
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

// maxInflightEntries bounds the produce entries a group has in raft at
// once; the rest wait and are aggregated into the next entry.
const maxInflightEntries = 4

// OpenGroup opens the partition and starts its Raft group.
func OpenGroup(cfg GroupConfig) (*Group, error) {
	if cfg.Timing == (Timing{}) {
		cfg.Timing = DataTiming()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = time.Second
	}
	if cfg.SnapshotBytes == 0 {
		cfg.SnapshotBytes = 64 << 20
	}
	if cfg.SnapshotEntries == 0 {
		cfg.SnapshotEntries = 256
	}
	if cfg.TrailingLogs == 0 {
		cfg.TrailingLogs = 128
	}
	if cfg.MaxEntryBytes == 0 {
		cfg.MaxEntryBytes = 1 << 20
	}
	if cfg.Log.FS == nil {
		cfg.Log.FS = vfs.OS{}
	}
	cfg.Log.TruncateUncheckpointed = true
	cfg.Log.Logger = cfg.Logger
	g := &Group{cfg: cfg, logger: cfg.Logger, started: make(chan struct{}), done: make(chan struct{})}
	l, err := partition.Open(cfg.Log)
	if err != nil {
		return nil, err
	}
	g.fsm = &partitionFSM{g: g, opts: cfg.Log, log: l, lastCkpt: time.Now()}
	g.fsm.applied, _ = l.Checkpointed()
	n, err := openNode(nodeConfig{
		groupID:   cfg.ID,
		localID:   cfg.LocalID,
		peers:     cfg.Peers,
		dir:       cfg.RaftDir,
		fs:        cfg.Log.FS,
		mux:       cfg.Mux,
		timing:    cfg.Timing,
		noSync:    cfg.WriteCaching,
		walSync:   cfg.Metrics.WALSync,
		logger:    cfg.Logger,
		source:    snapSource{g.fsm},
		trailing:  cfg.TrailingLogs,
		threshold: cfg.SnapshotEntries,
		maxAppend: 16,
		join:      cfg.Join,
		rejoin:    cfg.Rejoin,
		noSolo:    cfg.NoSoloTiming,
		onStorageError: func(err error) {
			g.fail(fmt.Errorf("replication: raft log: %w", err))
		},
		beforeStart: g.fsm.catchUpSnapshot,
		beforeRaft: func() error {
			if cfg.OnRestore == nil {
				return nil
			}
			return cfg.OnRestore(g.fsm.current(), g.fsm.applied)
		},
	}, g.fsm)
	if err != nil {
		_ = g.fsm.current().Close() // a start-time restore may have replaced l
		return nil, err
	}
	g.node = n
	close(g.started)
	g.wg.Add(1)
	go g.watchLeadership()
	return g, nil
}

func (g *Group) now() time.Time { return g.cfg.Now() }

// Log is the partition as of now (a snapshot install replaces it): read
// it, never append to it.
func (g *Group) Log() *partition.Log { return g.fsm.current() }

// failure is the error that stopped the replica, nil while it runs.
func (g *Group) failure() error {
	if p := g.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail stops the replica after a storage failure (fail closed: an fsync is
// never retried): raft is shut down in the background, since fail may run
// on raft's own FSM goroutine, so leadership moves to a healthy replica.
func (g *Group) fail(err error) error {
	if g.failed.CompareAndSwap(nil, &err) {
		g.logger.Error("replica stopped after a storage failure", "err", err)
		g.ready.Store(0)
		go func() {
			<-g.started // raft may apply (replay) before OpenGroup has stored the node
			_ = g.node.raft.Shutdown().Error()
		}()
	}
	return err
}

// watchLeadership reacts to raft's leadership notifications: on winning an
// election the leader proposes the epoch-start entry and becomes ready
// once it has applied (every entry of earlier terms is then applied too).
func (g *Group) watchLeadership() {
	defer g.wg.Done()
	for {
		select {
		case <-g.done:
			return
		case leader := <-g.node.notify:
			if g.cfg.Metrics.Leadership != nil {
				g.cfg.Metrics.Leadership(leader)
			}
			if !leader {
				if g.ready.Swap(0) != 0 {
					g.logger.Info("lost partition leadership", "term", g.node.raft.CurrentTerm())
				}
				continue
			}
			term := g.node.raft.CurrentTerm()
			f := g.node.raft.Apply(encodeEpochStart(), 10*time.Second)
			err := g.wait(f)
			if err == nil {
				if rerr, ok := f.Response().(error); ok {
					err = rerr
				}
			}
			if err != nil {
				g.logger.Warn("epoch start failed", "term", term, "err", err)
				continue
			}
			if g.node.raft.State() != raft.Leader || g.node.raft.CurrentTerm() != term {
				continue
			}
			g.ready.Store(term)
			g.logger.Info("leading partition", "epoch", g.epoch(term), "high_watermark", g.Log().LogEndOffset())
			if g.cfg.OnLeader != nil {
				g.cfg.OnLeader(g.epoch(term))
			}
		}
	}
}

// Ready returns the leader epoch when this replica is the ready leader;
// otherwise a *NotLeaderError, or the failure that stopped it.
func (g *Group) Ready() (int32, error) {
	if err := g.failure(); err != nil {
		return -1, err
	}
	r := g.node.raft
	if t := g.ready.Load(); t != 0 && t == r.CurrentTerm() && r.State() == raft.Leader {
		return g.epoch(t), nil
	}
	return -1, g.notLeader()
}

func (g *Group) notLeader() error {
	leader := g.node.leader()
	epoch := int32(-1)
	if leader >= 0 {
		epoch = g.epoch(g.node.raft.CurrentTerm())
	}
	return &NotLeaderError{Leader: leader, Epoch: epoch}
}

// epoch is the leader epoch of a term.
func (g *Group) epoch(term uint64) int32 { return g.cfg.EpochBase + int32(term) }

// Leader is the broker raft believes leads (-1 none) and the current term.
func (g *Group) Leader() (int32, uint64) { return g.node.leader(), g.node.raft.CurrentTerm() }

// IsReady reports whether this replica is the ready leader.
func (g *Group) IsReady() bool { _, err := g.Ready(); return err == nil }

// Stats are counters for tests and metrics.
type GroupStats struct {
	Snapshots, Restores int64
	AppliedIndex        uint64
	Term                uint64
}

func (g *Group) Stats() GroupStats {
	return GroupStats{Snapshots: g.snapshots.Load(), Restores: g.restores.Load(), AppliedIndex: g.node.raft.AppliedIndex(), Term: g.node.raft.CurrentTerm()}
}

// Acked is what a peer acknowledged for this group (for ISR): see
// transport.Mux.Acked.
func (g *Group) Acked(peer Peer) (uint64, time.Time) {
	return g.cfg.Mux.Acked(g.cfg.ID, raft.ServerAddress(peer.Addr))
}

// LastAppend is when this replica last received replicated log data (an
// AppendEntries with a log position, not a heartbeat) from a leader; zero
// if none since the group opened. See transport.GroupTransport.LastAppend.
func (g *Group) LastAppend() time.Time {
	if g.node.trans == nil {
		return time.Time{}
	}
	return g.node.trans.LastAppend()
}

// LastIndex is the leader's last log index.
func (g *Group) LastIndex() uint64 { return g.node.raft.LastIndex() }

// requestSnapshot asks raft for a snapshot in the background (the byte
// trigger); one at a time.
func (g *Group) requestSnapshot() {
	if !g.snapBusy.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer g.snapBusy.Store(false)
		if err := g.node.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) && !errors.Is(err, raft.ErrRaftShutdown) {
			g.logger.Warn("snapshot failed", "err", err)
		}
	}()
}

// Snapshot takes a snapshot now (tests and operators).
func (g *Group) Snapshot() error { return g.node.raft.Snapshot().Error() }

// Close stops raft (waiting for the FSM goroutine), checkpoints the log at
// the last applied entry and closes it. Entries applied after the last
// checkpoint stay replayable from the WAL either way.
func (g *Group) Close() error {
	var err error
	g.once.Do(func() {
		close(g.done)
		err = g.node.shutdown()
		g.wg.Wait()
		l := g.fsm.current()
		if g.failure() == nil && l.Err() == nil && g.fsm.dirty {
			err = errors.Join(err, l.Checkpoint(g.fsm.applied))
		}
		if cerr := l.Close(); cerr != nil && !errors.Is(cerr, partition.ErrClosed) {
			err = errors.Join(err, cerr)
		}
		g.failed.CompareAndSwap(nil, &ErrStopped)
		g.cancelPending()
	})
	return err
}

// Remove closes the group and deletes its partition and raft state (the
// replica was unassigned or its topic deleted).
func (g *Group) Remove() error {
	err := g.Close()
	fsys := g.cfg.Log.FS
	return errors.Join(err, partition.RemoveDir(fsys, g.cfg.Log.Dir), partition.RemoveDir(fsys, g.cfg.RaftDir))
}

// wait waits for a future, or until the group closes: hashicorp/raft
// never answers an entry still queued when it shuts down, so a bare
// f.Error() could block forever.
func (g *Group) wait(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-g.done:
		return raft.ErrRaftShutdown
	}
}

// ctxTimeout bounds raft's timeouts by a context deadline.
func ctxTimeout(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < def {
			return max(d, time.Millisecond)
		}
	}
	return def
}

// Name is the group id.
func (g *Group) Name() string { return g.cfg.ID }

// TransferLeadershipTo hands leadership to one voter (preferred-leader
// balancing).
func (g *Group) TransferLeadershipTo(p Peer) error {
	return g.node.raft.LeadershipTransferToServer(ServerID(p.ID), raft.ServerAddress(p.Addr)).Error()
}
