package transport

import (
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"
)

// TestVoteGate: while a group's gate is closed, RequestVote and
// RequestPreVote are refused by the transport and never reach raft; other
// RPCs still do; an open gate lets votes through again.
func TestVoteGate(t *testing.T) {
	a := newTestMux(t, nil)
	b := newTestMux(t, nil)
	var reached atomic.Int64
	gb := b.Group("g")
	serveGroup(t, gb, func(rpc raft.RPC) {
		reached.Add(1)
		switch req := rpc.Command.(type) {
		case *raft.RequestVoteRequest:
			rpc.Respond(&raft.RequestVoteResponse{Term: req.Term, Granted: true}, nil)
		case *raft.RequestPreVoteRequest:
			rpc.Respond(&raft.RequestPreVoteResponse{Term: req.Term, Granted: true}, nil)
		default:
			okAppend(rpc)
		}
	})
	var open atomic.Bool
	gb.SetVoteGate(open.Load)
	ga := a.Group("g")
	vote := func() (*raft.RequestVoteResponse, *raft.RequestPreVoteResponse) {
		t.Helper()
		v, pv := new(raft.RequestVoteResponse), new(raft.RequestPreVoteResponse)
		if err := ga.RequestVote("b", b.cfg.LocalAddr, &raft.RequestVoteRequest{Term: 7}, v); err != nil {
			t.Fatal(err)
		}
		if err := ga.RequestPreVote("b", b.cfg.LocalAddr, &raft.RequestPreVoteRequest{Term: 8}, pv); err != nil {
			t.Fatal(err)
		}
		return v, pv
	}
	v, pv := vote()
	if v.Granted || v.Term != 7 || pv.Granted || pv.Term != 8 {
		t.Fatalf("gated: vote %+v pre-vote %+v, want both refused at the request's term", v, pv)
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("%d gated vote requests reached raft", n)
	}
	if s := b.Stats(); s.VotesRefused != 2 {
		t.Fatalf("VotesRefused = %d, want 2", s.VotesRefused)
	}
	if err := ga.AppendEntries("b", b.cfg.LocalAddr, appendReq(0, 1), new(raft.AppendEntriesResponse)); err != nil || reached.Load() != 1 {
		t.Fatalf("AppendEntries through a closed vote gate: %v, reached raft %d times", err, reached.Load())
	}
	open.Store(true)
	if v, pv := vote(); !v.Granted || !pv.Granted {
		t.Fatalf("open gate: vote %+v pre-vote %+v, want raft's grants", v, pv)
	}
}
