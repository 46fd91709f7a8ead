package metadata

import "errors"

// Errors carried in Result.Err, wrapped with detail. The broker maps them to
// Kafka codes in one place (broker/errors.go).
var (
	// ErrTopicExists: a topic with that name, or with that topic id, exists.
	ErrTopicExists = errors.New("metadata: topic already exists")
	// ErrUnknownTopic: no topic of that name.
	ErrUnknownTopic = errors.New("metadata: unknown topic")
	// ErrInvalidTopicName: not Kafka's [a-zA-Z0-9._-]{1,249}, or "." or "..".
	ErrInvalidTopicName = errors.New("metadata: invalid topic name")
	// ErrInvalidReplicationFactor: below 1, or above the registered brokers.
	ErrInvalidReplicationFactor = errors.New("metadata: invalid replication factor")
	// ErrInvalidPartitions: a partition count below 1, above MaxPartitions,
	// or (CreatePartitions) not above the current count.
	ErrInvalidPartitions = errors.New("metadata: invalid number of partitions")
	// ErrInvalidAssignment: an explicit replica assignment that is malformed.
	ErrInvalidAssignment = errors.New("metadata: invalid replica assignment")
	// ErrUnknownBroker: an assignment names a broker that never registered.
	// It is always joined with ErrInvalidAssignment, so errors.Is matches both.
	ErrUnknownBroker = errors.New("metadata: unknown broker")
	// ErrInvalidCommand: a command that does not decode (unknown type or
	// version, bad body) or whose fields are out of range.
	ErrInvalidCommand = errors.New("metadata: invalid command")
	// ErrUnknownPartition: the topic exists but has no such partition.
	ErrUnknownPartition = errors.New("metadata: unknown partition")
	// ErrNoReassignment: a cancellation for a partition that is not being
	// reassigned.
	ErrNoReassignment = errors.New("metadata: no reassignment in progress")
	// ErrBrokerInUse: a broker to unregister still holds replicas.
	ErrBrokerInUse = errors.New("metadata: broker still holds replicas")
	// ErrBrokerRetired: a registration under an id that was unregistered.
	ErrBrokerRetired = errors.New("metadata: broker id was unregistered")
	// ErrFeatureLevel: a command or a feature level the cluster's feature
	// level does not allow, or a registration of a build older than it.
	ErrFeatureLevel = errors.New("metadata: feature level")
	// ErrInvalidSnapshot: Restore was given bytes it cannot trust.
	ErrInvalidSnapshot = errors.New("metadata: invalid snapshot")
)
