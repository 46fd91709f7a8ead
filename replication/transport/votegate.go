package transport

import "github.com/hashicorp/raft"

// Vote gating. A raft member that lost its state (a wiped data directory)
// may have voted in terms it no longer remembers; granting a vote again
// could elect two leaders in one term. hashicorp/raft has no switch for
// "never vote", so the transport answers RequestVote and RequestPreVote
// for such a group itself, refusing, while the gate says so: raft never
// sees them. The replication layer opens the gate once the member has
// been demoted to a non-voter, whose votes no candidate counts.

// SetVoteGate makes the transport refuse every vote and pre-vote request
// for this group while allow returns false. nil removes the gate. allow
// must be cheap and must not block: it runs on a connection's reader.
func (g *GroupTransport) SetVoteGate(allow func() bool) {
	if allow == nil {
		g.voteGate.Store(nil)
		return
	}
	g.voteGate.Store(&allow)
}

// refuseVote answers a gated vote request; false when the request is not
// a vote or the gate is open.
func (g *GroupTransport) refuseVote(sc *serverConn, id uint64, kind byte, msg any) bool {
	gate := g.voteGate.Load()
	if gate == nil || (*gate)() {
		return false
	}
	switch req := msg.(type) {
	case *raft.RequestVoteRequest:
		sc.respond(id, kind, &raft.RequestVoteResponse{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(g.m.cfg.LocalAddr)}, Term: req.Term, Granted: false}, nil)
	case *raft.RequestPreVoteRequest:
		sc.respond(id, kind, &raft.RequestPreVoteResponse{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(g.m.cfg.LocalAddr)}, Term: req.Term, Granted: false}, nil)
	default:
		return false
	}
	g.m.stats.votesRefused.Add(1)
	return true
}
