package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/varvelog/varve/client"
)

// runCluster is varve cluster: info.
func runCluster(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return runSub(ctx, "cluster", []subcommand{
		{"info", "brokers, metadata leader (Kafka's controller), partitions led per broker, under-replicated and offline partitions", clusterInfo},
	}, args, stdin, stdout, stderr)
}

// clusterSummary is cluster info -o json.
type clusterSummary struct {
	ClusterID        string           `json:"cluster_id"`
	MetadataLeader   int32            `json:"metadata_leader"` // Kafka's controller; -1: none
	Topics           int              `json:"topics"`          // not counting internal ones
	Partitions       int              `json:"partitions"`
	UnderReplicated  int              `json:"under_replicated"`
	Offline          int              `json:"offline"`
	Brokers          []brokerSummary  `json:"brokers"`
	ProblemPartition []partitionIssue `json:"problem_partitions"`
}

type brokerSummary struct {
	ID        int32   `json:"id"`
	Address   string  `json:"address"`
	Rack      *string `json:"rack"`
	Leaders   int     `json:"leader_partitions"`
	Replicas  int     `json:"replicas"`
	Reachable bool    `json:"reachable"`       // answered this client's probe
	Error     string  `json:"error,omitempty"` // why not
}

type partitionIssue struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Replicas  []int32 `json:"replicas"`
	ISR       []int32 `json:"isr"`
	Status    string  `json:"status"`           // offline or under-replicated
	Reason    string  `json:"reason,omitempty"` // offline: no leader, or leader unreachable
}

// probeTimeout bounds each broker's answer to cluster info's probe.
const probeTimeout = 3 * time.Second

func clusterInfo(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newToolFlags("cluster info", "varve cluster info [-o text|json]",
		"  varve cluster info\n  varve cluster info --brokers localhost:19091 -o json\n").withOutput()
	if _, err := fs.parse(args, 0, stdout); err != nil {
		return helped(err)
	}
	cl, adm, err := fs.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	m, err := adm.Metadata(ctx)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	brokerIDs := make([]int32, 0, len(m.Brokers))
	for _, b := range m.Brokers {
		brokerIDs = append(brokerIDs, b.NodeID)
	}
	s := summarizeCluster(m, client.ProbeBrokers(ctx, cl, brokerIDs, probeTimeout))
	p := fs.printer(stdout)
	if p.json {
		return p.writeJSON(s)
	}
	p.fields([2]string{"cluster id", s.ClusterID}, [2]string{"metadata leader", strconv.Itoa(int(s.MetadataLeader))},
		[2]string{"brokers", brokerCount(s.Brokers)}, [2]string{"topics", strconv.Itoa(s.Topics)},
		[2]string{"partitions", strconv.Itoa(s.Partitions)}, [2]string{"under-replicated", strconv.Itoa(s.UnderReplicated)},
		[2]string{"offline", strconv.Itoa(s.Offline)})
	var rows [][]string
	for _, b := range s.Brokers {
		rack := ""
		if b.Rack != nil {
			rack = *b.Rack
		}
		status := "up"
		if !b.Reachable {
			status = "unreachable: " + b.Error
		}
		rows = append(rows, []string{strconv.Itoa(int(b.ID)), b.Address, rack, strconv.Itoa(b.Leaders), strconv.Itoa(b.Replicas), status})
	}
	p.table([]string{"BROKER", "ADDRESS", "RACK", "LEADERS", "REPLICAS", "STATUS"}, rows)
	if len(s.ProblemPartition) > 0 {
		rows = nil
		for _, pi := range s.ProblemPartition {
			status := pi.Status
			if pi.Reason != "" {
				status += " (" + pi.Reason + ")"
			}
			rows = append(rows, []string{pi.Topic, strconv.Itoa(int(pi.Partition)), strconv.Itoa(int(pi.Leader)), ids(pi.Replicas), ids(pi.ISR), status})
		}
		p.table([]string{"TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "STATUS"}, rows)
	}
	return nil
}

// brokerCount is "3", or "3 (1 unreachable)".
func brokerCount(bs []brokerSummary) string {
	down := 0
	for _, b := range bs {
		if !b.Reachable {
			down++
		}
	}
	if down == 0 {
		return strconv.Itoa(len(bs))
	}
	return fmt.Sprintf("%d (%d unreachable)", len(bs), down)
}

// summarizeCluster counts from one Metadata answer (internal topics'
// partitions included in every count but the topic count) and the
// brokers that did not answer a probe. A partition is offline when the
// metadata names no leader or its leader did not answer: Varve's
// metadata keeps listing a dead broker, and the leadership it last
// published, until another replica takes over (never, for a partition
// whose only replica is there).
func summarizeCluster(m kadm.Metadata, unreachable map[int32]error) clusterSummary {
	s := clusterSummary{ClusterID: m.Cluster, MetadataLeader: m.Controller, Brokers: []brokerSummary{}, ProblemPartition: []partitionIssue{}}
	byID := map[int32]*brokerSummary{}
	for _, b := range m.Brokers {
		bs := brokerSummary{ID: b.NodeID, Address: net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))), Rack: b.Rack, Reachable: true}
		if err, down := unreachable[b.NodeID]; down {
			bs.Reachable, bs.Error = false, probeError(err)
		}
		s.Brokers = append(s.Brokers, bs)
	}
	sort.Slice(s.Brokers, func(i, j int) bool { return s.Brokers[i].ID < s.Brokers[j].ID })
	for i := range s.Brokers {
		byID[s.Brokers[i].ID] = &s.Brokers[i]
	}
	for _, td := range m.Topics.Sorted() {
		if td.Err != nil {
			continue
		}
		if !td.IsInternal {
			s.Topics++
		}
		for _, pd := range td.Partitions.Sorted() {
			s.Partitions++
			if b := byID[pd.Leader]; b != nil {
				b.Leaders++
			}
			for _, r := range pd.Replicas {
				if b := byID[r]; b != nil {
					b.Replicas++
				}
			}
			status, reason := "", ""
			_, leaderDown := unreachable[pd.Leader]
			switch {
			case pd.Leader < 0:
				s.Offline++
				status, reason = "offline", "no leader"
			case leaderDown:
				s.Offline++
				status, reason = "offline", "leader unreachable"
			case len(pd.ISR) < len(pd.Replicas):
				s.UnderReplicated++
				status = "under-replicated"
			}
			if status != "" {
				s.ProblemPartition = append(s.ProblemPartition, partitionIssue{Topic: td.Topic, Partition: pd.Partition,
					Leader: pd.Leader, Replicas: nonNil(pd.Replicas), ISR: nonNil(pd.ISR), Status: status, Reason: reason})
			}
		}
	}
	return s
}

// probeError is the gist of a failed probe: "connection refused", "no
// answer within 3s".
func probeError(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("no answer within %v", probeTimeout)
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}
