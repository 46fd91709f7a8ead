package snapstore

import "errors"

// Errors the store returns, wrapped with detail; match them with errors.Is.
var (
	// ErrNotFound: no complete snapshot has that id (it never existed, was
	// reaped, or the id is not one this store makes).
	ErrNotFound = errors.New("snapstore: snapshot not found")
	// ErrCorrupt: a meta file fails its CRC or does not parse, or a
	// snapshot's data does not match the size or CRC its meta records.
	// Raft must not install such a snapshot, so reads fail rather than
	// hand it partial or damaged bytes.
	ErrCorrupt = errors.New("snapstore: corrupt snapshot")
	// ErrUnsupportedVersion: Create was asked for a raft snapshot version
	// the store cannot write, or a meta file is in a format version this
	// build does not read.
	ErrUnsupportedVersion = errors.New("snapstore: unsupported version")
	// ErrNoSource: Reference was called on a store opened without a
	// Source, which could never open the reference again.
	ErrNoSource = errors.New("snapstore: references need a Source")
	// ErrMixed: a sink got both Write and Reference. A snapshot's contents
	// are either bytes in the store or a reference, never both.
	ErrMixed = errors.New("snapstore: a snapshot is either written or referenced")
	// ErrSinkDone: the sink was already closed or cancelled.
	ErrSinkDone = errors.New("snapstore: sink already closed or cancelled")
	// ErrFailed: an fsync of the store directory failed earlier. The state
	// of its entries is unknown and an fsync is never retried, so the store
	// refuses new snapshots until it is reopened; List and Open keep working.
	ErrFailed = errors.New("snapstore: store failed")
)
