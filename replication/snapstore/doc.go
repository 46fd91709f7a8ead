// Package snapstore is the raft snapshot store: a raft.SnapshotStore for
// hashicorp/raft v1.8 that reaches files only through the vfs seam, so tests
// can fail operations and cut the power (raft's FileSnapshotStore uses the
// os package directly), and that can record a reference instead of bytes.
//
// References exist for Varve's virtual snapshots: a partition's snapshot is
// the log's own files, pinned by hard links in the partition package, so an
// FSM's Persist calls Sink.Reference(ref, size) (the sink Create returns is a
// *Sink) and the store writes only a meta file. Store.Open then streams the
// reference through Options.Source, and reaping the snapshot releases it with
// Source.Remove. Snapshots installed from a leader arrive as bytes and are
// stored as a data file.
//
// # Directory layout
//
// One directory per raft group:
//
//	<id>/meta.json        a complete snapshot: its meta,
//	<id>/data             and its bytes (absent for a reference)
//	<id>.tmp/             a snapshot being written; removed by Open
//	<id>.del/             a snapshot being reaped; Open releases its
//	                      reference and removes it
//
// An id is "<term>-<index>-<seq>", each a 20-digit zero-padded decimal
// number, so ids sort by (term, index) as bytes. seq is the creation time in
// Unix nanoseconds, raised if needed to one past the largest seq in the
// directory, so ids are unique even for equal term and index and across a
// clock that steps back over a restart. Other names are ignored (with a
// warning at Open).
//
// # Meta format version 1
//
// meta.json is one line of JSON:
//
//	{"format":1,"crc32c":<uint32>,"snapshot":{...}}
//
// format is the meta format version; a file with another version is refused
// (ErrUnsupportedVersion), never guessed at. crc32c is the CRC-32C
// (Castagnoli) of the snapshot object's bytes exactly as they appear in the
// file (compact JSON). The snapshot object has these fields:
//
//	id                   the directory name
//	version              raft.SnapshotVersion (1 to raft.SnapshotVersionMax)
//	term, index          raft term and index of the last entry included
//	configuration        [{"suffrage":0|1|2,"id":"...","address":"..."}]
//	                     (raft.ServerSuffrage: voter, nonvoter, staging)
//	configuration_index  index of that configuration's log entry
//	size                 bytes Store.Open's reader yields
//	data_crc32c          CRC-32C of the data file (data snapshots only)
//	ref                  the Source reference (reference snapshots only)
//
// For example (wrapped here; the file is one line):
//
//	{"format":1,"crc32c":2751553127,"snapshot":{
//	  "id":"00000000000000000003-00000000000000000010-01795904065980295173",
//	  "version":1,"term":3,"index":10,
//	  "configuration":[{"suffrage":0,"id":"a","address":"10.0.0.1:9093"},
//	    {"suffrage":1,"id":"b","address":"10.0.0.2:9093"},
//	    {"suffrage":2,"id":"c","address":"10.0.0.3:9093"}],
//	  "configuration_index":5,"size":5,"data_crc32c":2591144780}}
//
// Exactly one of data_crc32c and ref is present; id, term and index must
// match the directory name. A meta that fails any of these checks makes its
// snapshot invisible: List skips it with a warning, and Open reports
// ErrCorrupt (ErrUnsupportedVersion for another format, ErrNotFound for a
// missing meta). A damaged snapshot is left in place for inspection; it is
// never reaped, since nothing says where it sorts.
//
// Raft's deprecated Peers field is not stored: it is only read for version 0
// snapshots, which the store refuses to create, as FileSnapshotStore does.
//
// # Durability
//
// Create makes "<id>.tmp/". Write appends to data through a buffer. Close
// fsyncs data, writes and fsyncs meta.json, fsyncs the snapshot directory,
// renames it to "<id>" and fsyncs the store directory: after Close returns
// nil the snapshot survives a power loss, and before the rename is durable
// a crash leaves only a ".tmp" directory, which is never listed. A failed
// step before the rename removes the snapshot; a failed fsync of the store
// directory makes the store refuse new snapshots (ErrFailed) until it is
// reopened, since an fsync is never retried.
//
// After a snapshot closes, complete snapshots beyond Options.Retain are
// reaped, oldest first: each is renamed to "<id>.del" and the store
// directory fsynced before its reference is released and its files removed,
// so a crash never leaves a listed snapshot whose reference is gone. A
// snapshot open for reading is reaped only after its reader is closed. A
// crash can still leave a Source holding data no snapshot refers to (one
// being created, for example); its owner reconciles with Store.References
// after Open.
//
// # Reading
//
// Store.Open checks the data file's size against the meta and wraps it in a
// reader that computes its CRC-32C: if the CRC does not match, the read that
// would deliver the last bytes fails with ErrCorrupt instead, so raft never
// restores a damaged snapshot. A reference's stream must have exactly the
// size given to Sink.Reference; the Source is trusted for its contents (a
// partition stream carries its own checksums).
package snapstore
