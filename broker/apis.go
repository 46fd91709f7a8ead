package broker

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

// api is one Kafka API the broker serves. The apis table is the single
// source of truth: it drives dispatch, the ApiVersions response, the
// protocol layer's version check and the README's support table.
type api struct {
	key      int16
	min, max int16
	handle   func(b *Broker, ctx context.Context, req *protocol.Request) (kmsg.Response, error)
	notes    string
}

// apiTable lists the APIs in key order. Version floors follow Kafka 4.x
// (KIP-896), except Produce and JoinGroup, advertised from 0 because
// librdkafka gates features on those exact floors (see KAFKA-RULES.md);
// Produce v0-2 is answered UNSUPPORTED_VERSION.
func apiTable() []api {
	return []api{
		{key: 0, min: 0, max: 13, handle: handleProduce, notes: "acks 0/1/all, idempotent, all codecs stored as sent; v0-2 answered UNSUPPORTED_VERSION; v13 by topic id"},
		{key: 1, min: 4, max: 16, handle: handleFetch, notes: "long poll woken by new data; partition and response MaxBytes; sessionless (session id 0); v13+ by topic id"},
		{key: 2, min: 1, max: 8, handle: handleListOffsets, notes: "earliest, latest, by timestamp, max timestamp (-3), earliest local (-4)"},
		{key: 3, min: 0, max: 12, handle: handleMetadata, notes: "every broker answers from the replicated metadata: leaders and epochs (Raft terms) as the leaders published them, none (LEADER_NOT_AVAILABLE) while the leader's broker is fenced; auto-creation only when enabled"},
		{key: 8, min: 2, max: 9, handle: handleOffsetCommit, notes: "one Raft entry per request on the group's __consumer_offsets partition; member and generation checked"},
		{key: 9, min: 1, max: 9, handle: handleOffsetFetch, notes: "from the coordinator's materialised offsets (badger); unknown group: -1, no error"},
		{key: 10, min: 0, max: 6, handle: handleFindCoordinator, notes: "groups only (no transactions); the leader of abs(javaHash(group)) mod N of __consumer_offsets, created on first use"},
		{key: 11, min: 0, max: 9, handle: handleJoinGroup, notes: "classic protocol; MEMBER_ID_REQUIRED from v4; static membership"},
		{key: 12, min: 0, max: 4, handle: handleHeartbeat, notes: ""},
		{key: 13, min: 0, max: 5, handle: handleLeaveGroup, notes: "v3+ batch by member or instance id"},
		{key: 14, min: 0, max: 5, handle: handleSyncGroup, notes: "group metadata written through Raft at each completed generation"},
		{key: 15, min: 0, max: 5, handle: handleDescribeGroups, notes: ""},
		{key: 16, min: 0, max: 5, handle: handleListGroups, notes: "groups this broker coordinates; state and type filters"},
		{key: 18, min: 0, max: 4, handle: handleApiVersions, notes: "KIP-511: an unknown version gets a v0 answer with the supported ranges"},
		{key: 19, min: 2, max: 7, handle: handleCreateTopics, notes: "through the metadata group; RF -1 = min(3, brokers); manual assignments; answers once leaders are elected"},
		{key: 20, min: 1, max: 6, handle: handleDeleteTopics, notes: "by name or topic id"},
		{key: 21, min: 0, max: 2, handle: handleDeleteRecords, notes: "moves the log start offset of every replica, through the partition's Raft log"},
		{key: 22, min: 0, max: 4, handle: handleInitProducerID, notes: "idempotent producers; no transactions yet"},
		{key: 23, min: 2, max: 4, handle: handleOffsetForLeaderEpoch, notes: "from the durable epoch table"},
		{key: 32, min: 1, max: 4, handle: handleDescribeConfigs, notes: "topic configs; broker configs read-only"},
		{key: 33, min: 0, max: 2, handle: handleAlterConfigs, notes: "topic configs"},
		{key: 37, min: 0, max: 3, handle: handleCreatePartitions, notes: "grow a topic"},
		{key: 42, min: 0, max: 2, handle: handleDeleteGroups, notes: "empty groups, with their offsets (tombstones through Raft)"},
		{key: 43, min: 0, max: 2, handle: handleElectLeaders, notes: "PREFERRED: the leader hands off to the preferred replica when it is caught up (forwarded to the leader's broker); UNCLEAN: none under Raft (ELECTION_NOT_NEEDED with a leader, else ELIGIBLE_LEADERS_NOT_AVAILABLE)"},
		{key: 44, min: 0, max: 1, handle: handleIncrementalAlterConfigs, notes: "topic configs: SET, DELETE"},
		{key: 45, min: 0, max: 1, handle: handleAlterPartitionReassignments, notes: "records the target; the leader adds learners, promotes them once caught up, removes the rest (one Raft change at a time); null cancels"},
		{key: 46, min: 0, max: 0, handle: handleListPartitionReassignments, notes: "replicas, adding and removing, as Kafka reports them"},
		{key: 47, min: 0, max: 0, handle: handleOffsetDelete, notes: "refused while the group has members"},
		{key: 60, min: 0, max: 1, handle: handleDescribeCluster, notes: "every registered broker; controller = metadata group leader"},
		{key: 64, min: 0, max: 0, handle: handleUnregisterBroker, notes: "decommission: refused while the broker holds replicas; also leaves the metadata Raft group"},
	}
}

// apiSet is the table indexed by key, built once per broker.
type apiSet struct {
	list  []api
	byKey map[int16]*api
}

func newAPISet() *apiSet {
	s := &apiSet{list: apiTable(), byKey: map[int16]*api{}}
	for i := range s.list {
		s.byKey[s.list[i].key] = &s.list[i]
	}
	return s
}

// versionRange is the protocol layer's version table.
func (s *apiSet) versionRange(key int16) (protocol.VersionRange, bool) {
	a, ok := s.byKey[key]
	if !ok {
		return protocol.VersionRange{}, false
	}
	return protocol.VersionRange{Min: a.min, Max: a.max}, true
}

// SupportTable renders the supported-API table for the README, from the
// same table that drives dispatch; a test keeps the README in sync.
func SupportTable() string {
	sorted := apiTable()
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].key < sorted[j].key })
	var sb strings.Builder
	sb.WriteString("| key | API | versions | notes |\n|---|---|---|---|\n")
	for _, a := range sorted {
		name := kmsg.NameForKey(a.key)
		fmt.Fprintf(&sb, "| %d | %s | %d-%d | %s |\n", a.key, name, a.min, a.max, a.notes)
	}
	return sb.String()
}
