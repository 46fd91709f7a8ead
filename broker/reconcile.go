package broker

import (
	"context"
	"errors"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/broker/records"
	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/replication"
)

// The reconciler makes the local replicas match the metadata state: it
// opens the Raft group of every partition the state assigns to this
// broker, removes those it no longer does (topic deleted), applies config
// changes, and republishes the handlers' topic view. It runs on one
// goroutine, woken by every metadata change.

// reconcileLoop runs until shutdown.
func (b *Broker) reconcileLoop() {
	defer b.wg.Done()
	// Not before the metadata is caught up: while a restarted broker
	// replays the group's log it passes through old states (a topic that
	// was deleted and re-created under the same name exists again for a
	// moment), and acting on one would open, wipe and remove replicas that
	// the current state does not have.
	for !b.metadataCaughtUp(b.ctx) {
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	b.removeOrphans(b.meta.State())
	for {
		changed := b.meta.Changed()
		more, failed := b.reconcile(b.meta.State())
		if more {
			continue // more groups to open: the next wave
		}
		var retry <-chan time.Time
		if failed {
			retry = time.After(time.Second) // groups that failed to open
		}
		select {
		case <-b.ctx.Done():
			return
		case <-changed:
		case <-retry:
		}
	}
}

// groupWave bounds how many groups open before the next batch: starting
// a thousand elections at once is a storm.
const groupWave = 64

// reconcile reports whether groups are left to open in a later wave, and
// whether any failed to open.
func (b *Broker) reconcile(st *metadata.State) (more, failed bool) {
	b.reconcileMu.Lock()
	defer b.reconcileMu.Unlock()
	want := map[string]bool{}
	opened := 0
	topics := make(map[string]*topic, len(st.Topics))
	byID := make(map[metadata.TopicID]*topic, len(st.Topics))
	for name, mt := range st.Topics {
		settings, err := resolveTopicSettings(&b.cfg, mt.Configs)
		if err != nil {
			b.logger.Error("topic configs do not resolve; using defaults", "topic", name, "err", err)
			settings, _ = resolveTopicSettings(&b.cfg, nil)
		}
		t := &topic{name: name, id: mt.ID, internal: internalTopic(name)}
		ts := &topicState{configs: mt.Configs, settings: settings}
		for i, p := range mt.Partitions {
			idx := int32(i)
			r := &raftReplica{b: b, topic: name, topicID: mt.ID, index: idx, part: p}
			if slices.Contains(p.Members(), b.cfg.NodeID) {
				gid := groupID(mt.ID, idx)
				want[gid] = true
				g := b.groups[gid]
				if g != nil && g.SoloTiming() && len(p.Members()) > 1 {
					// A single-voter group about to grow: its solo timing
					// cannot hold a remote voter, so reopen it with the
					// data groups' timing (moments of unavailability for a
					// partition nobody else holds yet).
					b.logger.Info("reopening a single-replica group before it grows", "topic", name, "partition", idx)
					if err := g.Close(); err != nil {
						b.logger.Error("closing a single-replica group failed", "topic", name, "partition", idx, "err", err)
					}
					delete(b.groups, gid)
					g = nil
				}
				if g == nil && opened < groupWave && b.ctx.Err() == nil {
					opened++
					var err error
					if g, err = b.openGroup(mt, idx, p, settings); err != nil {
						failed = true
						b.logger.Error("cannot open partition replica", "topic", name, "partition", idx, "err", err)
					} else {
						b.groups[gid] = g
					}
				} else if g != nil && g.Log().Config() != settings.log {
					if err := g.Log().SetConfig(settings.log); err != nil {
						b.logger.Error("cannot apply topic config", "topic", name, "partition", idx, "err", err)
					}
				}
				r.g = g
			}
			ts.partitions = append(ts.partitions, r)
		}
		t.state.Store(ts)
		topics[name] = t
		byID[mt.ID] = t
	}
	var gone []*replication.Group
	for gid, g := range b.groups {
		if !want[gid] {
			gone = append(gone, g)
			delete(b.groups, gid)
		}
	}
	b.mu.Lock()
	b.topics, b.byID = topics, byID
	b.mu.Unlock()
	b.markReconciled(st.Index)
	for _, g := range gone {
		if err := g.Remove(); err != nil {
			b.logger.Error("removing a replica failed", "err", err)
		}
	}
	return opened >= groupWave, failed
}

// openGroup opens this broker's replica of one partition. A group with no
// Raft state yet is new: whatever a deleted topic of the same name left in
// the partition directory is wiped first.
func (b *Broker) openGroup(mt *metadata.Topic, idx int32, p metadata.Partition, s topicSettings) (*replication.Group, error) {
	gid := groupID(mt.ID, idx)
	raftDir := path.Join(b.cfg.DataDir, "raft", gid)
	logDir := partitionDir(b.cfg.DataDir, mt.Name, idx)
	fresh := false
	if _, err := b.cfg.FS.Stat(raftDir); err != nil {
		fresh = true
		if err := partition.RemoveDir(b.cfg.FS, logDir); err != nil {
			return nil, err
		}
	}
	// Only the founding replicas of a new partition bootstrap its group,
	// all with the same voters. A replica opened after the partition had a
	// leader, or one a reassignment adds, joins instead: it learns the
	// configuration from the leader, and bootstrapping would give it a
	// configuration of its own.
	join := fresh && (p.LeaderEpoch >= 0 || p.Target != nil || !slices.Contains(p.Replicas, b.cfg.NodeID))
	// A fresh replica the metadata counts as a voter may have voted before
	// its state was lost (rejoin.go): it refuses votes until demoted.
	rejoin := join && p.LeaderEpoch >= 0 && slices.Contains(p.Replicas, b.cfg.NodeID) && !slices.Contains(p.Learners, b.cfg.NodeID)
	var peers []replication.Peer
	for _, id := range p.Replicas {
		addr, ok := b.raftAddr(id)
		if !ok {
			return nil, errors.New("broker: a replica's broker has no raft address")
		}
		peers = append(peers, replication.Peer{ID: id, Addr: addr})
	}
	topicID, name := mt.ID, mt.Name
	logger := b.logger.With("topic", name, "partition", idx)
	var onApply func(uint64, [][]byte) error
	var onRestore func(*partition.Log, uint64) error
	if name == offsetsTopic {
		var err error
		if onApply, onRestore, err = b.offsetHooks(idx, int32(len(mt.Partitions))); err != nil {
			return nil, err
		}
	}
	g, err := replication.OpenGroup(replication.GroupConfig{
		ID:        gid,
		EpochBase: mt.EpochBase,
		LocalID:   b.cfg.NodeID,
		Peers:     peers,
		RaftDir:   raftDir,
		Log: partition.Options{
			Dir:           logDir,
			FS:            b.cfg.FS,
			Config:        s.log,
			Now:           b.cfg.Now,
			FindTimestamp: records.FindTimestamp,
		},
		Join:         join,
		Rejoin:       rejoin,
		OnApply:      onApply,
		OnRestore:    onRestore,
		NoSoloTiming: len(p.Members()) > 1,
		Mux:          b.mux,
		Timing:       b.cfg.DataTiming,
		WriteCaching: b.cfg.WriteCaching,
		Metrics:      b.metrics.groupHooks(),
		Logger:       logger,
		Now:          b.cfg.Now,
		OnLeader: func(epoch int32) {
			b.publishLeader(topicID, idx, epoch)
		},
	})
	if err == nil && rejoin {
		logger.Warn("replica has no Raft state but was a voter: rejoining as a non-voter until caught up")
		b.rejoinedReplicas.Add(1)
		b.requestDemotion(topicID, idx, g)
	}
	return g, err
}

// publishLeader records in the metadata that this broker leads a
// partition at epoch, retrying in the background until it lands or the
// leadership has moved on. At feature level 2 the leaderships won within a
// few milliseconds share one SetLeaders entry (leaders.go).
func (b *Broker) publishLeader(id metadata.TopicID, idx int32, epoch int32) {
	if b.meta.State().FeatureLevelOrBase() >= 2 && b.cfg.MaxFeatureLevel >= 2 {
		b.queueLeader(metadata.SetLeader{Topic: id, Partition: idx, Leader: b.cfg.NodeID, Epoch: epoch})
		return
	}
	b.goTracked(func() {
		for b.ctx.Err() == nil {
			ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
			_, err := b.propose(ctx, metadata.SetLeader{Topic: id, Partition: idx, Leader: b.cfg.NodeID, Epoch: epoch})
			cancel()
			if err == nil || !b.stillLeads(id, idx, epoch) {
				return
			}
		}
	})
}

// stillLeads reports whether this broker's replica is the ready leader of
// the partition at epoch.
func (b *Broker) stillLeads(id metadata.TopicID, idx int32, epoch int32) bool {
	g := b.groupOf(id, idx)
	if g == nil {
		return false
	}
	e, err := g.Ready()
	return err == nil && e == epoch
}

func (b *Broker) groupOf(id metadata.TopicID, idx int32) *replication.Group {
	b.reconcileMu.Lock()
	defer b.reconcileMu.Unlock()
	return b.groups[groupID(id, idx)]
}

// register keeps this broker's registration (Raft address, rack,
// advertised listeners) current in the metadata, retrying until it is.
func (b *Broker) registerLoop() {
	defer b.wg.Done()
	for {
		want := b.registration()
		have, ok := b.meta.State().Brokers[b.cfg.NodeID]
		// Not before a listener serves: a registration without one would
		// replace the previous run's and hide this broker from clients
		// until Serve re-registers it.
		if len(want.Listeners) > 0 && (!ok || !sameBroker(have, want)) {
			ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
			res, err := b.propose(ctx, metadata.RegisterBroker{Broker: want})
			cancel()
			if b.ctx.Err() != nil {
				return
			}
			if errors.Is(res.Err, metadata.ErrBrokerRetired) {
				b.logger.Error("this broker id was unregistered (decommissioned): it will not register again; stop this broker")
				return
			}
			if errors.Is(res.Err, metadata.ErrFeatureLevel) {
				b.logger.Error("the cluster runs a newer feature level than this build: upgrade this broker", "err", res.Err)
				select {
				case <-b.ctx.Done():
					return
				case <-time.After(5 * time.Second):
				}
				continue
			}
			if err != nil {
				b.logger.Warn("broker registration failed; retrying", "err", err)
				select {
				case <-b.ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
			continue
		}
		select {
		case <-b.ctx.Done():
			return
		case <-b.regChanged:
		case <-b.meta.Changed():
		}
	}
}

func (b *Broker) registration() metadata.Broker {
	b.mu.RLock()
	defer b.mu.RUnlock()
	br := metadata.Broker{ID: b.cfg.NodeID, RaftAddr: b.raftAdvertise, Rack: b.cfg.Rack, MaxFeatureLevel: b.cfg.MaxFeatureLevel}
	for _, l := range b.cfg.Listeners {
		if hp, ok := b.advertised[l.Name]; ok {
			br.Listeners = append(br.Listeners, metadata.Listener{Name: l.Name, Host: hp.host, Port: hp.port})
		}
	}
	return br
}

func sameBroker(a, b metadata.Broker) bool {
	return a.ID == b.ID && a.RaftAddr == b.RaftAddr && a.Rack == b.Rack && slices.Equal(a.Listeners, b.Listeners) && a.MaxFeatureLevel == b.MaxFeatureLevel
}

// allocateProducerID hands out a producer id never handed out before by
// any broker: blocks are allocated through the metadata group (KIP-730).
func (b *Broker) allocateProducerID(ctx context.Context) (int64, error) {
	const block = 1000
	b.pidMu.Lock()
	defer b.pidMu.Unlock()
	if b.pidNext >= b.pidEnd {
		res, err := b.propose(ctx, metadata.AllocateProducerIDs{Count: block})
		if err == nil {
			err = res.Err
		}
		if err != nil {
			return 0, err
		}
		b.pidNext, b.pidEnd = res.ProducerID, res.ProducerID+block
	}
	id := b.pidNext
	b.pidNext++
	return id, nil
}

// markReconciled records that the handlers' view reflects the metadata up
// to index, and wakes waitReconciled.
func (b *Broker) markReconciled(index uint64) {
	b.recMu.Lock()
	if index > b.reconciled {
		b.reconciled = index
		close(b.recCh)
		b.recCh = make(chan struct{})
	}
	b.recMu.Unlock()
}

// waitReconciled waits until the handlers' view reflects the metadata up
// to index.
func (b *Broker) waitReconciled(ctx context.Context, index uint64) error {
	for {
		b.recMu.Lock()
		done, ch := b.reconciled >= index, b.recCh
		b.recMu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-b.ctx.Done():
			return ErrClusterShuttingDown
		}
	}
}

// waitServing waits until this broker can answer Kafka requests truthfully:
// its metadata caught up with the group, its registration (with every
// listener started so far) applied, and its handlers' view reconciled.
func (b *Broker) waitServing(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	caught := false
	for {
		if !caught {
			caught = b.metadataCaughtUp(ctx)
		}
		if caught {
			st := b.meta.State()
			have, ok := st.Brokers[b.cfg.NodeID]
			if ok && sameBroker(have, b.registration()) {
				return b.waitReconciled(ctx, st.Index)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// removeOrphans deletes, once at start with the metadata caught up, the
// replica directories no current assignment names: what a topic deleted
// while this broker was down (or a crash mid-removal) left behind.
func (b *Broker) removeOrphans(st *metadata.State) {
	wantRaft := map[string]bool{metadataGroupID: true}
	wantLogs := map[string]bool{}
	for name, t := range st.Topics {
		for i, p := range t.Partitions {
			if slices.Contains(p.Members(), b.cfg.NodeID) {
				wantRaft[groupID(t.ID, int32(i))] = true
				wantLogs[path.Base(partitionDir(b.cfg.DataDir, name, int32(i)))] = true
			}
		}
	}
	for _, sub := range []struct {
		dir  string
		want map[string]bool
	}{{path.Join(b.cfg.DataDir, "raft"), wantRaft}, {path.Join(b.cfg.DataDir, "logs"), wantLogs}} {
		names, err := b.cfg.FS.ReadDir(sub.dir)
		if err != nil {
			continue // none yet
		}
		for _, n := range names {
			// A partition's interrupted restore is the partition's to
			// finish or discard when it opens.
			if sub.want[n] || strings.HasSuffix(n, ".restore") || strings.HasSuffix(n, ".old") {
				continue
			}
			b.logger.Info("removing a replica directory no assignment names", "dir", path.Join(sub.dir, n))
			if err := partition.RemoveDir(b.cfg.FS, path.Join(sub.dir, n)); err != nil {
				b.logger.Error("cannot remove an orphaned replica directory", "dir", path.Join(sub.dir, n), "err", err)
			}
		}
	}
}
