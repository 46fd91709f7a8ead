package metadata

import (
	"fmt"
	"slices"
)

// Feature levels. A command type (or a new version of one) is introduced
// at a cluster feature level; a build knows every level up to its
// MaxFeatureLevel. Brokers register the highest level they run, the
// metadata leader raises the cluster's level (SetFeatureLevel) once every
// registered broker runs it, and a proposer writes a command only when the
// cluster's level has reached the command's. So during a rolling upgrade
// no broker is ever handed a command it cannot decode, and a command
// proposed too early fails the same way on every broker: a build that
// knows it refuses it for the cluster's level, one that does not cannot
// decode it, and neither changes its state.
//
//	level 1   commands 1-11 at version 1 (the first release)
//	level 2   SetLeaders (12), SetFeatureLevel (13)
//	level 3   FenceBroker (14), and Broker.Fenced in the state
const (
	// MaxFeatureLevel is the highest level this build reads and writes.
	MaxFeatureLevel int32 = 3
	// BaseFeatureLevel is the level of a cluster (or a registration) that
	// never recorded one.
	BaseFeatureLevel int32 = 1
)

// commandLevel is the feature level that introduced a command type.
func commandLevel(t byte) int32 {
	switch t {
	case typeSetLeaders, typeSetFeatureLevel:
		return 2
	case typeFenceBroker:
		return 3
	}
	return 1
}

// CommandLevel is the feature level a command needs.
func CommandLevel(cmd any) int32 {
	b, err := Encode(cmd)
	if err != nil {
		return MaxFeatureLevel + 1
	}
	return commandLevel(b[0])
}

// FeatureLevelOrBase is the cluster's level (BaseFeatureLevel until raised).
func (s *State) FeatureLevelOrBase() int32 {
	return max(s.FeatureLevel, BaseFeatureLevel)
}

// MaxLevel is the level a registration says its broker runs.
func (b *Broker) MaxLevel() int32 { return max(b.MaxFeatureLevel, BaseFeatureLevel) }

// SupportedLevel is the highest level every registered broker runs.
func (s *State) SupportedLevel() int32 {
	level := MaxFeatureLevel
	for _, b := range s.Brokers {
		level = min(level, b.MaxLevel())
	}
	return level
}

// SetFeatureLevel raises the cluster's feature level. Refused unless every
// registered broker runs Level and it is not below the current level.
type SetFeatureLevel struct {
	Level int32 `json:"level"`
}

// SetLeaders is many SetLeader at once: what a broker that just won many
// elections (a failover at a thousand partitions) publishes, in one entry
// rather than one each. Each item is applied as SetLeader would be.
type SetLeaders struct {
	Leaders []SetLeader `json:"leaders"`
}

// MaxSetLeaders bounds the items of one SetLeaders.
const MaxSetLeaders = 4096

func applySetFeatureLevel(s *State, c SetFeatureLevel) (*State, error) {
	cur := s.FeatureLevelOrBase()
	if c.Level < cur || c.Level > MaxFeatureLevel {
		return nil, fmt.Errorf("%w: feature level %d (cluster at %d, this build up to %d)", ErrFeatureLevel, c.Level, cur, MaxFeatureLevel)
	}
	if c.Level > s.SupportedLevel() {
		return nil, fmt.Errorf("%w: feature level %d, but a registered broker runs only %d", ErrFeatureLevel, c.Level, s.SupportedLevel())
	}
	if c.Level == cur {
		return nil, nil
	}
	next := s.clone()
	next.FeatureLevel = c.Level
	return next, nil
}

func applySetLeaders(s *State, c SetLeaders) (*State, error) {
	if len(c.Leaders) > MaxSetLeaders {
		return nil, fmt.Errorf("%w: %d leaders in one SetLeaders (at most %d)", ErrInvalidCommand, len(c.Leaders), MaxSetLeaders)
	}
	cur := s
	for _, l := range c.Leaders {
		if next := applySetLeader(cur, l); next != nil {
			cur = next
		}
	}
	if cur == s {
		return nil, nil
	}
	return cur, nil
}

// checkLevels is part of Restore's consistency check.
func checkLevels(s *State) error {
	if s.FeatureLevel < 0 || s.FeatureLevel > MaxFeatureLevel {
		return fmt.Errorf("feature level %d (this build reads up to %d)", s.FeatureLevel, MaxFeatureLevel)
	}
	if slices.ContainsFunc(s.BrokerIDs(), func(id int32) bool { b := s.Brokers[id]; return b.MaxFeatureLevel < 0 }) {
		return fmt.Errorf("a broker registered a negative feature level")
	}
	return nil
}
