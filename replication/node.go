package replication

import (
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication/snapstore"
	"github.com/varvelog/varve/replication/transport"
	"github.com/varvelog/varve/replication/wal"
)

// Timing is a group's Raft timing.
type Timing struct {
	Heartbeat time.Duration // raft HeartbeatTimeout: a follower that hears nothing this long campaigns
	Election  time.Duration // raft ElectionTimeout
	Lease     time.Duration // raft LeaderLeaseTimeout: a leader that cannot reach a quorum this long steps down
	Commit    time.Duration // raft CommitTimeout
}

// DataTiming is the timing of partition groups: measured on 2 cores, 1,000
// groups x 3 replicas stay stable at these values and storm at raft's
// defaults (DESIGN.md).
func DataTiming() Timing {
	return Timing{Heartbeat: 2 * time.Second, Election: 2 * time.Second, Lease: time.Second, Commit: time.Second}
}

// MetadataTiming is the faster timing of the one metadata group.
func MetadataTiming() Timing {
	return Timing{Heartbeat: 500 * time.Millisecond, Election: 500 * time.Millisecond, Lease: 250 * time.Millisecond, Commit: 50 * time.Millisecond}
}

// soloTiming is for a group whose only voter is this node: nothing to
// hear from, so waiting seconds before the first self-election only delays
// the topic's first produce.
func soloTiming() Timing {
	return Timing{Heartbeat: 20 * time.Millisecond, Election: 20 * time.Millisecond, Lease: 10 * time.Millisecond, Commit: 50 * time.Millisecond}
}

// Peer is a voting member of a group: a broker id and its raft address.
type Peer struct {
	ID   int32
	Addr string
}

// ServerID is how a broker id names a raft server.
func ServerID(id int32) raft.ServerID { return raft.ServerID(strconv.Itoa(int(id))) }

// brokerID reverses ServerID; -1 when the id is not a broker id.
func brokerID(id raft.ServerID) int32 {
	n, err := strconv.ParseInt(string(id), 10, 32)
	if err != nil {
		return -1
	}
	return int32(n)
}

// nodeConfig is what every raft instance here needs.
type nodeConfig struct {
	groupID   string
	localID   int32
	peers     []Peer // the bootstrap configuration, identical on every member
	dir       string // raft state: wal/ and snapshots/
	fs        vfs.FS
	mux       *transport.Mux
	timing    Timing
	noSync    bool
	walSync   func(time.Duration) // wal.Options.OnSync; may be nil
	logger    *slog.Logger
	source    snapstore.Source
	trailing  uint64
	threshold uint64
	maxAppend int
	// restoreOnStart restores the latest snapshot at start: for state
	// machines that keep nothing on disk themselves.
	restoreOnStart bool
	// join opens a node with no raft state without bootstrapping it: the
	// replica is being added to a group that exists and learns the
	// configuration from its leader. Never set for a founding member.
	join bool
	// rejoin is join for a member that was a voter before it lost its
	// state (its broker's data directory was wiped): it may have voted in
	// terms it no longer remembers, so it refuses every vote until the
	// leader has demoted it to a non-voter (after which its vote is not
	// counted until it is promoted with a log the leader gave it).
	rejoin bool
	// noSolo keeps the configured timing for a single-voter peer list: a
	// group about to grow must not run the solo timing's 10 ms lease,
	// which raft cannot change at runtime.
	noSolo bool
	// onStorageError is told of the first failed WAL write or fsync: the
	// owner stops the node (raft would otherwise carry on with a log that
	// refuses writes, and panic when it next persists a term).
	onStorageError func(error)
	// beforeStart runs once the stores are open, before raft starts: the
	// partition uses it to catch up with a snapshot raft stored but the
	// partition never restored.
	beforeStart func(latest *raft.SnapshotMeta, snaps *snapstore.Store) error
	// beforeRaft runs after beforeStart (whether or not there was a
	// snapshot), right before raft starts replaying entries.
	beforeRaft func() error
}

// failStore reports write failures of the WAL (log and stable store) to
// the owner, once, so a failed disk stops the replica instead of leaving
// raft running on it.
type failStore struct {
	*wal.Log
	once  sync.Once
	onErr func(error)
}

func (s *failStore) check(err error) error {
	if err != nil && s.onErr != nil {
		s.once.Do(func() { s.onErr(err) })
	}
	return err
}

func (s *failStore) StoreLog(l *raft.Log) error         { return s.check(s.Log.StoreLog(l)) }
func (s *failStore) StoreLogs(ls []*raft.Log) error     { return s.check(s.Log.StoreLogs(ls)) }
func (s *failStore) DeleteRange(lo, hi uint64) error    { return s.check(s.Log.DeleteRange(lo, hi)) }
func (s *failStore) Set(k, v []byte) error              { return s.check(s.Log.Set(k, v)) }
func (s *failStore) SetUint64(k []byte, v uint64) error { return s.check(s.Log.SetUint64(k, v)) }

// node is one raft instance with its stores.
type node struct {
	raft   *raft.Raft
	wal    *failStore
	snaps  *snapstore.Store
	trans  *transport.GroupTransport
	notify chan bool
	timing Timing

	mux     *transport.Mux
	groupID string
	localID int32

	closing    chan struct{} // closed by shutdown
	closeOnce  sync.Once
	suspecting atomic.Bool  // a suspectLeader goroutine runs
	suspected  atomic.Int64 // times the heartbeat timeout was shortened
	// voteGated: this member refuses every vote (see nodeConfig.rejoin).
	voteGated atomic.Bool
}

// openNode opens the stores and starts raft, bootstrapping with the
// configured peers when there is no state yet. Every member bootstraps with
// the identical list, so they agree on configuration index 1.
func openNode(cfg nodeConfig, fsm raft.FSM) (*node, error) {
	fsys := cfg.fs
	if fsys == nil {
		fsys = vfs.OS{}
	}
	wl, err := wal.Open(wal.Options{Dir: path.Join(cfg.dir, "wal"), FS: fsys, NoSync: cfg.noSync, Logger: cfg.logger, OnSync: cfg.walSync})
	if err != nil {
		return nil, err
	}
	w := &failStore{Log: wl, onErr: cfg.onStorageError}
	snaps, err := snapstore.Open(snapstore.Options{Dir: path.Join(cfg.dir, "snapshots"), FS: fsys, Retain: 1, Source: cfg.source, Logger: cfg.logger})
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	timing := cfg.timing
	if len(cfg.peers) == 1 && cfg.peers[0].ID == cfg.localID && !cfg.join && !cfg.noSolo {
		timing = soloTiming()
	}
	n := &node{wal: w, snaps: snaps, notify: make(chan bool, 8), timing: timing, closing: make(chan struct{}),
		mux: cfg.mux, groupID: cfg.groupID, localID: cfg.localID}
	rc := raft.DefaultConfig()
	rc.LocalID = ServerID(cfg.localID)
	rc.HeartbeatTimeout = timing.Heartbeat
	rc.ElectionTimeout = timing.Election
	rc.LeaderLeaseTimeout = timing.Lease
	rc.CommitTimeout = timing.Commit
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = cfg.maxAppend
	rc.TrailingLogs = cfg.trailing
	rc.SnapshotThreshold = cfg.threshold
	rc.SnapshotInterval = 30 * time.Second
	// A partition's own durable state is newer than any snapshot (a
	// snapshot is a checkpoint), so restoring one at start would only go
	// back in time; raft replays what follows the snapshot and Apply skips
	// what the partition already holds.
	rc.NoSnapshotRestoreOnStart = !cfg.restoreOnStart
	rc.NotifyCh = n.notify
	// A node removed from its group stays up as a non-voter until its
	// owner closes it. raft's default shuts it down on its own, and a
	// later shutdown() then gets a future that does not wait for raft's
	// goroutines: the stores and NotifyCh were closed under a leader loop
	// still running (a data race, and a send on a closed channel).
	rc.ShutdownOnRemove = false
	rc.Logger = newHCLog(cfg.logger)
	if rc.MaxAppendEntries == 0 {
		rc.MaxAppendEntries = 64
	}
	if err := raft.ValidateConfig(rc); err != nil {
		n.closeStores()
		return nil, fmt.Errorf("replication: group %s: %w", cfg.groupID, err)
	}
	if err := n.reconcileSnapshot(cfg); err != nil {
		n.closeStores()
		return nil, fmt.Errorf("replication: group %s: %w", cfg.groupID, err)
	}
	n.trans = cfg.mux.Group(cfg.groupID)
	existing, err := raft.HasExistingState(w, w, snaps)
	if err != nil {
		n.closeStores()
		return nil, err
	}
	if cfg.rejoin {
		cfg.join = true
		if !existing {
			n.voteGated.Store(true)
			n.trans.SetVoteGate(func() bool { return !n.voteGated.Load() })
		}
	}
	if !existing && !cfg.join {
		var conf raft.Configuration
		for _, p := range cfg.peers {
			conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if err := raft.BootstrapCluster(rc, w, w, snaps, n.trans, conf); err != nil {
			n.closeStores()
			return nil, fmt.Errorf("replication: bootstrap group %s: %w", cfg.groupID, err)
		}
	}
	cache := newLogCache(w)
	if cfg.beforeRaft != nil {
		if err := cfg.beforeRaft(); err != nil {
			n.closeStores()
			return nil, fmt.Errorf("replication: group %s: %w", cfg.groupID, err)
		}
	}
	r, err := raft.NewRaft(rc, fsm, cache, w, snaps, n.trans)
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("replication: start group %s: %w", cfg.groupID, err)
	}
	n.raft = r
	if n.voteGated.Load() {
		go n.openVoteGate(cfg.logger)
	}
	return n, nil
}

// shutdown stops raft (which waits for the FSM goroutine) and closes the
// stores.
func (n *node) shutdown() error {
	n.closeOnce.Do(func() { close(n.closing) })
	var errs []error
	if n.raft != nil {
		errs = append(errs, n.raft.Shutdown().Error())
	}
	errs = append(errs, n.closeStores())
	return errors.Join(errs...)
}

func (n *node) closeStores() error {
	var errs []error
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
	}
	errs = append(errs, n.wal.Close())
	return errors.Join(errs...)
}

// leader returns the broker id raft believes leads, -1 when none.
func (n *node) leader() int32 {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return -1
	}
	return brokerID(id)
}

// reconcileSnapshot handles a crash (or failed restore) between raft
// storing a snapshot received from the leader and finishing its install:
// the store then holds a snapshot newer than both the state machine and
// the WAL. raft would count everything up to the snapshot as applied
// without restoring it, and the WAL would refuse the entries that follow
// it (they are not contiguous with its stale tail). So the state machine
// restores it first, and a WAL that ends below it is emptied (everything
// in it is covered by the snapshot), as a completed install would have.
func (n *node) reconcileSnapshot(cfg nodeConfig) error {
	metas, err := n.snaps.List()
	if err != nil || len(metas) == 0 {
		return err
	}
	latest := metas[0]
	if cfg.beforeStart != nil {
		if err := cfg.beforeStart(latest, n.snaps); err != nil {
			return err
		}
	}
	last, err := n.wal.LastIndex()
	if err != nil {
		return err
	}
	if last == 0 || last >= latest.Index {
		return nil
	}
	first, err := n.wal.FirstIndex()
	if err != nil {
		return err
	}
	cfg.logger.Warn("raft log ends below the latest snapshot; discarding it", "first_index", first, "last_index", last, "snapshot_index", latest.Index)
	return n.wal.DeleteRange(first, last)
}
