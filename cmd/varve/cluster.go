package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
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
	ID       int32   `json:"id"`
	Address  string  `json:"address"`
	Rack     *string `json:"rack"`
	Leaders  int     `json:"leader_partitions"`
	Replicas int     `json:"replicas"`
}

type partitionIssue struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	Replicas  []int32 `json:"replicas"`
	ISR       []int32 `json:"isr"`
	Status    string  `json:"status"` // offline or under-replicated
}

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
	s := summarizeCluster(m)
	p := fs.printer(stdout)
	if p.json {
		return p.writeJSON(s)
	}
	p.fields([2]string{"cluster id", s.ClusterID}, [2]string{"metadata leader", strconv.Itoa(int(s.MetadataLeader))},
		[2]string{"brokers", strconv.Itoa(len(s.Brokers))}, [2]string{"topics", strconv.Itoa(s.Topics)},
		[2]string{"partitions", strconv.Itoa(s.Partitions)}, [2]string{"under-replicated", strconv.Itoa(s.UnderReplicated)},
		[2]string{"offline", strconv.Itoa(s.Offline)})
	var rows [][]string
	for _, b := range s.Brokers {
		rack := ""
		if b.Rack != nil {
			rack = *b.Rack
		}
		rows = append(rows, []string{strconv.Itoa(int(b.ID)), b.Address, rack, strconv.Itoa(b.Leaders), strconv.Itoa(b.Replicas)})
	}
	p.table([]string{"BROKER", "ADDRESS", "RACK", "LEADERS", "REPLICAS"}, rows)
	if len(s.ProblemPartition) > 0 {
		rows = nil
		for _, pi := range s.ProblemPartition {
			rows = append(rows, []string{pi.Topic, strconv.Itoa(int(pi.Partition)), strconv.Itoa(int(pi.Leader)), ids(pi.Replicas), ids(pi.ISR), pi.Status})
		}
		p.table([]string{"TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "STATUS"}, rows)
	}
	return nil
}

// summarizeCluster counts from one Metadata answer (internal topics'
// partitions included in every count but the topic count).
func summarizeCluster(m kadm.Metadata) clusterSummary {
	s := clusterSummary{ClusterID: m.Cluster, MetadataLeader: m.Controller, Brokers: []brokerSummary{}, ProblemPartition: []partitionIssue{}}
	byID := map[int32]*brokerSummary{}
	for _, b := range m.Brokers {
		s.Brokers = append(s.Brokers, brokerSummary{ID: b.NodeID, Address: net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))), Rack: b.Rack})
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
			status := ""
			switch {
			case pd.Leader < 0:
				s.Offline++
				status = "offline"
			case len(pd.ISR) < len(pd.Replicas):
				s.UnderReplicated++
				status = "under-replicated"
			}
			if status != "" {
				s.ProblemPartition = append(s.ProblemPartition, partitionIssue{Topic: td.Topic, Partition: pd.Partition,
					Leader: pd.Leader, Replicas: nonNil(pd.Replicas), ISR: nonNil(pd.ISR), Status: status})
			}
		}
	}
	return s
}
