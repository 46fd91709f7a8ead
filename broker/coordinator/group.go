package coordinator

import (
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Kafka's defaults for the group coordinator's broker settings.
const (
	DefaultMinSessionTimeout     = 6 * time.Second  // group.min.session.timeout.ms
	DefaultMaxSessionTimeout     = 30 * time.Minute // group.max.session.timeout.ms
	DefaultInitialRebalanceDelay = 3 * time.Second  // group.initial.rebalance.delay.ms
)

// Config configures Groups. DefaultConfig returns Kafka's defaults.
type Config struct {
	// Now is the clock every deadline is measured with. Nil means time.Now.
	Now func() time.Time

	// MinSessionTimeout and MaxSessionTimeout bound the session timeout a
	// member may ask for (group.min/max.session.timeout.ms); a JoinGroup
	// outside them gets INVALID_SESSION_TIMEOUT. Zero means Kafka's default
	// (6 s and 30 min).
	MinSessionTimeout time.Duration
	MaxSessionTimeout time.Duration

	// InitialRebalanceDelay (group.initial.rebalance.delay.ms) holds the first
	// join phase of an Empty group open so that members starting together
	// land in one generation: it ends InitialRebalanceDelay after the first
	// join, extended by the same delay while new members keep arriving (first
	// generation only), never past the rebalance timeout. Zero means no delay
	// (the join phase ends as soon as every known member has joined).
	// DefaultConfig sets Kafka's 3 s.
	InitialRebalanceDelay time.Duration

	// MaxGroupSize (group.max.size) caps the members of one group; joins past
	// it get GROUP_MAX_SIZE_REACHED. Zero means unlimited.
	MaxGroupSize int

	// OnStable is called with a snapshot of a Stable group whenever what
	// would have to be restored after a coordinator move changes: a
	// generation completes SyncGroup (the leader's assignment arrived), or a
	// static member rejoined with a new member id without a rebalance. The
	// broker persists the snapshot through Raft and hands it to Restore on
	// the next coordinator.
	OnStable func(Snapshot)

	// OnEmpty is called with a snapshot (no members, the new generation) when
	// a join phase ends with no members, so that the persisted state no
	// longer names members that left.
	OnEmpty func(Snapshot)

	// OnDeleted is called with the group id after Delete removed a group, so
	// the broker can persist a tombstone.
	OnDeleted func(group string)

	// OnRebalance, if set, counts rebalances for metrics: it is called with
	// false when a join phase ends with members and the next generation
	// enters CompletingRebalance, and with true when the leader's SyncGroup
	// completes that generation (Stable). Unlike the callbacks above it runs
	// with the group's lock held, so it must be cheap (a counter), must not
	// block and must not call Groups.
	OnRebalance func(completed bool)

	// Logger receives rebalance and expiry events. Nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns Kafka's defaults: session timeouts between 6 s and
// 30 min, a 3 s initial rebalance delay, no group size limit.
func DefaultConfig() Config {
	return Config{
		Now:                   time.Now,
		MinSessionTimeout:     DefaultMinSessionTimeout,
		MaxSessionTimeout:     DefaultMaxSessionTimeout,
		InitialRebalanceDelay: DefaultInitialRebalanceDelay,
	}
}

// Validate reports every problem with the configuration. Zero values are
// valid and mean the documented defaults.
func (c Config) Validate() error {
	var errs []error
	if c.MinSessionTimeout < 0 {
		errs = append(errs, errors.New("coordinator: MinSessionTimeout is negative"))
	}
	if c.MaxSessionTimeout < 0 {
		errs = append(errs, errors.New("coordinator: MaxSessionTimeout is negative"))
	}
	if c.MinSessionTimeout > 0 && c.MaxSessionTimeout > 0 && c.MinSessionTimeout > c.MaxSessionTimeout {
		errs = append(errs, errors.New("coordinator: MinSessionTimeout exceeds MaxSessionTimeout"))
	}
	if c.InitialRebalanceDelay < 0 {
		errs = append(errs, errors.New("coordinator: InitialRebalanceDelay is negative"))
	}
	if c.MaxGroupSize < 0 {
		errs = append(errs, errors.New("coordinator: MaxGroupSize is negative"))
	}
	return errors.Join(errs...)
}

// Groups is the classic consumer-group coordinator for the groups this broker
// coordinates: an in-memory state machine driven by the Kafka requests and by
// Tick. All methods are safe for concurrent use.
//
// Lock order: Groups.mu, then a group's mu, then Groups.evMu. No method holds
// a lock while it waits or while it runs a callback.
type Groups struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	groups map[string]*group
	closed bool

	// Callback events, queued under a group's lock and delivered in order,
	// one at a time, by whichever caller finds the queue idle (deliver).
	evMu       sync.Mutex
	events     []groupEvent
	delivering bool
}

// New returns an empty coordinator. Zero durations take the defaults
// documented on Config; call Config.Validate first to reject nonsense.
func New(cfg Config) *Groups {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MinSessionTimeout <= 0 {
		cfg.MinSessionTimeout = DefaultMinSessionTimeout
	}
	if cfg.MaxSessionTimeout <= 0 {
		cfg.MaxSessionTimeout = DefaultMaxSessionTimeout
	}
	cfg.InitialRebalanceDelay = max(cfg.InitialRebalanceDelay, 0)
	cfg.MaxGroupSize = max(cfg.MaxGroupSize, 0)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Groups{cfg: cfg, log: log, groups: make(map[string]*group)}
}

// get returns the named group, creating an Empty one when create is set. A
// nil group with code 0 means the group does not exist; a non-zero code
// (NOT_COORDINATOR) means the coordinator is closed. The group is returned
// unlocked: the caller locks it and must then check for groupStateDead.
func (g *Groups) get(id string, create bool) (*group, int16) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, kerr.NotCoordinator.Code
	}
	grp := g.groups[id]
	if grp == nil && create {
		grp = groupNew(g, id)
		g.groups[id] = grp
	}
	return grp, 0
}

// all returns the current groups, for a sweep.
func (g *Groups) all() []*group {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*group, 0, len(g.groups))
	for _, grp := range g.groups {
		out = append(out, grp)
	}
	return out
}

// Tick expires what the clock says has expired: sessions of members (a
// member waiting in JoinGroup or SyncGroup is kept alive, as in Kafka),
// pending members that never rejoined with their MEMBER_ID_REQUIRED id, join
// phases past their rebalance timeout (or initial delay), and members that did
// not send SyncGroup within the rebalance timeout after a join phase. The
// broker calls it about every 100 ms; the precision of every timeout is the
// tick interval.
func (g *Groups) Tick() {
	now := g.cfg.Now()
	for _, grp := range g.all() {
		grp.mu.Lock()
		if grp.state != groupStateDead {
			grp.tickLocked(now)
		}
		grp.mu.Unlock()
	}
	g.deliver()
}

// Close fails every waiting JoinGroup and SyncGroup with NOT_COORDINATOR, so
// clients look the coordinator up again, and makes every later call answer
// NOT_COORDINATOR. It does not wait for anything.
func (g *Groups) Close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	groups := g.groups
	g.groups = nil
	g.mu.Unlock()
	for _, grp := range groups {
		grp.mu.Lock()
		grp.killLocked(kerr.NotCoordinator.Code)
		grp.mu.Unlock()
	}
}

// Unload drops every group for which belongs returns true, as Close does for
// all of them: waiting calls get NOT_COORDINATOR. The broker calls it when it
// stops being the coordinator of one __consumer_offsets partition. No callback
// fires: the groups are not deleted, only no longer ours. It returns the ids
// unloaded, sorted. Groups keeps no list of the groups it does not coordinate:
// a later JoinGroup for an unloaded id would create the group afresh, so the
// broker answers NOT_COORDINATOR itself for groups it does not coordinate,
// before calling Groups.
func (g *Groups) Unload(belongs func(group string) bool) []string {
	g.mu.Lock()
	var dropped []*group
	for id, grp := range g.groups {
		if belongs(id) {
			dropped = append(dropped, grp)
			delete(g.groups, id)
		}
	}
	g.mu.Unlock()
	ids := make([]string, 0, len(dropped))
	for _, grp := range dropped {
		grp.mu.Lock()
		grp.killLocked(kerr.NotCoordinator.Code)
		grp.mu.Unlock()
		ids = append(ids, grp.id)
	}
	sort.Strings(ids)
	return ids
}

// groupEventKind says which callback an event is for.
type groupEventKind uint8

const (
	groupEventStable groupEventKind = iota
	groupEventEmpty
	groupEventDeleted
)

type groupEvent struct {
	kind  groupEventKind
	snap  Snapshot
	group string
}

// emit queues a callback. Called with a group's mu held.
func (g *Groups) emit(ev groupEvent) {
	g.evMu.Lock()
	g.events = append(g.events, ev)
	g.evMu.Unlock()
}

// deliver runs queued callbacks in order, one at a time, without holding any
// lock. Every public method that can emit calls it after unlocking. If
// another goroutine is already delivering, deliver returns at once and that
// goroutine runs the new events too; so a callback may run on any caller's
// goroutine, slightly after the call that caused it returned, and a callback
// may itself call Groups without deadlocking.
func (g *Groups) deliver() {
	g.evMu.Lock()
	if g.delivering {
		g.evMu.Unlock()
		return
	}
	g.delivering = true
	for len(g.events) > 0 {
		ev := g.events[0]
		g.events[0] = groupEvent{}
		g.events = g.events[1:]
		g.evMu.Unlock()
		g.run(ev)
		g.evMu.Lock()
	}
	g.events = nil
	g.delivering = false
	g.evMu.Unlock()
}

func (g *Groups) run(ev groupEvent) {
	switch ev.kind {
	case groupEventStable:
		if g.cfg.OnStable != nil {
			g.cfg.OnStable(ev.snap)
		}
	case groupEventEmpty:
		if g.cfg.OnEmpty != nil {
			g.cfg.OnEmpty(ev.snap)
		}
	case groupEventDeleted:
		if g.cfg.OnDeleted != nil {
			g.cfg.OnDeleted(ev.group)
		}
	}
}
