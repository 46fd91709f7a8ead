package broker

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/varvelog/varve/broker/metadata"
	"github.com/varvelog/varve/broker/records"
	"github.com/varvelog/varve/partition"
	"github.com/varvelog/varve/replication"
	"github.com/varvelog/varve/replication/wal"
)

// errorCode is the one place where Go errors become Kafka error codes.
// Every handler answers through it, so a new error gets its code here and
// nowhere else. UNKNOWN_SERVER_ERROR is what is left: a bug report, logged
// by the caller.
func errorCode(err error) int16 {
	if err == nil {
		return 0
	}
	// A group write that lost its partition's leadership wraps the
	// NotLeaderError in ErrNotCoordinator: group clients re-find the
	// coordinator on NOT_COORDINATOR, and NOT_LEADER_FOR_PARTITION is no
	// group API's error (franz-go gives up the join on it).
	if errors.Is(err, ErrNotCoordinator) {
		return kerr.NotCoordinator.Code
	}
	var nl *replication.NotLeaderError
	if errors.As(err, &nl) {
		return kerr.NotLeaderForPartition.Code
	}
	// The coordinator package answers with Kafka's own errors.
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Code
	}
	for _, m := range errorCodes {
		if errors.Is(err, m.err) {
			return m.code.Code
		}
	}
	return kerr.UnknownServerError.Code
}

var errorCodes = []struct {
	err  error
	code *kerr.Error
}{
	// Record checks, before the partition errors they also match.
	{records.ErrInvalidTimestamp, kerr.InvalidTimestamp},
	{records.ErrUnsupportedCompression, kerr.UnsupportedCompressionType},
	// The partition log.
	{partition.ErrCorruptBatch, kerr.CorruptMessage},
	{partition.ErrInvalidRecord, kerr.InvalidRecord},
	{partition.ErrMessageTooLarge, kerr.MessageTooLarge},
	{partition.ErrOutOfOrderSequence, kerr.OutOfOrderSequenceNumber},
	{partition.ErrInvalidProducerEpoch, kerr.InvalidProducerEpoch},
	{partition.ErrUnknownProducerID, kerr.UnknownProducerID},
	{partition.ErrOffsetOutOfRange, kerr.OffsetOutOfRange},
	{partition.ErrStorage, kerr.KafkaStorageError},
	{partition.ErrClosed, kerr.NotLeaderForPartition},
	// Replication: a stopped replica failed its storage or is closing.
	{wal.ErrStorage, kerr.KafkaStorageError},
	{replication.ErrStopped, kerr.NotLeaderForPartition},
	// The metadata group, by way of its leader.
	{metadata.ErrTopicExists, kerr.TopicAlreadyExists},
	{metadata.ErrUnknownTopic, kerr.UnknownTopicOrPartition},
	{metadata.ErrInvalidReplicationFactor, kerr.InvalidReplicationFactor},
	{metadata.ErrInvalidPartitions, kerr.InvalidPartitions},
	{metadata.ErrInvalidAssignment, kerr.InvalidReplicaAssignment},
	{metadata.ErrInvalidCommand, kerr.InvalidRequest},
	{metadata.ErrUnknownPartition, kerr.UnknownTopicOrPartition},
	{metadata.ErrNoReassignment, kerr.NoReassignmentInProgress},
	{metadata.ErrBrokerInUse, kerr.InvalidRequest},
	{metadata.ErrBrokerRetired, kerr.InvalidRequest},
	{metadata.ErrFeatureLevel, kerr.FeatureUpdateFailed},
	{metadata.ErrUnknownBroker, kerr.BrokerIDNotRegistered}, // after ErrInvalidAssignment, which wraps it
	{ErrNoController, kerr.RequestTimedOut},
	// Topics and configs.
	{ErrTopicExists, kerr.TopicAlreadyExists},
	{ErrUnknownTopic, kerr.UnknownTopicOrPartition},
	{ErrUnknownTopicID, kerr.UnknownTopicID},
	{ErrInvalidTopic, kerr.InvalidTopicException},
	{ErrInvalidPartitions, kerr.InvalidPartitions},
	{ErrInvalidReplication, kerr.InvalidReplicationFactor},
	{ErrInvalidConfig, kerr.InvalidConfig},
	{ErrPolicyViolation, kerr.PolicyViolation},
	{ErrInvalidRequest, kerr.InvalidRequest},
	{ErrClusterShuttingDown, kerr.NotLeaderForPartition},
	// Leader elections (ElectLeaders).
	{ErrElectionNotNeeded, kerr.ElectionNotNeeded},
	{ErrPreferredLeaderNotAvailable, kerr.PreferredLeaderNotAvailable},
	{ErrUncleanElection, kerr.EligibleLeadersNotAvailable},
	{ErrLeaderNotAvailable, kerr.LeaderNotAvailable},
	{ErrCoordinatorNotAvailable, kerr.CoordinatorNotAvailable},
	{ErrNotCoordinator, kerr.NotCoordinator},
	{ErrCoordinatorLoading, kerr.CoordinatorLoadInProgress},
	// Waiting.
	{context.DeadlineExceeded, kerr.RequestTimedOut},
	{context.Canceled, kerr.RequestTimedOut},
}

// Errors of the group coordinator.
var (
	// ErrCoordinatorNotAvailable: the group's offsets partition has no
	// leader yet, or __consumer_offsets is being created
	// (COORDINATOR_NOT_AVAILABLE, retriable).
	ErrCoordinatorNotAvailable = errors.New("broker: coordinator not available")
	// ErrNotCoordinator: this broker does not lead the group's offsets
	// partition (NOT_COORDINATOR: the client looks the coordinator up again).
	ErrNotCoordinator = errors.New("broker: not the coordinator")
	// ErrCoordinatorLoading: this broker just became the coordinator and is
	// still loading the group (COORDINATOR_LOAD_IN_PROGRESS, retriable).
	ErrCoordinatorLoading = errors.New("broker: coordinator loading")
)

// ErrInvalidRequest is a request that breaks a rule of its API
// (INVALID_REQUEST).
var ErrInvalidRequest = errors.New("broker: invalid request")

// ErrNoController: no metadata leader could be reached in time
// (REQUEST_TIMED_OUT, retriable).
var ErrNoController = errors.New("broker: no metadata leader reachable")

// ErrUnknownTopicID is a topic id the broker does not know
// (UNKNOWN_TOPIC_ID).
var ErrUnknownTopicID = errors.New("broker: unknown topic id")

// Errors of leader elections (ElectLeaders), mapped above.
var (
	// ErrElectionNotNeeded: the partition is already led by the replica
	// the election would pick (ELECTION_NOT_NEEDED).
	ErrElectionNotNeeded = errors.New("broker: election not needed")
	// ErrPreferredLeaderNotAvailable: the preferred replica is not caught
	// up (or not reachable), so leadership stays where it is
	// (PREFERRED_LEADER_NOT_AVAILABLE, retriable).
	ErrPreferredLeaderNotAvailable = errors.New("broker: preferred leader not available")
	// ErrUncleanElection answers an UNCLEAN election of a partition with
	// no leader. Raft never elects a replica that lacks committed entries,
	// so no replica is eligible beyond those Raft itself will elect once a
	// majority is up: ELIGIBLE_LEADERS_NOT_AVAILABLE is Kafka's answer
	// when an unclean election finds no eligible replica, and it is
	// retriable, which is right (the partition gets a leader when a
	// majority returns).
	ErrUncleanElection = errors.New("broker: unclean leader election is not supported (Raft elects only an up-to-date replica)")
	// ErrLeaderNotAvailable: the partition has no leader right now (an
	// election is under way) (LEADER_NOT_AVAILABLE, retriable).
	ErrLeaderNotAvailable = errors.New("broker: partition has no leader")
)

// errorFields is a response's error code and message for err (nil, nil for
// success): the message tells a person what the code alone cannot.
func errorFields(err error) (int16, *string) {
	if err == nil {
		return 0, nil
	}
	msg := err.Error()
	return errorCode(err), &msg
}

// requestContext bounds a request's waiting by its TimeoutMillis (30 s when
// it gives none).
func requestContext(ctx context.Context, timeoutMs int32) (context.Context, context.CancelFunc) {
	d := 30 * time.Second
	if timeoutMs > 0 {
		d = time.Duration(timeoutMs) * time.Millisecond
	}
	return context.WithTimeout(ctx, d)
}

// leaderHint is the leader and epoch a NOT_LEADER_OR_FOLLOWER answer can
// name (Produce v10+, Fetch v12+ carry them), so the client goes straight
// there instead of refreshing its metadata first.
func leaderHint(err error) (leader, epoch int32, ok bool) {
	var nl *replication.NotLeaderError
	if errors.As(err, &nl) && nl.Leader >= 0 && nl.Epoch >= 0 {
		return nl.Leader, nl.Epoch, true
	}
	return -1, -1, false
}
