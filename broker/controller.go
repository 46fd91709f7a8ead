package broker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/replication"
	"github.com/varvelog/varve/replication/transport"
)

// The metadata group's commands are proposed by its leader only. Any
// broker may need one (CreateTopics, a leader publishing itself, a block
// of producer ids), so a non-leader forwards the encoded command to the
// leader over the Raft transport (method proposeMethod) and gets the
// result back; results cross the wire as a proposeReply.

const (
	proposeMethod = "metadata.propose/v1"
	// indexMethod asks the leader for the metadata index a caught-up
	// member must have applied (Raft's read-index idea): the answer is an
	// 8-byte big-endian index.
	indexMethod = "metadata.index/v1"
)

// proposeReply is a metadata.Result on the wire. Err is restored to the
// metadata sentinel it wraps, by name, so errors.Is works on both sides.
type proposeReply struct {
	ErrKind    string `json:"err_kind,omitempty"`
	ErrMsg     string `json:"err_msg,omitempty"`
	ProducerID int64  `json:"producer_id,omitempty"`
	Changed    bool   `json:"changed,omitempty"`
	NotLeader  bool   `json:"not_leader,omitempty"`
	Index      uint64 `json:"index,omitempty"`
}

// metaErrors are the metadata sentinels that cross the wire by name.
var metaErrors = map[string]error{
	"topic_exists":       metadata.ErrTopicExists,
	"unknown_topic":      metadata.ErrUnknownTopic,
	"invalid_rf":         metadata.ErrInvalidReplicationFactor,
	"invalid_partitions": metadata.ErrInvalidPartitions,
	"invalid_assignment": metadata.ErrInvalidAssignment,
	"invalid_command":    metadata.ErrInvalidCommand,
	"unknown_partition":  metadata.ErrUnknownPartition,
	"no_reassignment":    metadata.ErrNoReassignment,
	"unknown_broker":     metadata.ErrUnknownBroker,
	"broker_in_use":      metadata.ErrBrokerInUse,
	"broker_retired":     metadata.ErrBrokerRetired,
	"feature_level":      metadata.ErrFeatureLevel,
}

// metaErrorOrder is the order toReply tries metaErrors in.
var metaErrorOrder = []string{"topic_exists", "unknown_topic", "invalid_rf", "invalid_partitions", "invalid_assignment",
	"invalid_command", "unknown_partition", "no_reassignment", "unknown_broker", "broker_in_use", "broker_retired", "feature_level"}

func toReply(res metadata.Result) proposeReply {
	rep := proposeReply{ProducerID: res.ProducerID, Changed: res.Changed}
	if res.Err != nil {
		rep.ErrKind, rep.ErrMsg = "other", res.Err.Error()
		// In a fixed order, first match wins: an invalid assignment that
		// names an unknown broker wraps both sentinels.
		for _, k := range metaErrorOrder {
			if errors.Is(res.Err, metaErrors[k]) {
				rep.ErrKind = k
				break
			}
		}
	}
	return rep
}

func (rep proposeReply) result() metadata.Result {
	res := metadata.Result{ProducerID: rep.ProducerID, Changed: rep.Changed}
	if rep.ErrKind != "" {
		if e, ok := metaErrors[rep.ErrKind]; ok {
			res.Err = fmt.Errorf("%w (%s)", e, rep.ErrMsg)
		} else {
			res.Err = errors.New(rep.ErrMsg)
		}
	}
	return res
}

// metaMachine adapts metadata.FSM to replication.StateMachine.
type metaMachine struct{ f *metadata.FSM }

func (m metaMachine) Apply(index, term uint64, cmd []byte) any { return m.f.Apply(index, term, cmd) }
func (m metaMachine) Snapshot() ([]byte, error)                { return m.f.Snapshot() }
func (m metaMachine) Restore(data []byte) error                { return m.f.Restore(data) }

// propose applies a metadata command through the leader, wherever it is,
// retrying while there is none or it moves, until ctx ends. When it
// returns without error, the local state has applied the command too, so
// the caller's next read sees it.
func (b *Broker) propose(ctx context.Context, cmd any) (metadata.Result, error) {
	data, err := metadata.Encode(cmd)
	if err != nil {
		return metadata.Result{}, err
	}
	backoff := 20 * time.Millisecond
	for {
		rep, err := b.proposeOnce(ctx, data)
		if err == nil && !rep.NotLeader {
			if werr := b.meta.Wait(ctx, rep.Index); werr != nil {
				return rep.result(), werr
			}
			// A command that changed nothing (refused, or a no-op) does
			// not wake the reconciler, and there is nothing to reflect.
			if !rep.Changed {
				return rep.result(), nil
			}
			if werr := b.waitReconciled(ctx, rep.Index); werr != nil {
				return rep.result(), werr
			}
			return rep.result(), nil
		}
		if err != nil {
			b.logger.Debug("metadata proposal failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return metadata.Result{}, fmt.Errorf("%w: %w", ErrNoController, ctx.Err())
		case <-b.ctx.Done():
			return metadata.Result{}, ErrClusterShuttingDown
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// proposeOnce proposes locally when this broker leads the metadata group,
// else forwards to the leader it knows.
func (b *Broker) proposeOnce(ctx context.Context, data []byte) (proposeReply, error) {
	if b.machine.IsLeader() {
		return b.proposeLocal(ctx, data)
	}
	leader := b.machine.Leader()
	addr, ok := b.raftAddr(leader)
	if !ok {
		return proposeReply{NotLeader: true}, nil
	}
	out, err := b.mux.Call(ctx, raft.ServerAddress(addr), proposeMethod, data)
	if err != nil {
		return proposeReply{}, err
	}
	var rep proposeReply
	if err := json.Unmarshal(out, &rep); err != nil {
		return proposeReply{}, fmt.Errorf("broker: bad proposal reply from %d: %w", leader, err)
	}
	return rep, nil
}

func (b *Broker) proposeLocal(ctx context.Context, data []byte) (proposeReply, error) {
	out, err := b.machine.Propose(ctx, data)
	var nl *replication.NotLeaderError
	if errors.As(err, &nl) {
		return proposeReply{NotLeader: true}, nil
	}
	if err != nil {
		return proposeReply{}, err
	}
	res, ok := out.(metadata.Result)
	if !ok {
		return proposeReply{}, fmt.Errorf("broker: metadata apply returned %T", out)
	}
	rep := toReply(res)
	rep.Index = b.meta.State().Index
	return rep, nil
}

// handleCall serves peers' transport Calls: forwarded proposals, and
// preferred-leader elections forwarded to a partition's leader.
func (b *Broker) handleCall(ctx context.Context, from raft.ServerAddress, method string, body []byte) ([]byte, error) {
	if method == electMethod {
		return b.handleElectCall(ctx, body)
	}
	if method == indexMethod {
		if !b.machine.IsLeader() || !b.machine.CaughtUp(ctx) {
			return nil, errors.New("broker: not the metadata leader")
		}
		return binary.BigEndian.AppendUint64(nil, b.meta.State().Index), nil
	}
	if method == joinMethod {
		return b.handleJoin(ctx, body)
	}
	if method == leaveMethod {
		return b.handleLeave(body)
	}
	switch method {
	case helloMethod:
		return b.handleHello()
	case rejoinMethod:
		return b.handleRejoin(ctx, body)
	case partitionRejoinMethod:
		return b.handlePartitionRejoin(body)
	}
	if method != proposeMethod {
		return nil, fmt.Errorf("broker: unknown method %q", method)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := b.proposeLocal(ctx, body)
	if err != nil {
		return nil, err
	}
	return json.Marshal(rep)
}

// metadataCaughtUp reports whether this broker's metadata holds every
// command the group had committed when it asked: as leader after a
// barrier, as follower once it has applied the index the leader reports.
// A restarted member's raft knows neither the commit index nor whether its
// state machine has applied what it was handed until the leader tells it,
// so local indexes alone cannot say.
func (b *Broker) metadataCaughtUp(ctx context.Context) bool {
	if b.machine.IsLeader() {
		return b.machine.CaughtUp(ctx)
	}
	addr, ok := b.raftAddr(b.machine.Leader())
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out, err := b.mux.Call(ctx, raft.ServerAddress(addr), indexMethod, nil)
	if err != nil || len(out) != 8 {
		return false
	}
	return b.meta.Wait(ctx, binary.BigEndian.Uint64(out)) == nil
}

// raftAddr is the Raft address of a broker, as the transport resolves it
// (raftDirectory): the address the broker registered in the metadata or
// announced in its raft traffic, whichever is newer, else its --peers
// entry. The static list is only the bootstrap hint: a broker that
// restarted on a new address is still listed at its old one there. Our own
// address is the one we advertise. Because the transport records
// acknowledgements under the resolved address, Acked(raftAddr(id)) reads
// what the transport recorded.
func (b *Broker) raftAddr(id int32) (string, bool) {
	if id < 0 {
		return "", false
	}
	if id == b.cfg.NodeID {
		return b.raftAdvertise, true
	}
	var hint raft.ServerAddress
	for _, p := range b.peers {
		if p.ID == id {
			hint = raft.ServerAddress(p.Addr)
		}
	}
	addr := b.mux.Resolve(replication.ServerID(id), hint)
	return string(addr), addr != ""
}

// newMux starts the Raft transport for every group of this broker.
func (b *Broker) newMux() error {
	ln := b.cfg.RaftListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", b.cfg.RaftAddr); err != nil {
			return fmt.Errorf("broker: raft listener: %w", err)
		}
	}
	adv := b.cfg.RaftAdvertise
	if adv == "" {
		adv = ln.Addr().String()
	}
	b.raftAdvertise = adv
	logger := b.logger.With("component", "raft_transport")
	// Peers are dialed by broker id, not by the address a group's raft
	// configuration recorded (see raftDirectory).
	dir := newRaftDirectory(b.meta, b.cfg.NodeID, raft.ServerAddress(adv), logger)
	m, err := transport.New(transport.Config{
		LocalAddr:    raft.ServerAddress(adv),
		ClusterID:    b.clusterID,
		Dial:         b.cfg.RaftDial,
		Logger:       logger,
		Handler:      b.handleCall,
		PeerLost:     b.peerLost,
		Resolve:      dir.resolve,
		Announce:     dir.announce,
		MaxFrameSize: 256 << 20,
	}, ln)
	if err != nil {
		_ = ln.Close()
		return err
	}
	b.mux = m
	return nil
}
