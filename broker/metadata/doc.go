// Package metadata is the cluster-metadata state machine: the state the
// metadata Raft group (__cluster_metadata, the KRaft idea) replicates to
// every broker. It holds the registered brokers, the topics (name, UUID,
// explicit configs, partitions with their replica sets and published
// leaders) and the producer-id allocator, and it places the replicas of new
// partitions. The replication layer adapts FSM to hashicorp/raft; this
// package knows nothing of Raft beyond the (index, term, bytes) of an entry.
//
// # Determinism contract
//
// Every broker applies the same commands in the same order and must end with
// the same state, byte for byte (Snapshot of equal states gives equal
// bytes). So Apply reads no clock, no randomness, no configuration and never
// depends on map iteration order: times (CreateTopic.CreatedMs) and UUIDs
// (CreateTopic.ID) are stamped into the command by the proposer, placement
// visits brokers in id order, and anything iterated over a map is a sum. A
// command that fails is decided by the state alone, so it fails everywhere.
// Every applied index is recorded in State.Index, failed commands included;
// an index at or below State.Index is a replay and is skipped.
//
// Published states are immutable (copy on write): a command replaces the
// maps it changes and the one Topic it changes, and shares the rest. So
// State is lock-free for readers, and a reader's State never moves under it.
//
// Leader epochs are the partition groups' Raft terms. A SetLeader is ignored
// unless its epoch is above the stored one and its leader is a replica, so
// the published epoch never goes down and one epoch never names two leaders.
// Producer ids start at 0 and NextProducerID only grows: a block is never
// handed out twice.
//
// # Validation
//
// Beyond the Kafka rules, Apply guards the state itself, because a command
// that is applied is applied again on every restart: topic names must pass
// ValidTopicName (they become directory names), topic ids must not be zero,
// broker ids must not be negative, a topic has at most MaxPartitions
// partitions and a producer-id block at most MaxProducerIDBlock ids. These
// are bounds of the state machine; the broker's own limits are lower.
//
// # Command encoding
//
// A command is one Raft entry: a type byte, a version byte, then the
// command's JSON body (one object, the field names in the json tags, unknown
// fields and trailing bytes rejected):
//
//	type  command               body fields
//	1     RegisterBroker        broker{id, raft_addr, rack, listeners[{name, host, port}]}
//	2     CreateTopic           name, id, partitions, replication_factor, assignment, configs, created_ms
//	3     DeleteTopic           name
//	4     CreatePartitions      name, total, assignment
//	5     AlterConfigs          name, configs
//	6     SetLeader             topic, partition, leader, epoch
//	7     AllocateProducerIDs   count
//	8     SetISR                topic, partition, leader, epoch, isr
//	9     Reassign              topic, partition, target (null cancels)
//	10    SetReplicas           topic, partition, leader, epoch, voters, learners
//	11    UnregisterBroker      id
//	12    SetLeaders            leaders[SetLeader...]                  (feature level 2)
//	13    SetFeatureLevel       level                                  (feature level 2)
//	14    FenceBroker           id, fenced                             (feature level 3)
//
// RegisterBroker's broker also carries max_feature_level (omitted as 0,
// read as 1). A broker in the state may carry fenced (omitted when false;
// set only by FenceBroker, refused in a registration). Every type is at version 1. Types 1-11 form feature level 1;
// a type introduced at a higher level is written only once the cluster's
// level (State.FeatureLevel, raised by the metadata leader when every
// registered broker runs it) has reached it, and Apply refuses it before
// then, as a build that cannot decode it would (features.go). A topic id is written as Kafka prints a UUID:
// base64url without padding (22 characters), which is also TopicID.String.
// An unknown type or version, or a body that does not decode, is
// ErrInvalidCommand from Decode and from Apply (never a panic). Type numbers
// are never reused; a new version of a command is written only once the
// cluster's feature level says every broker reads it.
//
// # Snapshot encoding
//
// Snapshot writes, and Restore reads, version 1:
//
//	"VMDS"        4 bytes, magic
//	0x01          1 byte, snapshot version
//	body          JSON: {"index", "next_producer_id", "max_epoch",
//	              "brokers": [Broker...] sorted by id,
//	              "topics": [Topic...] sorted by name,
//	              "retired": [id...] sorted (omitted when none),
//	              "feature_level" (omitted while 1)}
//	crc           4 bytes, big-endian CRC-32C (Castagnoli) of everything before
//
// Restore rejects a bad magic, an unknown version, a checksum mismatch, a
// body that does not decode strictly, and a state no sequence of commands
// could produce (duplicate names or ids, replicas on unregistered brokers,
// a leader outside its replicas, ...). On any error the state is unchanged.
package metadata
