// Package transport is Varve's raft transport: one Mux per broker, on one TCP port, carrying the
// RPCs of every raft group on the broker (one per partition replica, 1,000+ per broker). Each
// group gets a *GroupTransport, which implements raft.Transport, raft.WithPreVote and
// raft.WithClose for hashicorp/raft v1.8.
//
// # Why
//
// hashicorp/raft's NetworkTransport is one listener per group, ~4.5 TCP connections and 512 KiB of
// buffers per group; at 1,000 groups x 3 replicas on 2 cores it melted into an election storm.
// Here the connection count depends on the number of peers only, heartbeats of many groups share
// frames and syscalls, and frames are encoded with a compact binary codec into pooled buffers.
//
// # Connection model
//
// For each peer address a Mux dials, lazily, two connections:
//
//   - control: RequestVote, RequestPreVote, TimeoutNow, heartbeats and Calls. A heartbeat is an
//     AppendEntries with Term != 0, a leader address, PrevLogEntry == PrevLogTerm == 0, no entries
//     and LeaderCommitIndex == 0 (the test NetworkTransport uses): it carries no log position.
//   - data: every other AppendEntries, empty ones included (they carry an optimistic PrevLogIndex
//     and must not overtake data), and InstallSnapshot with its stream.
//
// Requests flow from the dialer to the listener and answers come back on the same connection, so
// two brokers talk over four TCP connections whatever the number of groups. Frames name their
// group. A failed connection fails its outstanding RPCs (raft retries); the next RPC redials, one
// dial at a time per (peer, kind), with a backoff from 20 ms doubling to 1 s after failures during
// which RPCs to that peer fail at once instead of each waiting out a dial. On the listening side
// the newest connection of a kind from a peer replaces an older one (the dialer only redials after
// giving up on the old one).
//
// # Ordering
//
// One TCP connection keeps each group's order: a group's data-connection requests reach the peer
// in the order they were queued, the peer's per-group queue hands them to raft in that order and
// raft answers a group's RPCs one at a time, so answers return in order too. A pipeline is bound
// to the data connection that was current when it was made; if that connection fails the pipeline
// fails and raft falls back to synchronous AppendEntries, so a request can never overtake an
// earlier one of the same pipeline through a newer connection. Control traffic has no order with
// respect to data, by design: that is what keeps votes and heartbeats from queueing behind
// megabytes of entries. The receiving reader never blocks on a group: requests go to a per-group
// queue drained by a goroutine that exists only while the queue is non-empty, so a group whose raft
// is busy on disk delays only itself. Heartbeats are the exception: with raft's heartbeat handler
// set (the fast path), they are answered inline on the control connection's reader, together with
// the other heartbeats of their batch; raft's handler does no I/O except persisting a newer term.
//
// # Wire format, version 1
//
// A connection opens with a handshake frame from the dialer: magic "VRVT", min and max protocol
// version (uvarint), connection kind (1 control, 2 data), cluster id and the dialer's advertised
// address (strings). The listener answers magic, the chosen version (the highest both support) or 0
// with a reason string, and closes the connection on refusal: unknown kind, no common version, or
// a cluster id other than its own (Config.ClusterID). Then frames flow:
//
//	frame    = length:uint32 big-endian (of type + body), type:byte, body
//	uvarint  = encoding/binary unsigned varint; varint = zig-zag signed varint
//	bytes    = uvarint(len+1) then len bytes; 0 encodes nil, so nil and empty survive a round trip
//	string   = uvarint(len) then len bytes
//	bool     = one byte, 0 or 1 (anything else is malformed)
//
//	type 1 hello            magic, minVersion, maxVersion, kind:byte, clusterID, addr
//	type 2 helloAck         magic, version (0 = refused), reason:string
//	type 3 request          id:uvarint, group:string (empty for a Call), kind:byte, message
//	type 4 response         item
//	type 5 heartbeats       count:uvarint, count x (id, group:string, AppendEntriesRequest)
//	type 6 heartbeat resps  count:uvarint, count x item
//	type 7 snapshot chunk   id:uvarint, raw bytes to the end of the frame
//	type 8 snapshot credit  id:uvarint, bytes:uvarint (listener to dialer)
//	type 9 snapshot abort   id:uvarint, reason:string (dialer to listener)
//	item = id:uvarint, status:byte, then status 0: kind:byte, message; status 1: error:string
//
// RPC kinds: 1 AppendEntries, 2 RequestVote, 3 RequestPreVote, 4 InstallSnapshot, 5 TimeoutNow,
// 6 Call. Every raft message starts with the RPCHeader (ProtocolVersion:varint, ID:bytes,
// Addr:bytes), then its fields in raft's declaration order: uint64 as uvarint, int and int64 as
// varint, []byte as bytes. AppendEntriesRequest: Term, Leader, PrevLogEntry, PrevLogTerm,
// LeaderCommitIndex, Entries as uvarint(count+1) (0 = nil) then each raft.Log: Index, Term,
// Type:byte, Data, Extensions, AppendedAt as varint Unix seconds and uvarint nanoseconds (the zero
// time round-trips). The other raft messages carry every field raft v1.8 defines, deprecated ones
// included (Leader, Candidate, Peers). A Call is not raft's and has no RPCHeader: its request
// message is method:string then body:bytes, its response message is body:bytes, so nil and empty
// bodies both round-trip; a handler's error is an item with status 1. A Call request names the
// empty group and travels on a control connection; a Call naming a group or on a data connection
// closes the connection. Request ids are unique per Mux and only need to be unique per
// connection. A frame type or RPC kind the receiver does not know closes the connection, so adding
// one needs a new protocol version, negotiated in the handshake (Call joined version 1 before any
// release).
//
// # Peer addresses
//
// Raft configurations are stored in every group's log and snapshots and name each server by
// (ServerID, ServerAddress) as it was when the server was added; a broker that restarts on a new
// address would be unreachable under them, and rewriting every group's configuration would need a
// membership change per group through a leader that cannot reach it. So the address raft passes
// in an RPC is only a hint: every outbound RPC of a GroupTransport (AppendEntries and heartbeats,
// pipelines, RequestVote, RequestPreVote, TimeoutNow, InstallSnapshot) dials
// Config.Resolve(id, addr) instead (Mux.Resolve; the identity without a resolver). A pipeline
// resolves once, when raft opens it. The broker resolves by broker id: the newest of the address
// the broker registered in the cluster metadata and the address it last announced (below).
//
// Everything keyed by a peer's address uses the resolved address, the one actually dialed: the
// outbound connections, Acked (recorded under the resolved address, so Acked(group, addr) takes
// what Mux.Resolve returns, e.g. the address the metadata currently registers), and PeerLost for
// outbound connections (inbound ones report the address the peer named in its handshake, which is
// the same: its advertised address). A peer's old address keeps its idle, failing link until the
// Mux closes.
//
// A moved broker must be found before it can register its new address: a follower hears from its
// leaders only once they dial it, and it cannot reach the metadata leader to register before it
// knows who that is. Its raft traffic solves this: a follower that hears nothing campaigns, and
// its RequestPreVote (like every raft request) carries an RPCHeader with its ServerID and its
// LocalAddr, which raft itself already trusts to learn its leader's address. The listening side
// passes that pair to Config.Announce: for RequestVote, RequestPreVote and TimeoutNow every time,
// for other requests when it changes on a connection. The broker's resolver takes it, so the
// leaders reach the moved broker at its first campaign, a heartbeat timeout after it starts.
//
// # Lost peers
//
// When a control connection to or from a peer fails for any reason but this Mux's own Close or its
// replacement by a newer connection from the same peer, Config.PeerLost is called with the peer's
// address (at most once per peer per PeerLostInterval, 500 ms). A killed process resets all its
// connections at once, so its peers hear of it within a round trip, long before a raft follower's
// heartbeat timeout; the replication layer uses that to start looking for a new leader after a
// lease (replication/suspect.go). It is a hint only: a connection that fails while the peer lives
// makes followers check sooner, and raft still decides by its own last contact.
//
// # Flow control and limits
//
//   - Config.MaxFrameSize (64 MiB) caps every frame; a larger length closes the connection before
//     anything is allocated. A sender refuses to encode a request above its own limit rather than
//     have the peer close a connection every group shares, so MaxAppendEntries times the largest
//     entry must stay below it. Counts are checked against the bytes left in the frame (a count of
//     2^62 in a 10-byte frame is refused), so decoding allocates in proportion to the frame; FuzzDecode
//     checks this. Group ids are at most 1,024 bytes, cluster ids 255, error strings 4 KiB. Call
//     method names and bodies are bounded by the frame only; a Call handler's answer too large
//     for a frame is replaced by an error.
//   - Pipelines: at most Config.PipelineDepth (8) AppendEntries per (group, follower) sent and not
//     yet consumed by raft, and at most Config.MaxInflightBytes (8 MiB) of them (a single larger
//     request still goes when the pipeline is empty). The depth was chosen with
//     BenchmarkReplication (3 nodes, 16 KiB commands, in-memory stores, interleaved rounds,
//     medians, on a shared 2-core machine where runs spread by 2x): 12 groups gave 165/450/784 MB/s
//     at depth 2/4/8 against NetworkTransport's 322; 1 group 302/295/243 against 207 (within the
//     noise: an earlier 5-round series had 243/204/226 against 116). Depth 2, NetworkTransport's
//     default, was worst with 12 groups in every series.
//     After handing raft a failed, rejected or newer-term answer the pipeline closes itself:
//     raft's decoder stops there, and its sender may be waiting for a slot only the decoder frees.
//   - A group's inbound queue holds at most 4 x MaxInflightBytes; beyond that requests are answered
//     with an error (only several leaders at once or a misbehaving peer get there).
//   - Heartbeats: the first queued heartbeat waits Config.HeartbeatWindow (5 ms) for others to the
//     same peer, then all go in one frame (a batch is also written at once past 32 KiB or when any
//     other frame is queued). Measured idle (TestIdleCPU, DESIGN.md's 2 s timeouts, 3 nodes in one
//     process): 300 groups 0.20 cores against NetworkTransport's 0.33; 1,000 groups 0.52 cores,
//     ~7 heartbeats per frame, no term change.
//   - InstallSnapshot: the request (with args.Size) goes first, then the bytes in 128 KiB chunks on
//     the data connection. The listener grants 1 MiB of credit when raft starts reading the stream
//     and re-grants each chunk as raft consumes it, so a stream holds at most 1 MiB and nothing
//     before raft reads it, and chunks of a big snapshot interleave with other groups' data. Raft
//     reads exactly args.Size bytes (RPC.Reader returns io.EOF there). If the follower answers
//     early (a rejection), the sender stops and sends an abort; if the sender's reader fails it
//     aborts and the follower's Read fails.
//
// # Timeouts and failures
//
// An RPC without an answer within Config.RPCTimeout (5 s) fails; raft retries or backs off. If a
// timed-out RPC's connection has received nothing at all since the RPC was sent, the connection is
// closed (a blackholed peer never fails a write); a Call that times out does not count, its handler
// may just be slow. A socket write blocked for RPCTimeout fails its connection, as does a frame
// whose body does not arrive within RPCTimeout of its first byte (an idle connection has no
// deadline). A snapshot stream that stalls for RPCTimeout fails on both sides; the final
// InstallSnapshot answer may take RPCTimeout plus 1 s per 16 MiB (the follower restores its FSM
// before answering). None of this blocks other peers: each (peer, kind) has its own connection,
// writer and reader, and callers wait only on their own RPC. Mux.Close closes the listener and
// every connection, fails outstanding RPCs and Calls with raft.ErrTransportShutdown, cancels
// running Call handlers' contexts and waits for every goroutine it started, those handlers
// included. GroupTransport.Close (raft calls it on Shutdown) and Mux.RemoveGroup detach one group:
// its outstanding RPCs fail, its pipelines close, and peers get "unknown group" answers.
//
// # Calls
//
// Mux.Call is a generic request/response between brokers, not part of raft: the broker forwards
// commands to the metadata Raft leader with it ("create this topic", "allocate producer ids").
// It rides the control connection so it never queues behind AppendEntries. The listener's reader
// only decodes it and starts Config.Handler on a goroutine of its own (through Mux.goFunc), so a
// slow handler delays neither votes and heartbeats nor other Calls; at most 64 handlers run at
// once per inbound connection (so per peer), and a Call beyond that is answered with an error at
// once. Handlers get a context cancelled when their connection dies or the Mux closes. A caller
// waits until its ctx ends, or RPCTimeout when ctx has no deadline; then it gets ctx.Err() (or a
// timeout error) and the late answer is dropped: the handler is not told and may still carry the
// command out. The handler's error comes back as a *RemoteError (status 1 in the response item),
// as do the listener's refusals (no handler, too many Calls); failing to reach the peer or to get
// an answer is an ordinary error.
//
// # Acknowledged index
//
// Mux.Acked(group, peer) is the follower log index proven by the last successful AppendEntries
// (the last entry's index, or PrevLogEntry for an empty one) or InstallSnapshot (LastLogIndex)
// this node sent, and when, keyed by the resolved address the RPC went to (see "Peer addresses"). resp.LastLog is not used: on success it may include a stale tail the
// request never checked. Heartbeats carry no position and do not move the index, but a successful one
// refreshes the time: it is the last time the follower answered this leader, so an idle group's
// followers stay fresh and a dead one goes stale whether or not the group writes. hashicorp/raft
// exposes no match index; ISR and "caught up" decisions read this.
//
// # Goroutines and locks
//
// Per connection: one reader and one writer. Per group: a dispatch goroutine while its inbound
// queue is non-empty. Per pipeline: one goroutine that waits for answers in order. Per inbound
// control connection: up to 64 Call handlers. All are started through Mux.goFunc, which refuses
// after Close, and Close waits for them. Lock order: Mux.mu, then peerLink.mu, then wire.mu;
// pipeline.mu before wire.mu. Mux.gmu (the group map), GroupTransport.mu, snapSend.mu and
// snapRecv.mu are not held while taking another lock.
//
// # Files
//
// codec.go encodes and decodes the raft messages; frame.go frames, handshake and buffer pools;
// mux.go the Mux, its Config and the listener; conn.go a connection's reader and writer and the
// client side's call matching; dial.go dialing and redial backoff; server.go the listening side;
// group.go the per-group raft.Transport and inbound queue; pipeline.go AppendEntries pipelines;
// snapshot.go InstallSnapshot streaming; call.go Mux.Call and the serving of Calls.
package transport
