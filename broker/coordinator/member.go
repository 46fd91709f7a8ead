package coordinator

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// memberNewJoinTimeout is Kafka's NewMemberJoinTimeoutMs: a member that has
// never completed a join phase is dropped if it waits in JoinGroup longer than
// this, so clients that gave up on a long join do not pile up as ghosts.
const memberNewJoinTimeout = 5 * time.Minute

// Protocol is one (name, metadata) pair a member offered in JoinGroup, for
// example ("cooperative-sticky", <subscription>). A member's protocols are
// kept in its order of preference.
type Protocol struct {
	Name     string
	Metadata []byte
}

// member is one group member. Its fields are guarded by the owning group's mu.
type member struct {
	id         string
	instanceID string // group.instance.id; "" for a dynamic member
	clientID   string
	clientHost string

	sessionTimeout   time.Duration
	rebalanceTimeout time.Duration
	protocols        []Protocol // preference order, names unique
	assignment       []byte     // from the leader's last SyncGroup; never modified in place

	deadline    time.Time // session deadline: last heartbeat + session timeout
	isNew       bool      // has not yet completed a join phase
	newDeadline time.Time // when a new member's waiting join gives up

	join *memberJoinWaiter // a JoinGroup waiting for the join phase to end
	sync *memberSyncWaiter // a SyncGroup waiting for the leader's assignment
}

// memberJoinWaiter is a blocked JoinGroup. The channel has room for the one response
// it ever gets, so answering never blocks under the group lock.
type memberJoinWaiter struct {
	version int16
	ch      chan *kmsg.JoinGroupResponse
	m       *member // the member it waits for; read under the group lock
}

func newMemberJoinWaiter(version int16) *memberJoinWaiter {
	return &memberJoinWaiter{version: version, ch: make(chan *kmsg.JoinGroupResponse, 1)}
}

// memberSyncWaiter is a blocked SyncGroup, built like memberJoinWaiter.
type memberSyncWaiter struct {
	version int16
	ch      chan *kmsg.SyncGroupResponse
	m       *member
}

func newMemberSyncWaiter(version int16) *memberSyncWaiter {
	return &memberSyncWaiter{version: version, ch: make(chan *kmsg.SyncGroupResponse, 1)}
}

// answerJoinLocked hands resp to the member's waiting JoinGroup, if any.
func (m *member) answerJoinLocked(resp *kmsg.JoinGroupResponse) {
	if m.join == nil {
		return
	}
	resp.Version = m.join.version
	m.join.ch <- resp
	m.join = nil
}

// failJoinLocked answers the member's waiting JoinGroup with an error.
// memberID is the id the response carries ("" tells the client to forget its id).
func (m *member) failJoinLocked(code int16, memberID string) {
	if m.join == nil {
		return
	}
	m.answerJoinLocked(groupJoinError(m.join.version, code, memberID))
}

// failSyncLocked answers the member's waiting SyncGroup with an error.
func (m *member) failSyncLocked(code int16) {
	if m.sync == nil {
		return
	}
	resp := kmsg.NewPtrSyncGroupResponse()
	resp.Version = m.sync.version
	resp.ErrorCode = code
	m.sync.ch <- resp
	m.sync = nil
}

// matches reports whether ps is exactly the member's protocol list: same
// names, same metadata, same order (Kafka's MemberMetadata.matches).
func (m *member) matches(ps []Protocol) bool {
	if len(ps) != len(m.protocols) {
		return false
	}
	for i, p := range ps {
		if p.Name != m.protocols[i].Name || !bytes.Equal(p.Metadata, m.protocols[i].Metadata) {
			return false
		}
	}
	return true
}

// metadata returns the member's metadata for the named protocol and whether
// the member offers it.
func (m *member) metadata(name string) ([]byte, bool) {
	for _, p := range m.protocols {
		if p.Name == name {
			return p.Metadata, true
		}
	}
	return nil, false
}

// vote returns the member's most preferred protocol among candidates.
func (m *member) vote(candidates map[string]bool) string {
	for _, p := range m.protocols {
		if candidates[p.Name] {
			return p.Name
		}
	}
	return ""
}

// instancePtr returns the member's group.instance.id as Kafka's nullable string.
func (m *member) instancePtr() *string {
	if m.instanceID == "" {
		return nil
	}
	s := m.instanceID
	return &s
}

// memberProtocols copies a JoinGroup's protocols: names deduplicated (the first
// occurrence wins, so a repeated name cannot count twice in the vote) and
// metadata copied, because request buffers may be reused after the handler
// returns.
func memberProtocols(req []kmsg.JoinGroupRequestProtocol) []Protocol {
	out := make([]Protocol, 0, len(req))
	seen := make(map[string]bool, len(req))
	for _, p := range req {
		if seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		out = append(out, Protocol{Name: p.Name, Metadata: bytes.Clone(p.Metadata)})
	}
	return out
}

// memberNewID returns prefix + "-" + a random UUID, as Kafka does: the prefix
// is the client id for a dynamic member and the group.instance.id for a static
// one (franz-go recognises a static leader by that prefix).
func memberNewID(prefix string) string {
	var u [16]byte
	_, _ = rand.Read(u[:])  // crypto/rand.Read never fails (Go 1.24+)
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return prefix + "-" + string(b[:])
}

// memberInstance turns a request's nullable group.instance.id into the internal
// form. An empty instance id is treated as none: Kafka's clients refuse to
// send one, and "" is our marker for a dynamic member.
func memberInstance(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
