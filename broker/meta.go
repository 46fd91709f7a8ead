package broker

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/varvelog/varve/partition/vfs"
)

// metaFile is the identity of a data directory, written once at first start
// (the "format" step) and checked on every start after: a directory that
// belongs to another node or cluster is refused rather than silently used.
type metaFile struct {
	Version     int    `json:"version"`
	NodeID      int32  `json:"node_id"`
	ClusterID   string `json:"cluster_id"`
	DirectoryID string `json:"directory_id"`
}

const metaFileName = "meta.json"

// loadOrFormat reads dir/meta.json, or creates it with a new cluster id
// when the directory is new. The file is written durably (temporary file,
// fsync, rename, directory fsync).
func loadOrFormat(dir string, nodeID int32) (metaFile, error) {
	path := filepath.Join(dir, metaFileName)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var m metaFile
		if err := json.Unmarshal(b, &m); err != nil {
			return m, fmt.Errorf("broker: %s is damaged: %w", path, err)
		}
		if m.Version != 1 {
			return m, fmt.Errorf("broker: %s has version %d, this build reads 1", path, m.Version)
		}
		if m.NodeID != nodeID {
			return m, fmt.Errorf("broker: data directory %s belongs to node %d, not %d", dir, m.NodeID, nodeID)
		}
		return m, nil
	case !errors.Is(err, fs.ErrNotExist):
		return metaFile{}, fmt.Errorf("broker: read %s: %w", path, err)
	}
	m := metaFile{Version: 1, NodeID: nodeID, ClusterID: newClusterID(), DirectoryID: newClusterID()}
	if err := vfs.MkdirAllDurable(vfs.OS{}, dir); err != nil {
		return m, err
	}
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := vfs.WriteFileAtomic(vfs.OS{}, dir, metaFileName, data); err != nil {
		return m, fmt.Errorf("broker: write %s: %w", path, err)
	}
	return m, nil
}

// newClusterID is Kafka's format: 16 random bytes, base64url without
// padding (22 characters).
func newClusterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// topicID is a topic's UUID. It is random at creation and never reused, so
// a deleted and re-created topic is a different topic to clients.
type topicID [16]byte

func newTopicID() topicID {
	for {
		var id topicID
		_, _ = rand.Read(id[:])
		if id != (topicID{}) {
			return id
		}
	}
}

func (id topicID) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(id[:])), nil }

func (id *topicID) UnmarshalText(b []byte) error {
	if len(b) != 32 {
		return fmt.Errorf("topic id %q is not 32 hex digits", b)
	}
	_, err := hex.Decode(id[:], b)
	return err
}

func (id topicID) String() string { return hex.EncodeToString(id[:]) }
