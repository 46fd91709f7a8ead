package metadata

import (
	"fmt"
	"slices"
)

// Reassignment. The metadata records what an operator asked for (Target)
// and what the partition's Raft group is made of (Replicas, Learners); the
// partition's leader moves its group toward the target one server at a
// time and publishes each configuration it reaches with SetReplicas. When
// the group is the target, the reassignment is over: Replicas takes the
// target's order (its first broker is the preferred leader) and Target and
// Original are cleared.

// Reassign starts, replaces or (Target nil) cancels the reassignment of one
// partition. Cancelling moves the partition back to the replica set it had
// when the reassignment started, as Kafka does.
type Reassign struct {
	Topic     TopicID `json:"topic"`
	Partition int32   `json:"partition"`
	Target    []int32 `json:"target"`
}

// SetReplicas publishes a partition group's Raft configuration, proposed by
// its leader at Epoch after a change committed: Voters and Learners are the
// configuration's members. Ignored unless the proposer is the published
// leader at the published epoch (a deposed leader cannot move replicas).
type SetReplicas struct {
	Topic     TopicID `json:"topic"`
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Epoch     int32   `json:"epoch"`
	Voters    []int32 `json:"voters"`
	Learners  []int32 `json:"learners,omitempty"`
}

// partitionRef finds a topic by id and checks the partition index.
func partitionRef(s *State, id TopicID, idx int32) (*Topic, error) {
	t := s.TopicByID(id)
	if t == nil {
		return nil, fmt.Errorf("%w: id %s", ErrUnknownTopic, id)
	}
	if idx < 0 || int(idx) >= len(t.Partitions) {
		return nil, fmt.Errorf("%w: %s partition %d", ErrUnknownPartition, t.Name, idx)
	}
	return t, nil
}

func applyReassign(s *State, c Reassign) (*State, error) {
	t, err := partitionRef(s, c.Topic, c.Partition)
	if err != nil {
		return nil, err
	}
	p := t.Partitions[c.Partition]
	target := c.Target
	if target == nil {
		if p.Target == nil {
			return nil, fmt.Errorf("%w: %s partition %d", ErrNoReassignment, t.Name, c.Partition)
		}
		target = p.Original
	}
	if err := checkAssignment(s, [][]int32{target}, len(target), int(c.Partition)); err != nil {
		return nil, err
	}
	np := p
	np.Target = slices.Clone(target)
	if p.Target == nil {
		np.Original = slices.Clone(p.Replicas)
	}
	np = settle(np)
	if slices.Equal(np.Replicas, p.Replicas) && slices.Equal(np.Target, p.Target) && slices.Equal(np.Original, p.Original) {
		return nil, nil
	}
	return withPartition(s, t, c.Partition, np), nil
}

func applySetReplicas(s *State, c SetReplicas) *State {
	t, err := partitionRef(s, c.Topic, c.Partition)
	if err != nil {
		return nil
	}
	p := t.Partitions[c.Partition]
	if p.Leader != c.Leader || p.LeaderEpoch != c.Epoch || !slices.Contains(c.Voters, c.Leader) {
		return nil
	}
	members := append(slices.Clone(c.Voters), c.Learners...)
	for i, id := range members {
		if _, ok := s.Brokers[id]; !ok || slices.Contains(members[:i], id) {
			return nil
		}
	}
	np := p
	// Keep the order operators see: the target's (or the current one's)
	// first, then whatever else the group still holds.
	order := p.Target
	if order == nil {
		order = p.Replicas
	}
	var replicas []int32
	for _, id := range order {
		if slices.Contains(members, id) {
			replicas = append(replicas, id)
		}
	}
	for _, id := range members {
		if !slices.Contains(replicas, id) {
			replicas = append(replicas, id)
		}
	}
	np.Replicas = replicas
	np.Learners = nil
	if len(c.Learners) > 0 {
		np.Learners = slices.Clone(c.Learners)
		slices.Sort(np.Learners)
	}
	if np.ISR != nil {
		np.ISR = slices.DeleteFunc(slices.Clone(np.ISR), func(id int32) bool { return !slices.Contains(c.Voters, id) })
	}
	np = settle(np)
	if slices.Equal(np.Replicas, p.Replicas) && slices.Equal(np.Learners, p.Learners) &&
		slices.Equal(np.Target, p.Target) && slices.Equal(np.ISR, p.ISR) {
		return nil
	}
	return withPartition(s, t, c.Partition, np)
}

// settle ends a reassignment whose target the group has reached: the
// target's voters, no learners, nothing else.
func settle(p Partition) Partition {
	if p.Target == nil || len(p.Learners) > 0 || len(p.Replicas) != len(p.Target) {
		return p
	}
	for _, id := range p.Target {
		if !slices.Contains(p.Replicas, id) {
			return p
		}
	}
	p.Replicas = slices.Clone(p.Target)
	p.Target, p.Original = nil, nil
	return p
}

// withPartition returns a copy of s in which partition idx of t is p.
func withPartition(s *State, t *Topic, idx int32, p Partition) *State {
	nt := *t
	nt.Partitions = slices.Clone(t.Partitions)
	nt.Partitions[idx] = p
	return withTopic(s, &nt)
}

// Adding and Removing are Kafka's lists for a partition being reassigned:
// the target's brokers that were not replicas when it started, and the
// original replicas the target drops.
func (p Partition) Adding() []int32 {
	var out []int32
	for _, id := range p.Target {
		if !slices.Contains(p.Original, id) {
			out = append(out, id)
		}
	}
	return out
}

// Removing: see Adding.
func (p Partition) Removing() []int32 {
	var out []int32
	for _, id := range p.Original {
		if !slices.Contains(p.Target, id) {
			out = append(out, id)
		}
	}
	return out
}
