package replication

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication/transport"
)

// StateMachine is a small, in-memory replicated state (the cluster
// metadata). Apply is called from one goroutine in log order, with the
// entry's index and term, and must be deterministic. Snapshot (on the same
// goroutine) encodes the whole state; Restore replaces it. The state is
// rebuilt at every start from the latest snapshot plus the WAL, so it
// needs no durable copy of its own.
type StateMachine interface {
	Apply(index, term uint64, cmd []byte) any
	Snapshot() ([]byte, error)
	Restore(data []byte) error
}

// MachineConfig configures a Machine.
type MachineConfig struct {
	ID      string // raft group id
	LocalID int32
	Peers   []Peer // identical on every member
	Dir     string // WAL and snapshots
	FS      vfs.FS
	Mux     *transport.Mux
	Timing  Timing // default MetadataTiming()
	Logger  *slog.Logger
	// Join starts a member that is not one of Peers without bootstrapping:
	// it waits for the group's leader to add it (AddLearner) and learns
	// the configuration from it.
	Join bool
	// Rejoin starts a voter that lost its state (see GroupConfig.Rejoin).
	Rejoin bool
	// Metrics: only WALSync is used (the metadata group's WAL fsyncs).
	Metrics Metrics
}

// Machine is a StateMachine replicated by one Raft group.
type Machine struct {
	node    *node
	log     *slog.Logger
	started chan struct{} // closed once node is set

	closeOnce sync.Once
}

// maxMachineSnapshot bounds what Restore reads into memory.
const maxMachineSnapshot = 256 << 20

// OpenMachine starts the group; a new one bootstraps with cfg.Peers.
func OpenMachine(cfg MachineConfig, sm StateMachine) (*Machine, error) {
	if cfg.Timing == (Timing{}) {
		cfg.Timing = MetadataTiming()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Machine{log: cfg.Logger, started: make(chan struct{})}
	n, err := openNode(nodeConfig{
		groupID:        cfg.ID,
		localID:        cfg.LocalID,
		peers:          cfg.Peers,
		dir:            cfg.Dir,
		fs:             cfg.FS,
		mux:            cfg.Mux,
		timing:         cfg.Timing,
		walSync:        cfg.Metrics.WALSync,
		logger:         cfg.Logger,
		trailing:       1024,
		threshold:      4096,
		maxAppend:      256,
		restoreOnStart: true,
		join:           cfg.Join,
		rejoin:         cfg.Rejoin,
		onStorageError: func(err error) {
			cfg.Logger.Error("metadata raft log failed; this broker leaves the metadata group", "err", err)
			go func() {
				<-m.started // the failure may come while raft starts
				_ = m.node.raft.Shutdown().Error()
			}()
		},
	}, machineFSM{sm})
	if err != nil {
		return nil, err
	}
	m.node = n
	close(m.started)
	go m.drainNotify()
	return m, nil
}

// drainNotify consumes leadership notifications (raft blocks on a full
// NotifyCh) and logs them.
func (m *Machine) drainNotify() {
	for leader := range m.node.notify {
		if leader {
			m.log.Info("leading the metadata group", "term", m.node.raft.CurrentTerm())
		}
	}
}

// Propose applies cmd through the group and returns the state machine's
// result. Only the leader may propose: elsewhere it is a *NotLeaderError
// naming the leader. On ctx expiry the outcome is unknown.
func (m *Machine) Propose(ctx context.Context, cmd []byte) (any, error) {
	r := m.node.raft
	if r.State() != raft.Leader {
		return nil, &NotLeaderError{Leader: m.node.leader(), Epoch: -1}
	}
	f := r.Apply(cmd, ctxTimeout(ctx, applyTimeout))
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			switch err {
			case raft.ErrNotLeader, raft.ErrLeadershipLost, raft.ErrLeadershipTransferInProgress, raft.ErrRaftShutdown, raft.ErrEnqueueTimeout:
				return nil, &NotLeaderError{Leader: m.node.leader(), Epoch: -1}
			}
			return nil, err
		}
		return f.Response(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Leader is the broker id raft believes leads the group, -1 when none.
func (m *Machine) Leader() int32 { return m.node.leader() }

// IsLeader reports whether this node leads the group.
func (m *Machine) IsLeader() bool { return m.node.raft.State() == raft.Leader }

// Term is the group's current term.
func (m *Machine) Term() uint64 { return m.node.raft.CurrentTerm() }

// Close stops the group. Later calls return nil.
func (m *Machine) Close() error {
	var err error
	m.closeOnce.Do(func() {
		err = m.node.shutdown()
		close(m.node.notify)
	})
	return err
}

// machineFSM adapts a StateMachine to raft.FSM.
type machineFSM struct{ sm StateMachine }

func (f machineFSM) Apply(e *raft.Log) any { return f.sm.Apply(e.Index, e.Term, e.Data) }

func (f machineFSM) Snapshot() (raft.FSMSnapshot, error) {
	b, err := f.sm.Snapshot()
	if err != nil {
		return nil, err
	}
	return bytesSnapshot(b), nil
}

func (f machineFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxMachineSnapshot+1))
	if err != nil {
		return err
	}
	if len(b) > maxMachineSnapshot {
		return fmt.Errorf("replication: metadata snapshot over %d bytes", maxMachineSnapshot)
	}
	return f.sm.Restore(b)
}

type bytesSnapshot []byte

func (s bytesSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (bytesSnapshot) Release() {}

// CaughtUp reports whether this member has applied everything the group
// has committed as far as it knows: as leader after a barrier (every entry
// of earlier terms applied), as follower when a leader is known and the
// applied index has reached the commit index the leader sent.
func (m *Machine) CaughtUp(ctx context.Context) bool {
	r := m.node.raft
	if r.State() == raft.Leader {
		return r.Barrier(ctxTimeout(ctx, time.Second)).Error() == nil
	}
	if m.node.leader() < 0 {
		return false
	}
	commit := r.CommitIndex()
	return commit > 0 && r.AppliedIndex() >= commit
}
