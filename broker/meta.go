package broker

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/partition/vfs"
	"github.com/varvelog/varve/replication"
)

// metaFile is the identity of a data directory, written once at first start
// (the "format" step) and checked on every start after: a directory that
// belongs to another node or cluster is refused rather than silently used.
//
// Format version 1 (JSON): version, node_id, cluster_id, directory_id.
type metaFile struct {
	Version     int    `json:"version"`
	NodeID      int32  `json:"node_id"`
	ClusterID   string `json:"cluster_id"`
	DirectoryID string `json:"directory_id"`
}

const metaFileName = "meta.json"

// loadOrFormat reads dir/meta.json, or creates it when the directory is
// new. The cluster id is the configured one, else derived from the peer
// list (every broker started with the same list agrees without talking),
// else random for a cluster of one. The file is written durably
// (temporary file, fsync, rename, directory fsync).
//
// The peer list is read only when formatting, and the file does not
// record it, on purpose: a broker restarted on a new Raft address (its own
// --peers entry and --raft-addr changed, the other brokers' lists not yet)
// keeps its cluster id and data, and its peers reach it by broker id
// (raftDirectory). Only the node id and a configured cluster id are
// checked.
func loadOrFormat(fsys vfs.FS, dir string, nodeID int32, clusterID string, peers []replication.Peer) (metaFile, error) {
	p := path.Join(dir, metaFileName)
	b, err := vfs.ReadFile(fsys, p)
	switch {
	case err == nil:
		var m metaFile
		if err := json.Unmarshal(b, &m); err != nil {
			return m, fmt.Errorf("broker: %s is damaged: %w", p, err)
		}
		if m.Version != 1 {
			return m, fmt.Errorf("broker: %s has version %d, this build reads 1", p, m.Version)
		}
		if m.NodeID != nodeID {
			return m, fmt.Errorf("broker: data directory %s belongs to node %d, not %d", dir, m.NodeID, nodeID)
		}
		if clusterID != "" && clusterID != m.ClusterID {
			return m, fmt.Errorf("broker: data directory %s belongs to cluster %s, not %s", dir, m.ClusterID, clusterID)
		}
		return m, nil
	case !errors.Is(err, fs.ErrNotExist):
		return metaFile{}, fmt.Errorf("broker: read %s: %w", p, err)
	}
	if clusterID == "" {
		clusterID = peersClusterID(peers)
	}
	m := metaFile{Version: 1, NodeID: nodeID, ClusterID: clusterID, DirectoryID: randomID()}
	if err := vfs.MkdirAllDurable(fsys, dir); err != nil {
		return m, err
	}
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := vfs.WriteFileAtomic(fsys, dir, metaFileName, data); err != nil {
		return m, fmt.Errorf("broker: write %s: %w", p, err)
	}
	return m, nil
}

// peersClusterID derives a cluster id from the peer list, or a random one
// without peers.
func peersClusterID(peers []replication.Peer) string {
	if len(peers) == 0 {
		return randomID()
	}
	var ids []string
	for _, p := range peers {
		ids = append(ids, strconv.Itoa(int(p.ID))+"@"+p.Addr)
	}
	slices.Sort(ids)
	sum := sha256.Sum256([]byte(strings.Join(ids, ",")))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// newTopicID is a random topic UUID (never all zeros, which Kafka reads as
// "no id").
func newTopicID() [16]byte {
	for {
		var id [16]byte
		_, _ = rand.Read(id[:])
		if id != ([16]byte{}) {
			return id
		}
	}
}

// raftDirectory is where this broker's Raft transport finds its peers:
// the transport's Config.Resolve and Config.Announce.
//
// Raft configurations, kept in every group's log and snapshots, name each
// replica by (broker id, Raft address) as it was when the group was
// created, and --peers is only the metadata group's bootstrap hint. A
// broker that restarts on a new address must stay reachable under both,
// so the transport dials what the directory says for the broker id, and
// raftAddr asks the same question (through Mux.Resolve) so that Acked,
// Calls and leadership transfers name peers exactly as the transport does.
//
// Two sources, the newest wins:
//   - the broker's registration in the metadata (RegisterBroker, upserted
//     by registerLoop when its address changes): the same on every broker;
//   - the address the broker announced in its own raft requests (the
//     RPCHeader; see the transport's "Peer addresses"). This is what breaks
//     the cycle after a move: the moved broker cannot register before it
//     knows the metadata leader, and it learns the leader only once the
//     leader dials it. Its first campaign announces it, the leader's next
//     heartbeat reaches it, and then it registers.
//
// "Newest" is by arrival: a registration counts when the metadata state
// that changed it is first seen here, an announcement when it arrives. A
// registration older than an announcement can only win when this broker
// applies it late (replaying its metadata at start); the moved broker's
// next campaign corrects that. The answer is read on every outbound raft
// RPC, so it is a lock-free load of an immutable table, rebuilt only when
// the metadata state or an announcement changes it.
type raftDirectory struct {
	meta     *metadata.FSM
	self     int32
	selfAddr raft.ServerAddress
	logger   *slog.Logger
	tab      atomic.Pointer[raftDirTable]
}

// raftDirTable is one published version of the directory. It is never
// modified once published.
type raftDirTable struct {
	index uint64                       // metadata index of the registrations folded in
	reg   map[int32]metadata.Broker    // those registrations (the state's own map, read-only)
	addrs map[int32]raft.ServerAddress // resolved address per broker id
}

func newRaftDirectory(meta *metadata.FSM, self int32, selfAddr raft.ServerAddress, logger *slog.Logger) *raftDirectory {
	d := &raftDirectory{meta: meta, self: self, selfAddr: selfAddr, logger: logger}
	d.tab.Store(&raftDirTable{})
	return d
}

// resolve is the transport's Config.Resolve: the address of the broker
// that id names, or addr when id is not a broker id or the broker is
// unknown here.
func (d *raftDirectory) resolve(id raft.ServerID, addr raft.ServerAddress) raft.ServerAddress {
	n, ok := parseBrokerID(id)
	switch {
	case !ok:
		return addr
	case n == d.self:
		return d.selfAddr
	}
	if a, ok := d.table().addrs[n]; ok {
		return a
	}
	return addr
}

// announce is the transport's Config.Announce: broker id sent a raft
// request from addr. It runs on a connection's reader goroutine.
func (d *raftDirectory) announce(id raft.ServerID, addr raft.ServerAddress) {
	n, ok := parseBrokerID(id)
	if !ok || n == d.self {
		return
	}
	for {
		t := d.table()
		old, known := t.addrs[n]
		if old == addr {
			return
		}
		next := &raftDirTable{index: t.index, reg: t.reg, addrs: maps.Clone(t.addrs)}
		if next.addrs == nil {
			next.addrs = map[int32]raft.ServerAddress{}
		}
		next.addrs[n] = addr
		if d.tab.CompareAndSwap(t, next) {
			if known {
				d.logger.Info("raft peer announced a new address", "broker", n, "raft_addr", string(addr), "old_raft_addr", string(old))
			}
			return
		}
	}
}

// table returns the current table, first folding in the registrations of
// a newer metadata state if there is one. Only registrations that changed
// since the last fold override an announced address.
func (d *raftDirectory) table() *raftDirTable {
	st := d.meta.State()
	for {
		t := d.tab.Load()
		if st.Index <= t.index && t.reg != nil {
			return t
		}
		next := &raftDirTable{index: st.Index, reg: st.Brokers, addrs: t.addrs}
		cloned := false
		for id, br := range st.Brokers {
			if br.RaftAddr == "" || id == d.self {
				continue
			}
			if prev, ok := t.reg[id]; ok && prev.RaftAddr == br.RaftAddr {
				continue
			}
			if next.addrs[id] == raft.ServerAddress(br.RaftAddr) {
				continue
			}
			if !cloned {
				next.addrs = maps.Clone(t.addrs)
				if next.addrs == nil {
					next.addrs = map[int32]raft.ServerAddress{}
				}
				cloned = true
			}
			next.addrs[id] = raft.ServerAddress(br.RaftAddr)
		}
		if d.tab.CompareAndSwap(t, next) {
			return next
		}
	}
}

// parseBrokerID reverses replication.ServerID without allocating (raft
// ids that are not canonical non-negative decimals are not broker ids).
func parseBrokerID(id raft.ServerID) (int32, bool) {
	if len(id) == 0 || len(id) > 10 || (id[0] == '0' && len(id) > 1) {
		return 0, false
	}
	var n int64
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n > 1<<31-1 {
		return 0, false
	}
	return int32(n), true
}
