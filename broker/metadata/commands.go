package metadata

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Command type numbers: the first byte of an encoded command. Never reuse or
// renumber one; a new command takes the next number.
const (
	typeRegisterBroker      byte = 1
	typeCreateTopic         byte = 2
	typeDeleteTopic         byte = 3
	typeCreatePartitions    byte = 4
	typeAlterConfigs        byte = 5
	typeSetLeader           byte = 6
	typeAllocateProducerIDs byte = 7
	typeSetISR              byte = 8
	typeReassign            byte = 9
	typeSetReplicas         byte = 10
	typeUnregisterBroker    byte = 11
	typeSetLeaders          byte = 12
	typeSetFeatureLevel     byte = 13
	typeFenceBroker         byte = 14
)

// commandVersion is the second byte of every command this build writes and
// the only one it reads. A new version of a command is gated by a cluster
// feature level so that no broker is sent a version it cannot apply.
const commandVersion byte = 1

// Limits that keep one command from exhausting every broker at once (a
// command that is applied is re-applied on every restart). They are bounds
// of the state machine, not policy: the broker applies its own, lower ones.
const (
	MaxPartitions      = 1 << 16 // partitions of one topic
	MaxProducerIDBlock = 1 << 20 // ids in one AllocateProducerIDs
)

// RegisterBroker adds a broker, or replaces the registration of its id.
type RegisterBroker struct {
	Broker Broker `json:"broker"`
}

// UnregisterBroker removes a broker's registration: the last step of
// decommissioning it, refused while any partition still has (or is moving)
// a replica on it.
type UnregisterBroker struct {
	ID int32 `json:"id"`
}

// FenceBroker marks a registered broker as out of contact (Fenced) or back
// in contact. The metadata leader proposes it from what it hears of each
// broker: while a broker is fenced, Metadata names no leader for the
// partitions it was last published to lead (LEADER_NOT_AVAILABLE), as
// Kafka's controller does for a broker whose session expired, so clients
// stop sending to a dead broker when no other replica could take over.
// The partitions' own Raft groups decide leadership as before; a leader
// that publishes itself with a higher epoch is shown again at once if its
// broker is not fenced. Feature level 3.
type FenceBroker struct {
	ID     int32 `json:"id"`
	Fenced bool  `json:"fenced"`
}

// CreateTopic creates a topic. ID and CreatedMs are stamped by the proposer.
// With an empty Assignment the replicas are placed automatically; with one,
// it names the replicas of every partition (len(Assignment) == Partitions)
// and ReplicationFactor is either unset (0 or negative: Kafka sends -1) or
// the length of each list.
type CreateTopic struct {
	Name              string            `json:"name"`
	ID                TopicID           `json:"id"`
	Partitions        int32             `json:"partitions"`
	ReplicationFactor int16             `json:"replication_factor"`
	Assignment        [][]int32         `json:"assignment,omitempty"`
	Configs           map[string]string `json:"configs,omitempty"`
	CreatedMs         int64             `json:"created_ms"`
}

// DeleteTopic deletes a topic by name.
type DeleteTopic struct {
	Name string `json:"name"`
}

// CreatePartitions grows a topic to Total partitions. Assignment, when not
// empty, names the replicas of the new partitions only.
type CreatePartitions struct {
	Name       string    `json:"name"`
	Total      int32     `json:"total"`
	Assignment [][]int32 `json:"assignment,omitempty"`
}

// AlterConfigs replaces the topic's explicit configs (nil or empty: none).
type AlterConfigs struct {
	Name    string            `json:"name"`
	Configs map[string]string `json:"configs,omitempty"`
}

// SetLeader publishes the leader of one partition, proposed by that leader
// once it is ready to serve. Epoch is the partition group's Raft term.
type SetLeader struct {
	Topic     TopicID `json:"topic"`
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Epoch     int32   `json:"epoch"`
}

// SetISR publishes the in-sync replicas of one partition, proposed by its
// leader at Epoch: ignored unless that leader and epoch are still the
// published ones (a deposed leader cannot shrink the ISR).
type SetISR struct {
	Topic     TopicID `json:"topic"`
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Epoch     int32   `json:"epoch"`
	ISR       []int32 `json:"isr"`
}

// AllocateProducerIDs reserves a block of Count producer ids.
type AllocateProducerIDs struct {
	Count int64 `json:"count"`
}

// Encode encodes one of the command types above (value or pointer) as
// type byte, version byte, JSON body.
func Encode(cmd any) ([]byte, error) {
	var t byte
	switch c := cmd.(type) {
	case RegisterBroker, *RegisterBroker:
		t = typeRegisterBroker
	case CreateTopic, *CreateTopic:
		t = typeCreateTopic
	case DeleteTopic, *DeleteTopic:
		t = typeDeleteTopic
	case CreatePartitions, *CreatePartitions:
		t = typeCreatePartitions
	case AlterConfigs, *AlterConfigs:
		t = typeAlterConfigs
	case SetLeader, *SetLeader:
		t = typeSetLeader
	case AllocateProducerIDs, *AllocateProducerIDs:
		t = typeAllocateProducerIDs
	case SetISR, *SetISR:
		t = typeSetISR
	case Reassign, *Reassign:
		t = typeReassign
	case SetReplicas, *SetReplicas:
		t = typeSetReplicas
	case UnregisterBroker, *UnregisterBroker:
		t = typeUnregisterBroker
	case SetLeaders, *SetLeaders:
		t = typeSetLeaders
	case SetFeatureLevel, *SetFeatureLevel:
		t = typeSetFeatureLevel
	case FenceBroker, *FenceBroker:
		t = typeFenceBroker
	default:
		return nil, fmt.Errorf("%w: cannot encode %T", ErrInvalidCommand, c)
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCommand, err)
	}
	if string(body) == "null" {
		return nil, fmt.Errorf("%w: cannot encode a nil %T", ErrInvalidCommand, cmd)
	}
	return append([]byte{t, commandVersion}, body...), nil
}

// Decode decodes what Encode produced and returns the command as a value
// (RegisterBroker, CreateTopic, ...). Anything else is an error wrapping
// ErrInvalidCommand: an unknown type or version, a body that is not one
// JSON object of the command's fields, or trailing bytes.
func Decode(b []byte) (any, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header", ErrInvalidCommand, len(b))
	}
	if b[1] != commandVersion {
		return nil, fmt.Errorf("%w: type %d version %d, this build reads version %d", ErrInvalidCommand, b[0], b[1], commandVersion)
	}
	body := b[2:]
	switch b[0] {
	case typeRegisterBroker:
		return decodeBody[RegisterBroker](b[0], body)
	case typeCreateTopic:
		return decodeBody[CreateTopic](b[0], body)
	case typeDeleteTopic:
		return decodeBody[DeleteTopic](b[0], body)
	case typeCreatePartitions:
		return decodeBody[CreatePartitions](b[0], body)
	case typeAlterConfigs:
		return decodeBody[AlterConfigs](b[0], body)
	case typeSetLeader:
		return decodeBody[SetLeader](b[0], body)
	case typeAllocateProducerIDs:
		return decodeBody[AllocateProducerIDs](b[0], body)
	case typeSetISR:
		return decodeBody[SetISR](b[0], body)
	case typeReassign:
		return decodeBody[Reassign](b[0], body)
	case typeSetReplicas:
		return decodeBody[SetReplicas](b[0], body)
	case typeUnregisterBroker:
		return decodeBody[UnregisterBroker](b[0], body)
	case typeSetLeaders:
		return decodeBody[SetLeaders](b[0], body)
	case typeSetFeatureLevel:
		return decodeBody[SetFeatureLevel](b[0], body)
	case typeFenceBroker:
		return decodeBody[FenceBroker](b[0], body)
	}
	return nil, fmt.Errorf("%w: unknown type %d", ErrInvalidCommand, b[0])
}

func decodeBody[T any](t byte, body []byte) (any, error) {
	var v T
	if err := decodeStrict(body, &v); err != nil {
		return nil, fmt.Errorf("%w: type %d: %w", ErrInvalidCommand, t, err)
	}
	return v, nil
}

// decodeStrict decodes exactly one JSON object with known fields only.
func decodeStrict(b []byte, v any) error {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 || b[0] != '{' {
		return errors.New("body is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}
