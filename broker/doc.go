// Package broker is one Varve node: the Kafka API handlers, this node's
// replicas of the cluster's partitions (each its own Raft group, package
// replication), and its member of the metadata group (package
// broker/metadata), wired together. cmd/varve's serve command and the
// integration package's in-process clusters both run a Broker.
//
// # Where things are
//
//   - Handlers: one file per Kafka API, named by its key (00_produce.go,
//     01_fetch.go, ...); apis.go is the dispatch table with the versions
//     each supports (README's API table is generated from it). Every error
//     becomes a Kafka code in errors.go and nowhere else.
//   - The metadata group: controller.go forwards commands to its leader;
//     reconcile.go makes the local replicas follow its state (opens and
//     removes partition groups, applies configs, republishes the handlers'
//     topic view); leaders.go publishes the leaderships this node wins.
//   - Partition leadership and membership: balance.go (back to the
//     preferred leader), handoff.go (graceful shutdown hands leaderships
//     off), membership.go (reassignments move a group one raft change at
//     a time), isr.go (in-sync replicas from the transport's
//     acknowledgements), fence.go (the metadata leader fences a broker it
//     has not heard from, so Metadata stops naming it as a leader),
//     peerlost.go (a lost raft connection starts the followers' search for
//     a new leader early).
//   - Joining and rejoining: join.go (a broker outside --peers joins as a
//     metadata learner), rejoin.go (a voter that lost its state never
//     votes until it is caught up), meta.go (the data directory's
//     identity).
//   - Consumer groups: groups.go and the coordinator package; committed
//     offsets are records of the __consumer_offsets partitions
//     (offsets_topic.go), compacted through Raft (offsets_compact.go).
//   - Operating it: admin.go (/healthz, /readyz, /metrics),
//     ready_replicas.go, metrics_*.go, inspect.go (what tests and tools
//     may ask a running broker).
//
// Dependency direction: broker imports protocol, partition and
// replication; only cmd/varve and the integration tests import broker.
package broker
