package snapstore

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"strconv"

	"github.com/hashicorp/raft"
)

// formatVersion is the meta file format this build writes and the only one
// it reads (doc.go specifies it).
const formatVersion = 1

// File and directory names inside the store; doc.go lists the layout.
const (
	metaName   = "meta.json"
	dataName   = "data"
	tmpSuffix  = ".tmp" // a snapshot being written; removed by Open
	reapSuffix = ".del" // a snapshot being reaped; finished by Open
)

// maxMetaBytes bounds what readMeta loads: a meta file is a few hundred
// bytes plus the configuration, and a damaged size must not exhaust memory.
const maxMetaBytes = 1 << 20

// idWidth is the digits of each of an id's three numbers: 20 zero-padded
// decimal digits hold any uint64, and equal widths make the ids' byte order
// their (term, index, seq) order.
const (
	idWidth = 20
	idLen   = 3*idWidth + 2
)

// formatID names a snapshot "<term>-<index>-<seq>". seq makes ids unique
// when two snapshots share a term and index (a follower may install the
// leader's snapshot at the index it just took its own).
func formatID(term, index, seq uint64) string {
	return fmt.Sprintf("%0*d-%0*d-%0*d", idWidth, term, idWidth, index, idWidth, seq)
}

// parseID is the inverse of formatID; it accepts nothing else, so a name
// from the directory or from a caller can never reach outside the store.
func parseID(id string) (term, index, seq uint64, ok bool) {
	if len(id) != idLen || id[idWidth] != '-' || id[2*idWidth+1] != '-' {
		return 0, 0, 0, false
	}
	var nums [3]uint64
	for i := range nums {
		// Base 10 takes digits only: no sign, no underscores.
		n, err := strconv.ParseUint(id[i*(idWidth+1):i*(idWidth+1)+idWidth], 10, 64)
		if err != nil {
			return 0, 0, 0, false
		}
		nums[i] = n
	}
	return nums[0], nums[1], nums[2], true
}

// metaFile is the meta file: an envelope whose CRC covers the snapshot
// object's exact bytes, so damage anywhere in it is detected before any
// field is trusted.
type metaFile struct {
	Format   int             `json:"format"`
	CRC32C   uint32          `json:"crc32c"`
	Snapshot json.RawMessage `json:"snapshot"`
}

// snapMeta is the snapshot object of the meta file. Its fields are spelled
// out rather than embedding raft.SnapshotMeta so that the format is ours and
// does not change with raft's struct.
type snapMeta struct {
	ID                 string   `json:"id"`
	Version            int      `json:"version"`
	Term               uint64   `json:"term"`
	Index              uint64   `json:"index"`
	Configuration      []server `json:"configuration"`
	ConfigurationIndex uint64   `json:"configuration_index"`
	Size               int64    `json:"size"`
	// DataCRC32C is the CRC-32C of the data file; present exactly when
	// Ref is empty.
	DataCRC32C *uint32 `json:"data_crc32c,omitempty"`
	// Ref names the contents held by the Source instead of a data file.
	Ref string `json:"ref,omitempty"`
}

type server struct {
	Suffrage int    `json:"suffrage"` // raft.ServerSuffrage: 0 voter, 1 nonvoter, 2 staging
	ID       string `json:"id"`
	Address  string `json:"address"`
}

func newSnapMeta(id string, version raft.SnapshotVersion, index, term uint64,
	conf raft.Configuration, confIndex uint64) snapMeta {
	m := snapMeta{
		ID:                 id,
		Version:            int(version),
		Term:               term,
		Index:              index,
		ConfigurationIndex: confIndex,
	}
	for _, s := range conf.Servers {
		m.Configuration = append(m.Configuration, server{
			Suffrage: int(s.Suffrage),
			ID:       string(s.ID),
			Address:  string(s.Address),
		})
	}
	return m
}

// raftMeta converts to what raft sees. Peers stays empty: it only matters
// to version 0 snapshots, which the store does not write.
func (m *snapMeta) raftMeta() *raft.SnapshotMeta {
	rm := &raft.SnapshotMeta{
		Version:            raft.SnapshotVersion(m.Version),
		ID:                 m.ID,
		Index:              m.Index,
		Term:               m.Term,
		ConfigurationIndex: m.ConfigurationIndex,
		Size:               m.Size,
	}
	for _, s := range m.Configuration {
		rm.Configuration.Servers = append(rm.Configuration.Servers, raft.Server{
			Suffrage: raft.ServerSuffrage(s.Suffrage),
			ID:       raft.ServerID(s.ID),
			Address:  raft.ServerAddress(s.Address),
		})
	}
	return rm
}

// encodeMeta returns the meta file's bytes.
func encodeMeta(m *snapMeta, tab *crc32.Table) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("snapstore: encode meta: %w", err)
	}
	// json.Marshal output is compact, and Marshal only compacts a
	// RawMessage, so the bytes the CRC covers are the bytes written.
	b, err := json.Marshal(metaFile{Format: formatVersion, CRC32C: crc32.Checksum(body, tab), Snapshot: body})
	if err != nil {
		return nil, fmt.Errorf("snapstore: encode meta: %w", err)
	}
	return append(b, '\n'), nil
}

// decodeMeta parses and checks a meta file read from the directory named
// id: format, CRC, and that the fields agree with each other and the name.
func decodeMeta(b []byte, id string, tab *crc32.Table) (*snapMeta, error) {
	var f metaFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: %s: meta: %v", ErrCorrupt, id, err)
	}
	if f.Format != formatVersion {
		return nil, fmt.Errorf("%w: %s: meta format %d, this build reads %d", ErrUnsupportedVersion, id, f.Format, formatVersion)
	}
	if got := crc32.Checksum(f.Snapshot, tab); got != f.CRC32C {
		return nil, fmt.Errorf("%w: %s: meta crc32c %08x, recorded %08x", ErrCorrupt, id, got, f.CRC32C)
	}
	var m snapMeta
	if err := json.Unmarshal(f.Snapshot, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: meta: %v", ErrCorrupt, id, err)
	}
	term, index, _, ok := parseID(id)
	switch {
	case !ok || m.ID != id || m.Term != term || m.Index != index:
		return nil, fmt.Errorf("%w: %s: meta is for %s (term %d, index %d)", ErrCorrupt, id, m.ID, m.Term, m.Index)
	case m.Size < 0:
		return nil, fmt.Errorf("%w: %s: negative size %d", ErrCorrupt, id, m.Size)
	case (m.Ref == "") == (m.DataCRC32C == nil):
		return nil, fmt.Errorf("%w: %s: meta must have exactly one of ref and data_crc32c", ErrCorrupt, id)
	case !supportedVersion(raft.SnapshotVersion(m.Version)):
		return nil, fmt.Errorf("%w: %s: raft snapshot version %d", ErrUnsupportedVersion, id, m.Version)
	}
	return &m, nil
}

// supportedVersion reports whether the store writes and reads raft snapshot
// version v. Version 0 needs the legacy Peers encoding, which is private to
// raft, so it is refused, as raft's FileSnapshotStore does.
func supportedVersion(v raft.SnapshotVersion) bool {
	return v >= 1 && v <= raft.SnapshotVersionMax
}
