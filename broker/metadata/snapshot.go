package metadata

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"slices"
)

// Snapshot encoding (see doc.go): magic, version, JSON body, CRC-32C.
const (
	snapshotMagic   = "VMDS"
	snapshotVersion = 1
	snapshotHeader  = len(snapshotMagic) + 1
	snapshotTrailer = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapshotV1 is the body of a version 1 snapshot. Lists, sorted, rather than
// maps, so the bytes are one function of the state.
type snapshotV1 struct {
	Index          uint64   `json:"index"`
	NextProducerID int64    `json:"next_producer_id"`
	MaxEpoch       int32    `json:"max_epoch,omitempty"`
	Brokers        []Broker `json:"brokers"` // sorted by id
	Topics         []*Topic `json:"topics"`  // sorted by name
	Retired        []int32  `json:"retired,omitempty"`
	FeatureLevel   int32    `json:"feature_level,omitempty"`
}

// Snapshot encodes the whole current state. Equal states give equal bytes.
// The state is immutable, so any goroutine may call it; Raft calls it from
// the apply goroutine.
func (f *FSM) Snapshot() ([]byte, error) {
	return encodeSnapshot(f.State())
}

func encodeSnapshot(s *State) ([]byte, error) {
	body := snapshotV1{Index: s.Index, NextProducerID: s.NextProducerID, MaxEpoch: s.MaxEpoch, Retired: s.Retired, FeatureLevel: s.FeatureLevel,
		Brokers: make([]Broker, 0, len(s.Brokers)), Topics: make([]*Topic, 0, len(s.Topics))}
	for _, id := range s.BrokerIDs() {
		body.Brokers = append(body.Brokers, s.Brokers[id])
	}
	for _, name := range s.TopicNames() {
		body.Topics = append(body.Topics, s.Topics[name])
	}
	js, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("metadata: encode snapshot: %w", err)
	}
	b := make([]byte, 0, snapshotHeader+len(js)+snapshotTrailer)
	b = append(b, snapshotMagic...)
	b = append(b, snapshotVersion)
	b = append(b, js...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// Restore replaces the state with a snapshot's and wakes Changed and Wait
// watchers. Bytes that are not a valid snapshot of a known version, or that
// describe an inconsistent state, are an error wrapping ErrInvalidSnapshot,
// and the state is left unchanged.
func (f *FSM) Restore(data []byte) error {
	s, err := decodeSnapshot(data)
	if err != nil {
		return err
	}
	f.publish(s, true)
	return nil
}

func decodeSnapshot(b []byte) (*State, error) {
	if len(b) < snapshotHeader+snapshotTrailer || string(b[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: no snapshot header", ErrInvalidSnapshot)
	}
	if v := b[len(snapshotMagic)]; v != snapshotVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", ErrInvalidSnapshot, v, snapshotVersion)
	}
	end := len(b) - snapshotTrailer
	if want, got := binary.BigEndian.Uint32(b[end:]), crc32.Checksum(b[:end], castagnoli); want != got {
		return nil, fmt.Errorf("%w: checksum %08x, computed %08x", ErrInvalidSnapshot, want, got)
	}
	var body snapshotV1
	if err := decodeStrict(b[snapshotHeader:end], &body); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSnapshot, err)
	}
	s, err := body.state()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSnapshot, err)
	}
	return s, nil
}

// state rebuilds a State from a decoded body, checking every invariant the
// commands maintain, so a restored state is one Apply could have produced.
func (body *snapshotV1) state() (*State, error) {
	s := emptyState()
	s.Index, s.NextProducerID, s.MaxEpoch = body.Index, body.NextProducerID, body.MaxEpoch
	if s.NextProducerID < 0 {
		return nil, fmt.Errorf("next producer id %d is negative", s.NextProducerID)
	}
	if !slices.IsSorted(body.Retired) || slices.ContainsFunc(body.Retired, func(id int32) bool { return id < 0 }) {
		return nil, fmt.Errorf("retired brokers %v", body.Retired)
	}
	s.Retired = body.Retired
	s.FeatureLevel = body.FeatureLevel
	for _, b := range body.Brokers {
		if slices.Contains(s.Retired, b.ID) {
			return nil, fmt.Errorf("broker %d is both registered and retired", b.ID)
		}
		if b.ID < 0 {
			return nil, fmt.Errorf("broker id %d is negative", b.ID)
		}
		if _, dup := s.Brokers[b.ID]; dup {
			return nil, fmt.Errorf("broker %d listed twice", b.ID)
		}
		if len(b.Listeners) == 0 {
			b.Listeners = nil
		}
		if b.Fenced && s.FeatureLevelOrBase() < commandLevel(typeFenceBroker) {
			return nil, fmt.Errorf("broker %d is fenced at feature level %d", b.ID, s.FeatureLevelOrBase())
		}
		s.Brokers[b.ID] = b
	}
	if err := checkLevels(s); err != nil {
		return nil, err
	}
	for _, t := range body.Topics {
		if err := checkTopic(s, t); err != nil {
			return nil, err
		}
		if len(t.Configs) == 0 {
			t.Configs = nil
		}
		s.Topics[t.Name] = t
		s.byID[t.ID] = t.Name
	}
	return s, nil
}

// checkTopic checks a restored topic against s (its brokers and the topics
// restored before it).
func checkTopic(s *State, t *Topic) error {
	if t == nil {
		return fmt.Errorf("null topic")
	}
	if !ValidTopicName(t.Name) {
		return fmt.Errorf("topic name %q is invalid", t.Name)
	}
	if _, dup := s.Topics[t.Name]; dup {
		return fmt.Errorf("topic %q listed twice", t.Name)
	}
	if t.ID == (TopicID{}) {
		return fmt.Errorf("topic %q has the zero id", t.Name)
	}
	if other, dup := s.byID[t.ID]; dup {
		return fmt.Errorf("topics %q and %q share id %s", other, t.Name, t.ID)
	}
	if len(t.Partitions) == 0 || len(t.Partitions) > MaxPartitions {
		return fmt.Errorf("topic %q has %d partitions", t.Name, len(t.Partitions))
	}
	for i, p := range t.Partitions {
		// Replica counts differ between partitions while one is reassigned.
		if err := checkAssignment(s, [][]int32{p.Replicas}, len(p.Replicas), i); err != nil {
			return fmt.Errorf("topic %q: %w", t.Name, err)
		}
		if p.Target != nil || p.Original != nil {
			if p.Target == nil || p.Original == nil {
				return fmt.Errorf("topic %q partition %d: target %v original %v", t.Name, i, p.Target, p.Original)
			}
			for _, list := range [][]int32{p.Target, p.Original} {
				if err := checkAssignment(s, [][]int32{list}, len(list), i); err != nil {
					return fmt.Errorf("topic %q reassignment: %w", t.Name, err)
				}
			}
		}
		if slices.ContainsFunc(p.Learners, func(id int32) bool { return !slices.Contains(p.Replicas, id) }) {
			return fmt.Errorf("topic %q partition %d: learners %v not all replicas %v", t.Name, i, p.Learners, p.Replicas)
		}
		if p.Leader != -1 && !slices.Contains(p.Members(), p.Leader) || p.LeaderEpoch < -1 || (p.Leader == -1) != (p.LeaderEpoch == -1) {
			return fmt.Errorf("topic %q partition %d: leader %d epoch %d", t.Name, i, p.Leader, p.LeaderEpoch)
		}
		if p.ISR != nil && (!slices.IsSorted(p.ISR) || !slices.Contains(p.ISR, p.Leader) || slices.ContainsFunc(p.ISR, func(id int32) bool { return !slices.Contains(p.Replicas, id) })) {
			return fmt.Errorf("topic %q partition %d: isr %v", t.Name, i, p.ISR)
		}
	}
	return nil
}
