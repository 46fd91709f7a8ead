package broker

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

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
