// Package coordinator is the group coordinator: consumer-group membership
// and (later) committed offsets for the groups whose __consumer_offsets
// partition this broker leads.
//
// # Group membership
//
// Groups implements Kafka's classic group protocol (JoinGroup, SyncGroup,
// Heartbeat, LeaveGroup, DescribeGroups, ListGroups, DeleteGroups and the
// group checks of OffsetCommit) as an in-memory state machine, with the
// semantics of Kafka's GroupCoordinator. It does no network or disk I/O: the
// broker's handlers decode a request, call the method named after it with the
// kmsg request, and encode the kmsg response it returns; errors are kerr
// codes in the responses.
//
//	g := coordinator.New(cfg)
//	resp := g.Join(ctx, req, clientID, clientHost) // blocks for the join phase
//	resp := g.Sync(ctx, req)                       // followers wait for the leader
//	resp := g.Heartbeat(req); resp := g.Leave(req)
//	groups := g.Describe(req); groups := g.List(req); errs := g.Delete(ids)
//	err := g.CheckCommit(group, memberID, instanceID, generation)
//	g.Tick()                                       // every ~100 ms
//	err = g.Restore(snapshot); ids := g.Unload(belongs); g.Close()
//
// States, as DescribeGroups and ListGroups report them:
//
//	Empty ──join──► PreparingRebalance ──join phase ends──► CompletingRebalance
//	  ▲                 ▲        │  (no members left)           │ leader's SyncGroup
//	  └─────────────────┼────────┘                              ▼
//	                    └──── member joins, leaves, expires ─── Stable
//	Dead: deleted (Delete), unloaded (Unload) or closed (Close).
//
// A join phase (PreparingRebalance) ends when every member and every pending
// member has joined, or when the rebalance timeout (the largest any member
// asked for; the session timeout for JoinGroup v0) passes. The first join of
// an Empty group instead waits out the initial rebalance delay. When it ends,
// dynamic members that did not rejoin are removed (static ones stay until
// their session expires), the generation is incremented, the protocol every
// member offers with the most first-choice votes is selected, and the leader
// (the first member to join, or the first to rejoin if the leader did not)
// gets every member's metadata. Members must then send SyncGroup within the
// rebalance timeout or be removed.
//
// Member ids are clientID + "-" + a random UUID, or group.instance.id + "-" +
// UUID for static members. JoinGroup v4+ of a dynamic member without an id
// gets MEMBER_ID_REQUIRED and an id; until it rejoins with it (or its session
// timeout passes) it is a pending member, which a join phase waits for. A
// static member rejoining without an id replaces (fences) its previous
// member id and keeps its assignment; in a Stable group, if the selected
// protocol and its metadata are unchanged, it rejoins the current generation
// without a rebalance (v9+ tell a restarted leader to skip assignment,
// KIP-814; earlier versions see the previous leader id).
//
// Time comes only from Config.Now and advances only through Tick: sessions,
// pending members, join phases and sync deadlines expire when a Tick sees
// them past due. A member waiting in JoinGroup or SyncGroup is not expired.
//
// Blocking calls return when their ctx ends (REBALANCE_IN_PROGRESS, which
// clients answer by rejoining), when the group is unloaded or the coordinator
// closed (NOT_COORDINATOR, so clients look the coordinator up again), or when
// their member is removed or fenced. No goroutines are started.
//
// # Group persistence
//
// The state that must survive a coordinator move is a Snapshot: generation,
// protocol type and name, leader, and each member's ids, client id and host,
// timeouts, protocols with their metadata, and assignment. Config.OnStable
// receives one whenever a generation completes SyncGroup or a static member
// takes a new member id in a Stable group; Config.OnEmpty when a join phase
// ends with no members; Config.OnDeleted the id of a deleted group. The broker
// writes them through the __consumer_offsets partition's Raft group as Kafka's
// group metadata record (Snapshot.GroupMetadata; a group tombstone for a
// deleted group) and, on becoming that partition's leader, calls Restore with
// SnapshotFromGroupMetadata of each stored record before serving the group
// (and Unload when it stops leading the partition). Restored members get fresh
// session deadlines, so a move causes no rebalance.
//
// Callbacks run outside every lock, one at a time and in the order the
// changes happened, on the goroutine of some call into Groups (possibly
// shortly after the call that caused them returned). They may call Groups.
// A Stable group answers its members before the snapshot is persisted (Kafka
// waits for the write); if the coordinator fails in between, the next one
// restores the previous generation and the members rejoin once.
//
// Empty groups stay in memory until Delete: the broker deletes Empty groups
// whose offsets have all expired, as Kafka's offset cleanup does.
//
// # Group locking
//
// Groups.mu guards the map of groups; each group has its own mu; a third
// mutex guards the callback queue. Order: Groups.mu, group.mu, callback queue.
// Methods that need a group's mu held end in Locked.
package coordinator
