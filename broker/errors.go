package broker

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/varvelog/varve/broker/records"
	"github.com/varvelog/varve/partition"
)

// errorCode is the one place where Go errors become Kafka error codes.
// Every handler answers through it, so a new error gets its code here and
// nowhere else. UNKNOWN_SERVER_ERROR is what is left: a bug report, logged
// by the caller.
func errorCode(err error) int16 {
	if err == nil {
		return 0
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
	// Waiting.
	{context.DeadlineExceeded, kerr.RequestTimedOut},
	{context.Canceled, kerr.RequestTimedOut},
}

// ErrInvalidRequest is a request that breaks a rule of its API
// (INVALID_REQUEST).
var ErrInvalidRequest = errors.New("broker: invalid request")

// ErrUnknownTopicID is a topic id the broker does not know
// (UNKNOWN_TOPIC_ID).
var ErrUnknownTopicID = errors.New("broker: unknown topic id")

// errorFields is a response's error code and message for err (nil, nil for
// success): the message tells a person what the code alone cannot.
func errorFields(err error) (int16, *string) {
	if err == nil {
		return 0, nil
	}
	msg := err.Error()
	return errorCode(err), &msg
}
