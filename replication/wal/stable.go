package wal

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"path"
	"slices"

	"github.com/varvelog/varve/partition/vfs"
)

// File names beside the segments (see doc.go).
const (
	metaFile   = "meta"
	stableFile = "stable"
	tmpSuffix  = ".tmp"
)

var (
	metaMagic   = [4]byte{'V', 'W', 'M', 'T'}
	stableMagic = [4]byte{'V', 'W', 'S', 'T'}
)

// Set implements raft.StableStore. The whole store is rewritten atomically
// and fsynced before Set returns, NoSync or not: raft keeps CurrentTerm and
// the vote here, and forgetting a vote lets a node vote twice in a term.
func (l *Log) Set(key, val []byte) error {
	l.stableMu.Lock()
	defer l.stableMu.Unlock()
	if err := l.writableLocked(); err != nil {
		return err
	}
	l.kvMu.RLock()
	next := maps.Clone(l.kv)
	l.kvMu.RUnlock()
	if next == nil {
		next = map[string][]byte{}
	}
	next[string(key)] = append([]byte{}, val...)
	if err := vfs.WriteFileAtomic(l.fsys, l.dir, stableFile, encodeStable(next)); err != nil {
		return l.fail("write "+path.Join(l.dir, stableFile), err)
	}
	l.kvMu.Lock()
	l.kv = next
	l.kvMu.Unlock()
	return nil
}

// Get implements raft.StableStore: a copy of the value, or ErrKeyNotFound.
func (l *Log) Get(key []byte) ([]byte, error) {
	l.kvMu.RLock()
	defer l.kvMu.RUnlock()
	v, ok := l.kv[string(key)]
	if !ok {
		return nil, ErrKeyNotFound
	}
	return append([]byte{}, v...), nil
}

// SetUint64 implements raft.StableStore; the value is 8 bytes, big-endian.
func (l *Log) SetUint64(key []byte, val uint64) error {
	return l.Set(key, be.AppendUint64(nil, val))
}

// GetUint64 implements raft.StableStore: 0 and ErrKeyNotFound for a
// missing key, which raft takes as a new node's zero.
func (l *Log) GetUint64(key []byte) (uint64, error) {
	v, err := l.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("wal: stable key %q holds %d bytes, not a uint64", key, len(v))
	}
	return be.Uint64(v), nil
}

// writeMetaLocked durably records first as the log's first index. Caller
// holds writeMu.
func (l *Log) writeMetaLocked(first uint64) error {
	b := make([]byte, 0, 20)
	b = append(b, metaMagic[:]...)
	b = be.AppendUint16(b, formatVersion)
	b = be.AppendUint16(b, 0)
	b = be.AppendUint64(b, first)
	b = be.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if err := vfs.WriteFileAtomic(l.fsys, l.dir, metaFile, b); err != nil {
		return l.fail("write "+path.Join(l.dir, metaFile), err)
	}
	l.metaFirst = first
	return nil
}

// decodeMeta returns the first index a meta file records.
func decodeMeta(b []byte) (uint64, error) {
	if len(b) != 20 || crc32.Checksum(b[:16], castagnoli) != be.Uint32(b[16:]) || [4]byte(b[:4]) != metaMagic {
		return 0, fmt.Errorf("%w: meta file of %d bytes fails its checks", ErrCorrupt, len(b))
	}
	if v := be.Uint16(b[4:]); v != formatVersion {
		return 0, fmt.Errorf("%w: meta format version %d", ErrUnsupportedVersion, v)
	}
	return be.Uint64(b[8:]), nil
}

// encodeStable serialises the stable store, keys in order so equal contents
// give equal bytes.
func encodeStable(kv map[string][]byte) []byte {
	var b []byte
	b = append(b, stableMagic[:]...)
	b = be.AppendUint16(b, formatVersion)
	b = be.AppendUint16(b, 0)
	b = be.AppendUint32(b, uint32(len(kv)))
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		b = be.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = be.AppendUint32(b, uint32(len(kv[k])))
		b = append(b, kv[k]...)
	}
	return be.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeStable parses a stable file. It is replaced atomically, so any
// damage is corruption, never a torn write.
func decodeStable(b []byte) (map[string][]byte, error) {
	bad := func(what string) error { return fmt.Errorf("%w: stable file: %s", ErrCorrupt, what) }
	if len(b) < 16 || [4]byte(b[:4]) != stableMagic {
		return nil, bad("bad header")
	}
	body, sum := b[:len(b)-4], be.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, bad("CRC mismatch")
	}
	if v := be.Uint16(body[4:]); v != formatVersion {
		return nil, fmt.Errorf("%w: stable format version %d", ErrUnsupportedVersion, v)
	}
	n := be.Uint32(body[8:])
	rest := body[12:]
	field := func() ([]byte, bool) {
		if len(rest) < 4 || uint64(be.Uint32(rest)) > uint64(len(rest)-4) {
			return nil, false
		}
		f := rest[4 : 4+be.Uint32(rest)]
		rest = rest[4+len(f):]
		return f, true
	}
	kv := make(map[string][]byte, min(n, 64))
	for range n {
		k, ok1 := field()
		v, ok2 := field()
		if !ok1 || !ok2 {
			return nil, bad("truncated entry")
		}
		kv[string(k)] = append([]byte{}, v...)
	}
	if len(rest) != 0 {
		return nil, bad("trailing bytes")
	}
	return kv, nil
}

// isNotExist reports a missing file.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
