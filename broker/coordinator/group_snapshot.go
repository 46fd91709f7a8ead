package coordinator

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrInvalidSnapshot is returned by Restore for a snapshot that is
// inconsistent.
var ErrInvalidSnapshot = errors.New("coordinator: invalid group snapshot")

// Snapshot is the persistent state of one group: what Kafka writes to
// __consumer_offsets as the group metadata record (GroupMetadata converts it
// to that record, SnapshotFromGroupMetadata back). A snapshot with members is
// a Stable group; without members, an Empty one. It holds no deadlines, so it
// is the same on every replica. Snapshots handed to callbacks are deep copies.
type Snapshot struct {
	Group        string
	ProtocolType string
	Protocol     string // the selected protocol; "" for an Empty group
	Generation   int32
	Leader       string // a member id; "" for an Empty group
	Members      []MemberSnapshot
}

// MemberSnapshot is one member of a Snapshot.
type MemberSnapshot struct {
	MemberID               string
	InstanceID             string // group.instance.id; "" for a dynamic member
	ClientID               string
	ClientHost             string
	SessionTimeoutMillis   int32
	RebalanceTimeoutMillis int32
	// Protocols are the protocols the member offered, in its order of
	// preference. Kafka's record (GroupMetadata) keeps only the selected
	// one's metadata, which is all Restore needs: after a move a follower
	// that rejoins with all its protocols triggers a rebalance, as in Kafka,
	// while heartbeats and static restarts do not.
	Protocols  []Protocol
	Assignment []byte
}

// snapshotLocked deep-copies the group into a Snapshot.
func (grp *group) snapshotLocked() Snapshot {
	s := Snapshot{
		Group:        grp.id,
		ProtocolType: grp.protocolType,
		Protocol:     grp.protocol,
		Generation:   grp.generation,
		Leader:       grp.leader,
	}
	for _, m := range grp.members {
		ms := MemberSnapshot{
			MemberID:               m.id,
			InstanceID:             m.instanceID,
			ClientID:               m.clientID,
			ClientHost:             m.clientHost,
			SessionTimeoutMillis:   int32(m.sessionTimeout / time.Millisecond),
			RebalanceTimeoutMillis: int32(m.rebalanceTimeout / time.Millisecond),
			Assignment:             bytes.Clone(m.assignment),
		}
		for _, p := range m.protocols {
			ms.Protocols = append(ms.Protocols, Protocol{Name: p.Name, Metadata: bytes.Clone(p.Metadata)})
		}
		s.Members = append(s.Members, ms)
	}
	return s
}

// validate checks what Restore relies on.
func (s *Snapshot) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: group %q: %s", ErrInvalidSnapshot, s.Group, fmt.Sprintf(format, args...))
	}
	if s.Generation < 0 {
		return bad("negative generation %d", s.Generation)
	}
	if len(s.Members) == 0 {
		if s.Leader != "" || s.Protocol != "" {
			return bad("leader or protocol without members")
		}
		return nil
	}
	if s.ProtocolType == "" || s.Protocol == "" {
		return bad("members without a protocol type and protocol")
	}
	ids, instances := make(map[string]bool), make(map[string]bool)
	for _, m := range s.Members {
		switch {
		case m.MemberID == "" || ids[m.MemberID]:
			return bad("empty or duplicate member id %q", m.MemberID)
		case m.InstanceID != "" && instances[m.InstanceID]:
			return bad("duplicate instance id %q", m.InstanceID)
		case m.SessionTimeoutMillis <= 0 || m.RebalanceTimeoutMillis <= 0:
			return bad("member %q has a non-positive timeout", m.MemberID)
		}
		ids[m.MemberID], instances[m.InstanceID] = true, m.InstanceID != ""
		found := false
		for _, p := range m.Protocols {
			found = found || p.Name == s.Protocol
		}
		if !found {
			return bad("member %q does not offer protocol %q", m.MemberID, s.Protocol)
		}
	}
	if !ids[s.Leader] {
		return bad("leader %q is not a member", s.Leader)
	}
	return nil
}

// Restore loads a persisted group when this broker becomes its coordinator
// (after a failover or a move). A snapshot with members restores a Stable
// group of that generation with every member's assignment, each member's
// session deadline starting now, so that a coordinator move triggers no
// rebalance: members keep heartbeating the same generation, and static members
// restarting meanwhile get their assignments back. Without members it
// restores an Empty group. A group already loaded under the same id is
// replaced and its waiting calls get NOT_COORDINATOR. Call it before serving
// the group's requests; no callback fires.
func (g *Groups) Restore(s Snapshot) error {
	if err := s.validate(); err != nil {
		return err
	}
	grp := groupNew(g, s.Group)
	now := g.cfg.Now()
	grp.generation, grp.protocolType = s.Generation, s.ProtocolType
	if len(s.Members) > 0 {
		grp.state = groupStateStable
		grp.protocol, grp.leader = s.Protocol, s.Leader
	}
	for _, ms := range s.Members {
		m := &member{
			id:               ms.MemberID,
			instanceID:       ms.InstanceID,
			clientID:         ms.ClientID,
			clientHost:       ms.ClientHost,
			sessionTimeout:   time.Duration(ms.SessionTimeoutMillis) * time.Millisecond,
			rebalanceTimeout: time.Duration(ms.RebalanceTimeoutMillis) * time.Millisecond,
			assignment:       bytes.Clone(ms.Assignment),
		}
		if m.assignment == nil {
			m.assignment = []byte{}
		}
		for _, p := range ms.Protocols {
			m.protocols = append(m.protocols, Protocol{Name: p.Name, Metadata: bytes.Clone(p.Metadata)})
		}
		m.deadline = now.Add(m.sessionTimeout)
		grp.members = append(grp.members, m)
		grp.byID[m.id] = m
		if m.instanceID != "" {
			grp.static[m.instanceID] = m.id
		}
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return kerr.NotCoordinator
	}
	if old := g.groups[s.Group]; old != nil {
		old.mu.Lock()
		old.killLocked(kerr.NotCoordinator.Code)
		old.mu.Unlock()
	}
	g.groups[s.Group] = grp
	return nil
}

// GroupMetadata converts the snapshot to Kafka's __consumer_offsets group
// metadata value, the form the offset store persists (value version 3 or 4;
// nowMs is the CurrentStateTimestamp, stamped by the leader before proposing).
// Like Kafka's record it keeps, per member, only the metadata of the selected
// protocol as the subscription; an Empty group has a null protocol and leader.
func (s Snapshot) GroupMetadata(version int16, nowMs int64) *kmsg.GroupMetadataValue {
	md := kmsg.NewGroupMetadataValue()
	md.Version = version
	md.ProtocolType = s.ProtocolType
	md.Generation = s.Generation
	md.CurrentStateTimestamp = nowMs
	if s.Protocol != "" {
		p := s.Protocol
		md.Protocol = &p
	}
	if s.Leader != "" {
		l := s.Leader
		md.Leader = &l
	}
	for _, m := range s.Members {
		gm := kmsg.NewGroupMetadataValueMember()
		gm.MemberID = m.MemberID
		if m.InstanceID != "" {
			inst := m.InstanceID
			gm.InstanceID = &inst
		}
		gm.ClientID = m.ClientID
		gm.ClientHost = m.ClientHost
		gm.RebalanceTimeoutMillis = m.RebalanceTimeoutMillis
		gm.SessionTimeoutMillis = m.SessionTimeoutMillis
		for _, p := range m.Protocols {
			if p.Name == s.Protocol {
				gm.Subscription = bytes.Clone(p.Metadata)
				break
			}
		}
		gm.Assignment = bytes.Clone(m.Assignment)
		md.Members = append(md.Members, gm)
	}
	return &md
}

// SnapshotFromGroupMetadata converts a persisted group metadata value (any
// version Kafka wrote) back to a Snapshot for Restore. Each member offers
// the one protocol the record names, with its subscription; a record without
// a rebalance timeout (version 0) gets the session timeout, as JoinGroup v0
// does.
func SnapshotFromGroupMetadata(group string, md *kmsg.GroupMetadataValue) Snapshot {
	s := Snapshot{Group: group, ProtocolType: md.ProtocolType, Generation: md.Generation}
	if md.Protocol != nil {
		s.Protocol = *md.Protocol
	}
	if md.Leader != nil {
		s.Leader = *md.Leader
	}
	for _, gm := range md.Members {
		m := MemberSnapshot{
			MemberID:               gm.MemberID,
			ClientID:               gm.ClientID,
			ClientHost:             gm.ClientHost,
			SessionTimeoutMillis:   gm.SessionTimeoutMillis,
			RebalanceTimeoutMillis: gm.RebalanceTimeoutMillis,
			Protocols:              []Protocol{{Name: s.Protocol, Metadata: bytes.Clone(gm.Subscription)}},
			Assignment:             bytes.Clone(gm.Assignment),
		}
		if gm.InstanceID != nil {
			m.InstanceID = *gm.InstanceID
		}
		if m.RebalanceTimeoutMillis <= 0 {
			m.RebalanceTimeoutMillis = m.SessionTimeoutMillis
		}
		s.Members = append(s.Members, m)
	}
	return s
}
