package metadata

import (
	"fmt"
	"maps"
	"math"
	"slices"
)

// clone returns a shallow copy of s: the maps and topics are shared, so the
// caller replaces (never modifies) any map it changes.
func (s *State) clone() *State {
	c := *s
	return &c
}

// applyCommand decodes and applies one command to s. It returns the new
// state, or nil when nothing changed (the command failed or had no effect);
// s itself is never modified.
func applyCommand(s *State, b []byte, maxLevel int32) (*State, Result) {
	if len(b) > 0 && commandLevel(b[0]) > maxLevel {
		// What a build of maxLevel does: it does not know the type.
		return nil, Result{Err: fmt.Errorf("%w: unknown type %d", ErrInvalidCommand, b[0]), ProducerID: -1}
	}
	cmd, err := Decode(b)
	if err != nil {
		return nil, Result{Err: err, ProducerID: -1}
	}
	// A command above the cluster's level fails on every broker alike: here,
	// and on a build that cannot decode it. SetFeatureLevel, which raises
	// the level, checks instead that every registered broker runs it.
	if lvl := commandLevel(b[0]); lvl > s.FeatureLevelOrBase() && b[0] != typeSetFeatureLevel {
		return nil, Result{Err: fmt.Errorf("%w: command type %d needs level %d, the cluster is at %d", ErrFeatureLevel, b[0], lvl, s.FeatureLevelOrBase()), ProducerID: -1}
	}
	var next *State
	var res Result
	switch c := cmd.(type) {
	case RegisterBroker:
		next, err = applyRegisterBroker(s, c)
	case CreateTopic:
		next, err = applyCreateTopic(s, c)
	case DeleteTopic:
		next, err = applyDeleteTopic(s, c)
	case CreatePartitions:
		next, err = applyCreatePartitions(s, c)
	case AlterConfigs:
		next, err = applyAlterConfigs(s, c)
	case SetLeader:
		next = applySetLeader(s, c)
	case AllocateProducerIDs:
		next, res.ProducerID, err = applyAllocateProducerIDs(s, c)
	case SetISR:
		next = applySetISR(s, c)
	case Reassign:
		next, err = applyReassign(s, c)
	case SetReplicas:
		next = applySetReplicas(s, c)
	case UnregisterBroker:
		next, err = applyUnregisterBroker(s, c)
	case SetLeaders:
		next, err = applySetLeaders(s, c)
	case SetFeatureLevel:
		next, err = applySetFeatureLevel(s, c)
	case FenceBroker:
		next, err = applyFenceBroker(s, c)
	default:
		err = fmt.Errorf("%w: no apply for %T", ErrInvalidCommand, cmd)
	}
	if err != nil {
		return nil, Result{Err: err, ProducerID: -1}
	}
	res.Changed = next != nil
	return next, res
}

func applyRegisterBroker(s *State, c RegisterBroker) (*State, error) {
	b := c.Broker
	if b.ID < 0 {
		return nil, fmt.Errorf("%w: broker id %d is negative", ErrInvalidCommand, b.ID)
	}
	for _, l := range b.Listeners {
		if l.Port < 0 || l.Port > math.MaxUint16 {
			return nil, fmt.Errorf("%w: broker %d listener %q port %d", ErrInvalidCommand, b.ID, l.Name, l.Port)
		}
	}
	if len(b.Listeners) == 0 {
		b.Listeners = nil
	}
	if b.Fenced {
		// Only FenceBroker fences; a registration that says so is not one
		// any broker sends (and a build before level 3 cannot decode it).
		return nil, fmt.Errorf("%w: broker %d registers as fenced", ErrInvalidCommand, b.ID)
	}
	if slices.Contains(s.Retired, b.ID) {
		return nil, fmt.Errorf("%w: %d", ErrBrokerRetired, b.ID)
	}
	if b.MaxFeatureLevel < 0 {
		return nil, fmt.Errorf("%w: broker %d feature level %d", ErrInvalidCommand, b.ID, b.MaxFeatureLevel)
	}
	if b.MaxLevel() < s.FeatureLevelOrBase() {
		return nil, fmt.Errorf("%w: broker %d runs feature level %d, the cluster is at %d: upgrade it", ErrFeatureLevel, b.ID, b.MaxLevel(), s.FeatureLevelOrBase())
	}
	if old, ok := s.Brokers[b.ID]; ok && old.equal(&b) {
		return nil, nil
	}
	next := s.clone()
	next.Brokers = maps.Clone(s.Brokers)
	next.Brokers[b.ID] = b
	return next, nil
}

// applyFenceBroker sets or clears a registered broker's Fenced flag.
func applyFenceBroker(s *State, c FenceBroker) (*State, error) {
	b, ok := s.Brokers[c.ID]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownBroker, c.ID)
	}
	if b.Fenced == c.Fenced {
		return nil, nil
	}
	b.Fenced = c.Fenced
	next := s.clone()
	next.Brokers = maps.Clone(s.Brokers)
	next.Brokers[c.ID] = b
	return next, nil
}

func applyUnregisterBroker(s *State, c UnregisterBroker) (*State, error) {
	if _, ok := s.Brokers[c.ID]; !ok {
		return nil, fmt.Errorf("%w: %d", ErrUnknownBroker, c.ID)
	}
	for _, name := range s.TopicNames() {
		for i, p := range s.Topics[name].Partitions {
			if slices.Contains(p.Members(), c.ID) {
				return nil, fmt.Errorf("%w: broker %d still holds a replica of %s partition %d: move its replicas first", ErrBrokerInUse, c.ID, name, i)
			}
		}
	}
	next := s.clone()
	next.Brokers = maps.Clone(s.Brokers)
	delete(next.Brokers, c.ID)
	next.Retired = append(slices.Clone(s.Retired), c.ID)
	slices.Sort(next.Retired)
	return next, nil
}

func applyCreateTopic(s *State, c CreateTopic) (*State, error) {
	if !ValidTopicName(c.Name) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidTopicName, c.Name)
	}
	if _, ok := s.Topics[c.Name]; ok {
		return nil, fmt.Errorf("%w: %q", ErrTopicExists, c.Name)
	}
	if c.ID == (TopicID{}) {
		return nil, fmt.Errorf("%w: topic %q has the zero topic id", ErrInvalidCommand, c.Name)
	}
	if other, ok := s.byID[c.ID]; ok {
		return nil, fmt.Errorf("%w: topic id %s is already used by topic %q", ErrTopicExists, c.ID, other)
	}
	if c.Partitions < 1 || c.Partitions > MaxPartitions {
		return nil, fmt.Errorf("%w: %d (must be 1 to %d)", ErrInvalidPartitions, c.Partitions, MaxPartitions)
	}
	replicas := c.Assignment
	if len(replicas) == 0 {
		if err := checkReplicationFactor(s, int(c.ReplicationFactor)); err != nil {
			return nil, err
		}
		replicas = place(currentLoad(s), int(c.Partitions), int(c.ReplicationFactor))
	} else {
		if len(replicas) != int(c.Partitions) {
			return nil, fmt.Errorf("%w: %d replica lists for %d partitions", ErrInvalidAssignment, len(replicas), c.Partitions)
		}
		rf := len(replicas[0])
		if c.ReplicationFactor > 0 && int(c.ReplicationFactor) != rf {
			return nil, fmt.Errorf("%w: replication factor %d but partition 0 has %d replicas", ErrInvalidAssignment, c.ReplicationFactor, rf)
		}
		if err := checkAssignment(s, replicas, rf, 0); err != nil {
			return nil, err
		}
	}
	t := &Topic{Name: c.Name, ID: c.ID, Configs: c.Configs, CreatedMs: c.CreatedMs, EpochBase: s.MaxEpoch, Partitions: make([]Partition, len(replicas))}
	if len(t.Configs) == 0 {
		t.Configs = nil
	}
	for i, r := range replicas {
		t.Partitions[i] = Partition{Replicas: r, Leader: -1, LeaderEpoch: -1}
	}
	next := s.clone()
	next.Topics = maps.Clone(s.Topics)
	next.Topics[t.Name] = t
	next.byID = maps.Clone(s.byID)
	next.byID[t.ID] = t.Name
	return next, nil
}

// checkReplicationFactor checks an automatic placement's replication factor.
func checkReplicationFactor(s *State, rf int) error {
	if rf < 1 {
		return fmt.Errorf("%w: %d (must be at least 1)", ErrInvalidReplicationFactor, rf)
	}
	if rf > len(s.Brokers) {
		return fmt.Errorf("%w: %d is larger than the number of registered brokers (%d)", ErrInvalidReplicationFactor, rf, len(s.Brokers))
	}
	return nil
}

// checkAssignment checks explicit replica lists: each of length rf (at least
// 1, at most the registered brokers), no broker twice in a list, every
// broker registered. first is the number of the partition lists[0] is for,
// for the messages.
func checkAssignment(s *State, lists [][]int32, rf, first int) error {
	if rf < 1 {
		return fmt.Errorf("%w: partition %d has no replicas", ErrInvalidAssignment, first)
	}
	if rf > len(s.Brokers) {
		return fmt.Errorf("%w: %d replicas per partition but %d registered brokers", ErrInvalidAssignment, rf, len(s.Brokers))
	}
	for i, list := range lists {
		p := first + i
		if len(list) != rf {
			return fmt.Errorf("%w: partition %d has %d replicas, want %d", ErrInvalidAssignment, p, len(list), rf)
		}
		for j, id := range list {
			if _, ok := s.Brokers[id]; !ok {
				return fmt.Errorf("%w: partition %d: %w %d", ErrInvalidAssignment, p, ErrUnknownBroker, id)
			}
			if slices.Contains(list[:j], id) {
				return fmt.Errorf("%w: partition %d names broker %d twice", ErrInvalidAssignment, p, id)
			}
		}
	}
	return nil
}

func applyDeleteTopic(s *State, c DeleteTopic) (*State, error) {
	t, ok := s.Topics[c.Name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, c.Name)
	}
	next := s.clone()
	next.Topics = maps.Clone(s.Topics)
	delete(next.Topics, t.Name)
	next.byID = maps.Clone(s.byID)
	delete(next.byID, t.ID)
	return next, nil
}

func applyCreatePartitions(s *State, c CreatePartitions) (*State, error) {
	t, ok := s.Topics[c.Name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, c.Name)
	}
	have := len(t.Partitions)
	if int(c.Total) <= have || c.Total > MaxPartitions {
		return nil, fmt.Errorf("%w: topic %q has %d partitions, asked for %d (must be more, and at most %d)",
			ErrInvalidPartitions, c.Name, have, c.Total, MaxPartitions)
	}
	add, rf := int(c.Total)-have, t.ReplicationFactor()
	replicas := c.Assignment
	if len(replicas) == 0 {
		if err := checkReplicationFactor(s, rf); err != nil {
			return nil, err
		}
		replicas = place(currentLoad(s), add, rf)
	} else {
		if len(replicas) != add {
			return nil, fmt.Errorf("%w: %d replica lists for %d new partitions", ErrInvalidAssignment, len(replicas), add)
		}
		if err := checkAssignment(s, replicas, rf, have); err != nil {
			return nil, err
		}
	}
	nt := *t
	nt.Partitions = make([]Partition, have, int(c.Total))
	copy(nt.Partitions, t.Partitions)
	for _, r := range replicas {
		nt.Partitions = append(nt.Partitions, Partition{Replicas: r, Leader: -1, LeaderEpoch: -1})
	}
	return withTopic(s, &nt), nil
}

func applyAlterConfigs(s *State, c AlterConfigs) (*State, error) {
	t, ok := s.Topics[c.Name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, c.Name)
	}
	if maps.Equal(t.Configs, c.Configs) {
		return nil, nil
	}
	nt := *t
	nt.Configs = c.Configs
	if len(nt.Configs) == 0 {
		nt.Configs = nil
	}
	return withTopic(s, &nt), nil
}

// applySetLeader publishes a partition's leader, or returns nil (a valid
// command with no effect) when the topic is gone, the partition does not
// exist, the leader is not a replica, or the epoch is not above the stored
// one: epochs never go down and one epoch never names two leaders.
func applySetLeader(s *State, c SetLeader) *State {
	t := s.TopicByID(c.Topic)
	if t == nil || c.Partition < 0 || int(c.Partition) >= len(t.Partitions) {
		return nil
	}
	p := t.Partitions[c.Partition]
	// A reassignment's new replica can be elected once promoted, before
	// the leader that promoted it has published the new replica set.
	if !slices.Contains(p.Members(), c.Leader) || c.Epoch <= p.LeaderEpoch {
		return nil
	}
	nt := *t
	nt.Partitions = slices.Clone(t.Partitions)
	nt.Partitions[c.Partition].Leader = c.Leader
	nt.Partitions[c.Partition].LeaderEpoch = c.Epoch
	nt.Partitions[c.Partition].ISR = nil // the new leader publishes its own
	next := withTopic(s, &nt)
	next.MaxEpoch = max(s.MaxEpoch, c.Epoch)
	return next
}

// applySetISR records a partition's in-sync replicas, or returns nil (no
// effect) unless the proposer is the published leader at the published
// epoch and the set is a subset of the replicas that includes it.
func applySetISR(s *State, c SetISR) *State {
	t := s.TopicByID(c.Topic)
	if t == nil || c.Partition < 0 || int(c.Partition) >= len(t.Partitions) {
		return nil
	}
	p := t.Partitions[c.Partition]
	if p.Leader != c.Leader || p.LeaderEpoch != c.Epoch || !slices.Contains(c.ISR, c.Leader) {
		return nil
	}
	isr := slices.Clone(c.ISR)
	slices.Sort(isr)
	isr = slices.Compact(isr)
	for _, id := range isr {
		if !slices.Contains(p.Replicas, id) {
			return nil
		}
	}
	if slices.Equal(isr, p.ISR) {
		return nil
	}
	nt := *t
	nt.Partitions = slices.Clone(t.Partitions)
	nt.Partitions[c.Partition].ISR = isr
	return withTopic(s, &nt)
}

// withTopic returns a copy of s in which t replaces the topic of the same
// name (and id).
func withTopic(s *State, t *Topic) *State {
	next := s.clone()
	next.Topics = maps.Clone(s.Topics)
	next.Topics[t.Name] = t
	return next
}

func applyAllocateProducerIDs(s *State, c AllocateProducerIDs) (*State, int64, error) {
	if c.Count < 1 || c.Count > MaxProducerIDBlock {
		return nil, -1, fmt.Errorf("%w: producer id block of %d (must be 1 to %d)", ErrInvalidCommand, c.Count, MaxProducerIDBlock)
	}
	if s.NextProducerID > math.MaxInt64-c.Count {
		return nil, -1, fmt.Errorf("%w: producer ids exhausted", ErrInvalidCommand)
	}
	next := s.clone()
	next.NextProducerID = s.NextProducerID + c.Count
	return next, s.NextProducerID, nil
}
