package broker

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/varvelog/varve/broker/coordinator"
	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication"
)

// Consumer groups. Committed offsets and group metadata are records of the
// __consumer_offsets partitions, each an ordinary Raft group: an
// OffsetCommit is one Append (one Raft entry), and every replica
// materialises the records it applies in a badger store (coordinator
// .OffsetStore) through the group's apply hook, with the Raft index in the
// same transaction. The coordinator of a group is the ready leader of its
// partition (abs(javaStringHashCode(group)) mod N): when this broker
// becomes one, it loads that partition's groups from the store (so a
// coordinator move does not make the groups rebalance) and serves their
// membership protocol (coordinator.Groups); when it stops being one, it
// drops them and their waiting calls answer NOT_COORDINATOR.
//
// The store is a cache of the log: on open it is rebuilt from the
// partition log when behind it (retention is off on __consumer_offsets for
// that reason), and on a file system other than the real one (the tests'
// in-memory one) it lives in memory and is rebuilt at every start.

// groupState is the broker's side of consumer groups.
type groupState struct {
	mu    sync.Mutex
	store *coordinator.OffsetStore
	led   map[int32]*ledOffsets // offsets partition -> its groups, while this broker leads it
	// lastExpiry is when offsets were last expired.
	lastExpiry time.Time
}

// ledOffsets is one offsets partition this broker coordinates.
type ledOffsets struct {
	epoch  int32
	r      *raftReplica
	groups *coordinator.Groups
	// loaded is closed once the partition's groups are restored from the
	// store: requests wait for it, so none sees a group half loaded.
	loaded chan struct{}
	// writeMu orders writes to the partition's log against compaction:
	// every write holds it shared until applied, compaction exclusively
	// (offsets_compact.go).
	writeMu sync.RWMutex
	// compacting is set while a compaction runs; liveBytes is what the
	// last one wrote.
	compacting atomic.Bool
	liveBytes  atomic.Int64

	// pmu guards writes, the latest metadata write of each group, and
	// written, closed and replaced whenever one starts (waitPersisted).
	pmu     sync.Mutex
	writes  map[string]*groupWrite
	written chan struct{}
}

// offsetStore opens the store on first use: its partition count is the
// offsets topic's, fixed when the topic was created.
func (b *Broker) offsetStore(partitions int32) (*coordinator.OffsetStore, error) {
	gs := &b.gstate
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.store != nil {
		return gs.store, nil
	}
	dir, inMemory := path.Join(b.cfg.DataDir, "coordinator", "offsets"), true
	if _, ok := b.cfg.FS.(vfs.OS); ok {
		inMemory = false
	}
	if inMemory {
		dir = ""
	}
	s, err := coordinator.OpenOffsetStore(dir, inMemory, partitions, b.logger.With("component", "offset_store"))
	if err != nil {
		return nil, err
	}
	gs.store = s
	return s, nil
}

// offsetHooks are the apply and restore hooks of an offsets partition.
func (b *Broker) offsetHooks(idx int32, partitions int32) (func(uint64, [][]byte) error, func(*partition.Log, uint64) error, error) {
	s, err := b.offsetStore(partitions)
	if err != nil {
		return nil, nil, err
	}
	apply := func(index uint64, batches [][]byte) error { return s.Apply(idx, index, batches) }
	restore := func(l *partition.Log, index uint64) error { return rebuildOffsets(s, idx, l, index) }
	return apply, restore, nil
}

// rebuildOffsets makes the store's copy of one offsets partition match the
// log when it is behind it: everything is dropped and every batch of the
// log replayed, a MiB at a time, then the log's raft index recorded.
func rebuildOffsets(s *coordinator.OffsetStore, idx int32, l *partition.Log, index uint64) error {
	if s.AppliedIndex(idx) >= index {
		return nil
	}
	if err := s.DropPartition(idx); err != nil {
		return err
	}
	end := l.LogEndOffset()
	for off := l.LogStartOffset(); off < end; {
		data, err := l.Read(off, 1<<20, end)
		if err != nil {
			return fmt.Errorf("broker: rebuilding offsets partition %d: %w", idx, err)
		}
		if len(data) == 0 {
			break
		}
		var batches [][]byte
		for len(data) > 0 {
			h, err := partition.ParseBatchHeader(data)
			if err != nil || int(h.Size()) > len(data) {
				return fmt.Errorf("broker: rebuilding offsets partition %d at %d: bad batch", idx, off)
			}
			batches = append(batches, data[:h.Size()])
			data = data[h.Size():]
			off = h.NextOffset()
		}
		if err := s.Replay(idx, batches); err != nil {
			return err
		}
	}
	return s.Apply(idx, index, nil)
}

// tendGroups runs every GroupTickInterval: it starts coordinating the
// offsets partitions this broker has become the ready leader of, stops
// coordinating those it no longer leads, drives the groups' timers and
// expires old offsets.
func (b *Broker) tendGroups() {
	gs := &b.gstate
	t := b.lookupTopic(offsetsTopic)
	var parts []*raftReplica
	if t != nil {
		parts = t.load().partitions
	}
	gs.mu.Lock()
	store := gs.store
	for p, led := range gs.led {
		r := (*raftReplica)(nil)
		if int(p) < len(parts) {
			r = parts[p]
		}
		if epoch, err := readyEpoch(r); err != nil || epoch != led.epoch {
			led.groups.Close()
			delete(gs.led, p)
			b.logger.Info("no longer coordinating offsets partition", "partition", p)
		}
	}
	var started []*ledOffsets
	for i, r := range parts {
		p := int32(i)
		if _, ok := gs.led[p]; ok || store == nil {
			continue
		}
		epoch, err := readyEpoch(r)
		if err != nil {
			continue
		}
		led := &ledOffsets{epoch: epoch, r: r, loaded: make(chan struct{})}
		led.groups = coordinator.New(b.groupConfig(led))
		if gs.led == nil {
			gs.led = map[int32]*ledOffsets{}
		}
		gs.led[p] = led
		started = append(started, led)
	}
	all := make([]*ledOffsets, 0, len(gs.led))
	for _, led := range gs.led {
		all = append(all, led)
	}
	expire := time.Since(gs.lastExpiry) >= b.cfg.OffsetsRetentionCheckInterval
	if expire {
		gs.lastExpiry = time.Now()
	}
	gs.mu.Unlock()

	for _, led := range started {
		n := 0
		for _, id := range store.Groups(led.r.index) {
			md, ok := store.GroupMetadata(id)
			if !ok {
				continue
			}
			if err := led.groups.Restore(coordinator.SnapshotFromGroupMetadata(id, md)); err != nil {
				b.logger.Warn("cannot restore a group", "group", id, "err", err)
				continue
			}
			led.persisting(id, md.Generation).finish(nil) // read from the store: written already
			n++
		}
		close(led.loaded)
		b.logger.Info("coordinating offsets partition", "partition", led.r.index, "epoch", led.epoch, "groups", n)
	}
	for _, led := range all {
		led.groups.Tick()
	}
	if expire && store != nil {
		for _, led := range all {
			b.expireOffsets(store, led)
		}
	}
	if store != nil {
		for _, led := range all {
			b.maybeCompactOffsets(store, led)
		}
	}
}

// readyEpoch is the epoch r's replica leads at, or an error.
func readyEpoch(r *raftReplica) (int32, error) {
	if r == nil || r.g == nil {
		return -1, ErrNotCoordinator
	}
	return r.g.Ready()
}

// groupConfig is the coordinator configuration of one led partition: its
// callbacks persist group metadata through the partition's Raft log.
func (b *Broker) groupConfig(led *ledOffsets) coordinator.Config {
	cfg := coordinator.DefaultConfig()
	cfg.Now = b.cfg.Now
	cfg.InitialRebalanceDelay = b.cfg.GroupInitialRebalanceDelay
	cfg.Logger = b.logger.With("component", "groups", "offsets_partition", led.r.index)
	persist := func(s coordinator.Snapshot) {
		now := b.cfg.Now().UnixMilli()
		w := led.persisting(s.Group, s.Generation)
		ev := coordinator.OffsetEvent{Kind: coordinator.OffsetEventGroup, Group: s.Group, Metadata: s.GroupMetadata(3, now)}
		b.goTracked(func() {
			ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
			defer cancel()
			err := b.writeOffsetEvents(ctx, led, ev)
			if err != nil {
				b.logger.Warn("writing group metadata failed", "group", s.Group, "generation", s.Generation,
					"partition", led.r.index, "err", err)
			}
			w.finish(err)
		})
	}
	cfg.OnStable = persist
	cfg.OnEmpty = persist
	cfg.OnRebalance = b.metrics.onRebalance
	cfg.OnDeleted = led.forgetPersisted
	return cfg
}

// groupWrite is one write of a group's metadata record.
type groupWrite struct {
	generation int32
	done       chan struct{}
	err        error
}

func (w *groupWrite) finish(err error) {
	w.err = err
	close(w.done)
}

// persisting registers the write of group's metadata at generation that is
// about to start, for waitPersisted.
func (led *ledOffsets) persisting(group string, generation int32) *groupWrite {
	w := &groupWrite{generation: generation, done: make(chan struct{})}
	led.pmu.Lock()
	defer led.pmu.Unlock()
	if led.writes == nil {
		led.writes = map[string]*groupWrite{}
	}
	led.writes[group] = w
	if led.written != nil {
		close(led.written)
	}
	led.written = make(chan struct{})
	return w
}

func (led *ledOffsets) forgetPersisted(group string) {
	led.pmu.Lock()
	defer led.pmu.Unlock()
	delete(led.writes, group)
}

// waitPersisted waits until group's metadata record of generation (or a
// later one) is committed. SyncGroup answers only then, as Kafka does: a
// member that has its assignment can rely on the group surviving a
// coordinator move (else its commits would find the group unknown).
func (led *ledOffsets) waitPersisted(ctx context.Context, group string, generation int32) error {
	for {
		led.pmu.Lock()
		w := led.writes[group]
		changed := led.written
		if changed == nil {
			changed = make(chan struct{})
			led.written = changed
		}
		led.pmu.Unlock()
		if w != nil && w.generation >= generation {
			select {
			case <-w.done:
				if w.generation == generation {
					return w.err
				}
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// appendOffsetEvents writes records to a led offsets partition in the
// background (group metadata: members are answered first, as Kafka does
// not; a failover in between costs one rebalance).
func (b *Broker) appendOffsetEvents(led *ledOffsets, evs ...coordinator.OffsetEvent) {
	b.goTracked(func() {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		if err := b.writeOffsetEvents(ctx, led, evs...); err != nil {
			b.logger.Warn("writing group records failed", "partition", led.r.index, "err", err)
		}
	})
}

// writeOffsetEvents appends records to a led offsets partition and waits
// until they are committed and applied.
func (b *Broker) writeOffsetEvents(ctx context.Context, led *ledOffsets, evs ...coordinator.OffsetEvent) error {
	batch, err := coordinator.OffsetBatch(b.cfg.Now().UnixMilli(), evs...)
	if err != nil {
		return err
	}
	led.writeMu.RLock()
	_, err = led.r.g.Append(ctx, batch)
	led.writeMu.RUnlock()
	var nl *replication.NotLeaderError
	if errors.As(err, &nl) {
		return fmt.Errorf("%w: %w", ErrNotCoordinator, err)
	}
	return err
}

// coordinatorFor is the led partition coordinating group, or
// NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE.
func (b *Broker) coordinatorFor(group string) (*ledOffsets, error) {
	t := b.lookupTopic(offsetsTopic)
	if t == nil {
		return nil, fmt.Errorf("%w: %s does not exist yet", ErrCoordinatorNotAvailable, offsetsTopic)
	}
	n := int32(len(t.load().partitions))
	p := coordinator.OffsetsPartition(group, n)
	gs := &b.gstate
	gs.mu.Lock()
	led := gs.led[p]
	gs.mu.Unlock()
	if led == nil {
		// Leading it already but not yet noticed (tendGroups runs every
		// GroupTickInterval): notice now rather than send the client away.
		if _, err := readyEpoch(t.load().partitions[p]); err == nil {
			b.tendGroups()
			gs.mu.Lock()
			led = gs.led[p]
			gs.mu.Unlock()
		}
	}
	if led == nil {
		return nil, fmt.Errorf("%w: group %q belongs to %s partition %d", ErrNotCoordinator, group, offsetsTopic, p)
	}
	select {
	case <-led.loaded:
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("%w: %s partition %d is still loading", ErrCoordinatorLoading, offsetsTopic, p)
	}
	return led, nil
}

// ledPartitions lists the offsets partitions this broker coordinates.
func (b *Broker) ledPartitions() []*ledOffsets {
	gs := &b.gstate
	gs.mu.Lock()
	defer gs.mu.Unlock()
	out := make([]*ledOffsets, 0, len(gs.led))
	for _, led := range gs.led {
		out = append(out, led)
	}
	return out
}

// expireOffsets deletes, through Raft, the commits of empty groups older
// than the retention (offsets.retention.minutes).
func (b *Broker) expireOffsets(s *coordinator.OffsetStore, led *ledOffsets) {
	keys := s.Expired(led.r.index, b.cfg.Now().UnixMilli(), b.cfg.OffsetsRetention)
	if len(keys) == 0 {
		return
	}
	evs := make([]coordinator.OffsetEvent, 0, len(keys))
	for _, k := range keys {
		evs = append(evs, coordinator.OffsetEvent{Kind: coordinator.OffsetEventCommitTombstone, Commit: k})
	}
	b.logger.Info("expiring committed offsets", "partition", led.r.index, "commits", len(keys))
	b.appendOffsetEvents(led, evs...)
}

// closeGroupState stops coordinating and closes the store (Shutdown).
func (b *Broker) closeGroupState() error {
	gs := &b.gstate
	gs.mu.Lock()
	defer gs.mu.Unlock()
	for p, led := range gs.led {
		led.groups.Close()
		delete(gs.led, p)
	}
	if gs.store == nil {
		return nil
	}
	err := gs.store.Close()
	gs.store = nil
	return err
}
