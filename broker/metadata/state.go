package metadata

import (
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
)

// TopicID is a topic's UUID: random at creation (stamped by the proposer),
// never zero, and unique among the topics that exist.
type TopicID [16]byte

// topicIDEncoding is how Kafka prints a UUID (org.apache.kafka.common.Uuid
// toString): base64url without padding, 22 characters.
var topicIDEncoding = base64.RawURLEncoding.Strict()

// String is the id as Kafka shows it: base64url without padding.
func (id TopicID) String() string { return topicIDEncoding.EncodeToString(id[:]) }

// MarshalText encodes the id as String does; JSON uses it.
func (id TopicID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText accepts exactly what MarshalText produces.
func (id *TopicID) UnmarshalText(b []byte) error {
	parsed, err := ParseTopicID(string(b))
	if err != nil {
		return err
	}
	*id = parsed
	return nil
}

// ParseTopicID parses the 22-character base64url form String returns.
func ParseTopicID(s string) (TopicID, error) {
	var id TopicID
	if len(s) != 22 {
		return id, fmt.Errorf("metadata: topic id %q is not 22 base64url characters", s)
	}
	n, err := topicIDEncoding.Decode(id[:], []byte(s))
	if err != nil || n != len(id) {
		return TopicID{}, fmt.Errorf("metadata: topic id %q is not 22 base64url characters", s)
	}
	return id, nil
}

// Listener is one advertised, named listener of a broker.
type Listener struct {
	Name string `json:"name"`
	Host string `json:"host"`
	Port int32  `json:"port"`
}

// Broker is a registered broker. Registration is an upsert: a broker that
// restarts on a new address registers again under its id.
type Broker struct {
	ID        int32      `json:"id"`
	RaftAddr  string     `json:"raft_addr"`
	Rack      string     `json:"rack,omitempty"`
	Listeners []Listener `json:"listeners,omitempty"` // nil when none
	// MaxFeatureLevel is the highest feature level the broker's build
	// runs (features.go); 0 from builds before levels were registered.
	MaxFeatureLevel int32 `json:"max_feature_level,omitempty"`
	// Fenced: the metadata leader lost contact with the broker (see
	// FenceBroker). Never part of a registration; registering again
	// clears it.
	Fenced bool `json:"fenced,omitempty"`
}

func (b *Broker) equal(o *Broker) bool {
	return b.ID == o.ID && b.RaftAddr == o.RaftAddr && b.Rack == o.Rack && slices.Equal(b.Listeners, o.Listeners) && b.MaxFeatureLevel == o.MaxFeatureLevel
}

// Partition is one partition of a topic.
type Partition struct {
	Replicas    []int32 `json:"replicas"`     // replica set; Replicas[0] is the preferred leader
	Leader      int32   `json:"leader"`       // -1 when unknown
	LeaderEpoch int32   `json:"leader_epoch"` // -1 until a leader is first published; never decreases
	// ISR are the in-sync replicas as the leader last published them,
	// sorted; nil until it has (then every replica counts).
	ISR []int32 `json:"isr,omitempty"`
	// Learners are the members of Replicas that do not vote yet (a
	// reassignment's new replicas while they catch up), as the leader last
	// published them; nil when none.
	Learners []int32 `json:"learners,omitempty"`
	// Target is the replica set a reassignment moves toward (Target[0]
	// becomes the preferred leader) and Original the set it started from
	// (what a cancellation returns to, and what Kafka's adding and removing
	// lists are computed against); both nil when none is in progress.
	Target   []int32 `json:"target,omitempty"`
	Original []int32 `json:"original,omitempty"`
}

// Members are the brokers that hold or will hold a replica: Replicas and
// the reassignment's Target together, Replicas first.
func (p Partition) Members() []int32 {
	out := slices.Clone(p.Replicas)
	for _, id := range p.Target {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// InSync is the partition's ISR: the published one, or every replica
// while there is a leader that has published none, or nothing without a
// leader.
func (p Partition) InSync() []int32 {
	switch {
	case p.Leader < 0:
		return nil
	case p.ISR != nil:
		return p.ISR
	}
	return p.Replicas
}

// Topic is one topic. A published Topic is immutable: a change makes a new
// Topic value (sharing the unchanged partitions' replica slices).
type Topic struct {
	Name       string            `json:"name"`
	ID         TopicID           `json:"id"`
	Configs    map[string]string `json:"configs,omitempty"` // explicit configs only; nil when none
	Partitions []Partition       `json:"partitions"`
	CreatedMs  int64             `json:"created_ms"`
	// EpochBase is added to every Raft term of this topic's partitions to
	// make their leader epochs: the highest epoch the cluster had
	// published when the topic was created, so a topic re-created under
	// an old name never shows a client an epoch below one it saw before.
	EpochBase int32 `json:"epoch_base,omitempty"`
}

// ReplicationFactor is the length of the topic's replica sets.
func (t *Topic) ReplicationFactor() int {
	if len(t.Partitions) == 0 {
		return 0
	}
	return len(t.Partitions[0].Replicas)
}

// State is one immutable version of the cluster metadata. It is never
// modified after the FSM publishes it: readers may hold it as long as they
// like without a lock, and must not modify it (nor its maps, slices or
// topics). Unchanged maps and topics are shared between versions.
type State struct {
	Index          uint64            // Raft index of the last command applied
	Brokers        map[int32]Broker  // by broker id
	Topics         map[string]*Topic // by name
	NextProducerID int64             // first id of the next AllocateProducerIDs block
	MaxEpoch       int32             // highest leader epoch ever published
	// FeatureLevel is the cluster's feature level (features.go); 0 means
	// BaseFeatureLevel.
	FeatureLevel int32
	// Retired are broker ids unregistered (decommissioned): never
	// registered again, so a decommissioned broker still running cannot
	// come back by re-registering. Sorted.
	Retired []int32

	byID map[TopicID]string // topic id -> name, for every topic in Topics
}

func emptyState() *State {
	return &State{Brokers: map[int32]Broker{}, Topics: map[string]*Topic{}, byID: map[TopicID]string{}}
}

// ShownLeader is the leader Metadata shows for p: the published one, or
// -1 while none is known or its broker is fenced.
func (s *State) ShownLeader(p *Partition) int32 {
	if p.Leader < 0 || s.Brokers[p.Leader].Fenced {
		return -1
	}
	return p.Leader
}

// IsFenced reports whether broker id is registered and fenced.
func (s *State) IsFenced(id int32) bool { return s.Brokers[id].Fenced }

// TopicByID returns the topic with that id, or nil.
func (s *State) TopicByID(id TopicID) *Topic {
	name, ok := s.byID[id]
	if !ok {
		return nil
	}
	return s.Topics[name]
}

// BrokerIDs returns the registered broker ids, sorted.
func (s *State) BrokerIDs() []int32 {
	return slices.Sorted(maps.Keys(s.Brokers))
}

// TopicNames returns the topic names, sorted.
func (s *State) TopicNames() []string {
	return slices.Sorted(maps.Keys(s.Topics))
}

// ValidTopicName applies Kafka's rule: 1-249 characters of [a-zA-Z0-9._-],
// and not "." or "..". Names become directory names, so the state machine
// checks it too, as a last guard against a name escaping a data directory.
func ValidTopicName(name string) bool {
	if name == "" || len(name) > 249 || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}
