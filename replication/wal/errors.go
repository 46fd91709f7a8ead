package wal

import (
	"errors"
	"fmt"
)

// Errors the WAL returns. GetLog of a missing index returns raft.ErrLogNotFound
// itself, unwrapped: raft compares it with ==.
var (
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("wal: closed")
	// ErrStorage: a write, fsync or other file operation failed; the log
	// refuses every later write. Returned wrapped in *StorageError.
	ErrStorage = errors.New("wal: storage failure")
	// ErrNotContiguous: StoreLogs was given entries that do not continue
	// the log (a gap, a repeat, or index 0). Nothing was written.
	ErrNotContiguous = errors.New("wal: log entries not contiguous")
	// ErrRange: DeleteRange was asked to delete neither a prefix nor a
	// suffix; raft never does, and a hole cannot be represented.
	ErrRange = errors.New("wal: DeleteRange must remove a prefix or a suffix")
	// ErrTooLarge: one entry would encode to more than MaxRecordBytes.
	ErrTooLarge = errors.New("wal: log entry too large")
	// ErrCorrupt: bytes on disk that a crash cannot explain (a bad record
	// in a sealed segment, a bad stable file) or that fail their CRC on
	// read. Open refuses rather than drop fsynced entries or a vote.
	ErrCorrupt = errors.New("wal: corrupt data")
	// ErrUnsupportedVersion: a file written in a format version this
	// build does not read.
	ErrUnsupportedVersion = errors.New("wal: unsupported format version")
	// ErrKeyNotFound: the StableStore has no value for the key. Its text
	// is exactly "not found", without the package prefix the house style
	// asks for, because hashicorp/raft recognises a missing key (a new
	// node's CurrentTerm, LastVoteTerm, LastVoteCand) by comparing
	// err.Error() with "not found"; raft-boltdb and raft's InmemStore use
	// the same text.
	ErrKeyNotFound = errors.New("not found")
)

// StorageError is the sticky failure of a log: the operation that failed and
// the underlying error. Once a log has one, every later write returns it.
type StorageError struct {
	Op  string
	Err error
}

func (e *StorageError) Error() string {
	return fmt.Sprintf("wal: storage failure in %s: %v", e.Op, e.Err)
}

// Is makes errors.Is(err, ErrStorage) true.
func (e *StorageError) Is(target error) bool { return target == ErrStorage }

// Unwrap exposes the underlying filesystem error.
func (e *StorageError) Unwrap() error { return e.Err }
