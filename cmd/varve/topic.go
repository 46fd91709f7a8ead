package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/client"
)

// runTopic is varve topic: create, list, describe, delete, alter-config.
func runTopic(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return runSub(ctx, "topic", []subcommand{
		{"create", "create a topic", topicCreate},
		{"list", "list topics with their partition counts and replication factors", topicList},
		{"describe", "a topic's partitions (leader, replicas, ISR, offsets) and non-default configs", topicDescribe},
		{"delete", "delete a topic and its data", topicDelete},
		{"alter-config", "set or delete topic configs", topicAlterConfig},
	}, args, stdin, stdout, stderr)
}

func topicCreate(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newToolFlags("topic create", "varve topic create NAME [-p PARTITIONS] [-r REPLICATION_FACTOR] [-c key=value ...] [-o text|json]",
		"  varve topic create demo -p 6 -r 3\n  varve topic create audit -c retention.ms=86400000 -c cleanup.policy=delete\n").withOutput()
	partitions := fs.Int("p", -1, "number of `PARTITIONS` (-1: the broker's num.partitions)")
	rf := fs.Int("r", -1, "replication factor `RF` (-1: min(3, brokers))")
	var configs stringList
	fs.Var(&configs, "c", "topic config `key=value` (repeatable)")
	pos, err := fs.parse(args, 1, stdout)
	if err != nil {
		return helped(err)
	}
	kvs, err := keyValues("-c", configs)
	if err != nil {
		return err
	}
	cfgs := map[string]*string{}
	for _, kv := range kvs {
		cfgs[kv[0]] = kadm.StringPtr(kv[1])
	}
	cl, adm, err := fs.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := adm.CreateTopic(ctx, int32(*partitions), int16(*rf), cfgs, pos[0])
	if err != nil {
		return fmt.Errorf("create topic %q: %w", pos[0], kadmErr(err, resp.ErrMessage))
	}
	parts, factor := int(resp.NumPartitions), int(resp.ReplicationFactor)
	if parts <= 0 || factor <= 0 { // an answer below v5 has neither; -1 echoed back
		if td, err := client.Topic(ctx, adm, pos[0]); err == nil {
			parts, factor = len(td.Partitions), td.Partitions.NumReplicas()
		}
	}
	if p := fs.printer(stdout); p.json {
		return p.writeJSON(topicRow{Topic: pos[0], Partitions: parts, ReplicationFactor: factor})
	}
	fmt.Fprintf(stdout, "created topic %s (partitions %d, replication factor %d)\n", pos[0], parts, factor)
	return nil
}

// topicRow is one topic in topic list -o json.
type topicRow struct {
	Topic             string `json:"topic"`
	Partitions        int    `json:"partitions"`
	ReplicationFactor int    `json:"replication_factor"`
	Internal          bool   `json:"internal"`
}

func topicList(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newToolFlags("topic list", "varve topic list [--internal] [-o text|json]", "  varve topic list\n  varve topic list -o json\n").withOutput()
	internal := fs.Bool("internal", false, "include internal topics (__consumer_offsets)")
	if _, err := fs.parse(args, 0, stdout); err != nil {
		return helped(err)
	}
	cl, adm, err := fs.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	list := adm.ListTopics
	if *internal {
		list = adm.ListTopicsWithInternal
	}
	tds, err := list(ctx)
	if err != nil {
		return err
	}
	rows := []topicRow{}
	for _, td := range tds.Sorted() {
		rows = append(rows, topicRow{td.Topic, len(td.Partitions), td.Partitions.NumReplicas(), td.IsInternal})
	}
	p := fs.printer(stdout)
	if p.json {
		return p.writeJSON(rows)
	}
	table := make([][]string, len(rows))
	for i, r := range rows {
		table[i] = []string{r.Topic, strconv.Itoa(r.Partitions), strconv.Itoa(r.ReplicationFactor)}
	}
	p.table([]string{"TOPIC", "PARTITIONS", "REPLICATION"}, table)
	return nil
}

// topicDescription is topic describe -o json.
type topicDescription struct {
	Topic             string            `json:"topic"`
	ID                string            `json:"id"`
	Internal          bool              `json:"internal"`
	ReplicationFactor int               `json:"replication_factor"`
	Partitions        []partitionDetail `json:"partitions"`
	Configs           []configEntry     `json:"configs"`
}

type partitionDetail struct {
	Partition      int32   `json:"partition"`
	Leader         int32   `json:"leader"`
	LeaderEpoch    int32   `json:"leader_epoch"`
	Replicas       []int32 `json:"replicas"`
	ISR            []int32 `json:"isr"`
	Offline        []int32 `json:"offline_replicas"`
	LogStartOffset int64   `json:"log_start_offset"`
	HighWatermark  int64   `json:"high_watermark"`
	Error          string  `json:"error,omitempty"`
}

type configEntry struct {
	Name   string  `json:"name"`
	Value  *string `json:"value"` // null when sensitive
	Source string  `json:"source"`
}

func topicDescribe(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newToolFlags("topic describe", "varve topic describe NAME [--all-configs] [-o text|json]",
		"  varve topic describe demo\n  varve topic describe demo --all-configs -o json\n").withOutput()
	all := fs.Bool("all-configs", false, "list every config, not only those set on the topic")
	pos, err := fs.parse(args, 1, stdout)
	if err != nil {
		return helped(err)
	}
	name := pos[0]
	cl, adm, err := fs.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	td, err := client.Topic(ctx, adm, name)
	if err != nil {
		return err
	}
	bounds, err := client.OffsetSpec{Kind: client.OffsetBeginning}.Resolve(ctx, adm, name)
	if err != nil {
		return err
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, name)
	if err != nil {
		return fmt.Errorf("describe configs of %q: %w", name, err)
	}
	d := topicDescription{Topic: name, ID: kafkaUUID(td.ID), Internal: td.IsInternal, ReplicationFactor: td.Partitions.NumReplicas(),
		Partitions: []partitionDetail{}, Configs: []configEntry{}}
	for _, pd := range td.Partitions.Sorted() {
		b := bounds[pd.Partition]
		row := partitionDetail{Partition: pd.Partition, Leader: pd.Leader, LeaderEpoch: pd.LeaderEpoch,
			Replicas: nonNil(pd.Replicas), ISR: nonNil(pd.ISR), Offline: nonNil(pd.OfflineReplicas),
			LogStartOffset: b.Start, HighWatermark: b.End}
		if pd.Err != nil {
			row.Error = pd.Err.Error()
		}
		d.Partitions = append(d.Partitions, row)
	}
	for _, rc := range rcs {
		if rc.Err != nil {
			return fmt.Errorf("describe configs of %q: %w", name, kadmErr(rc.Err, rc.ErrMessage))
		}
		for _, c := range rc.Configs {
			if *all || c.Source == kmsg.ConfigSourceDynamicTopicConfig {
				d.Configs = append(d.Configs, configEntry{Name: c.Key, Value: c.Value, Source: c.Source.String()})
			}
		}
	}
	sort.Slice(d.Configs, func(i, j int) bool { return d.Configs[i].Name < d.Configs[j].Name })

	p := fs.printer(stdout)
	if p.json {
		return p.writeJSON(d)
	}
	p.fields([2]string{"topic", d.Topic}, [2]string{"id", d.ID},
		[2]string{"partitions", strconv.Itoa(len(d.Partitions))},
		[2]string{"replication factor", strconv.Itoa(d.ReplicationFactor)})
	var rows [][]string
	for _, r := range d.Partitions {
		rows = append(rows, []string{strconv.Itoa(int(r.Partition)), strconv.Itoa(int(r.Leader)), strconv.Itoa(int(r.LeaderEpoch)),
			ids(r.Replicas), ids(r.ISR), ids(r.Offline), strconv.FormatInt(r.LogStartOffset, 10), strconv.FormatInt(r.HighWatermark, 10), r.Error})
	}
	p.table([]string{"PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "OFFLINE", "LOG-START", "HIGH-WATERMARK", "ERROR"}, rows)
	if len(d.Configs) > 0 {
		rows = nil
		for _, c := range d.Configs {
			v := "(sensitive)"
			if c.Value != nil {
				v = *c.Value
			}
			rows = append(rows, []string{c.Name, v, c.Source})
		}
		p.table([]string{"CONFIG", "VALUE", "SOURCE"}, rows)
	}
	return nil
}

func topicDelete(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newToolFlags("topic delete", "varve topic delete NAME [-o text|json]", "  varve topic delete demo\n").withOutput()
	pos, err := fs.parse(args, 1, stdout)
	if err != nil {
		return helped(err)
	}
	cl, adm, err := fs.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	if _, err := client.Topic(ctx, adm, pos[0]); err != nil {
		return err
	}
	resp, err := adm.DeleteTopic(ctx, pos[0])
	if err != nil {
		return fmt.Errorf("delete topic %q: %w", pos[0], kadmErr(err, resp.ErrMessage))
	}
	if p := fs.printer(stdout); p.json {
		return p.writeJSON(struct {
			Topic   string `json:"topic"`
			Deleted bool   `json:"deleted"`
		}{pos[0], true})
	}
	fmt.Fprintf(stdout, "deleted topic %s\n", pos[0])
	return nil
}

func topicAlterConfig(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newToolFlags("topic alter-config", "varve topic alter-config NAME [-c key=value ...] [--delete-config key ...] [-o text|json]",
		"  varve topic alter-config demo -c retention.ms=3600000\n  varve topic alter-config demo --delete-config retention.ms\n").withOutput()
	var sets, dels stringList
	fs.Var(&sets, "c", "set config `key=value` (repeatable)")
	fs.Var(&dels, "delete-config", "delete config `key` set on the topic, back to its default (repeatable)")
	pos, err := fs.parse(args, 1, stdout)
	if err != nil {
		return helped(err)
	}
	kvs, err := keyValues("-c", sets)
	if err != nil {
		return err
	}
	if len(kvs) == 0 && len(dels) == 0 {
		return usagef("nothing to alter: give -c key=value or --delete-config key")
	}
	var alters []kadm.AlterConfig
	var said []string
	for _, kv := range kvs {
		alters = append(alters, kadm.AlterConfig{Op: kadm.SetConfig, Name: kv[0], Value: kadm.StringPtr(kv[1])})
		said = append(said, "set "+kv[0]+"="+kv[1])
	}
	for _, k := range dels {
		alters = append(alters, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: k})
		said = append(said, "deleted "+k)
	}
	cl, adm, err := fs.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	if _, err := client.Topic(ctx, adm, pos[0]); err != nil {
		return err
	}
	resps, err := adm.AlterTopicConfigs(ctx, alters, pos[0])
	if err != nil {
		return fmt.Errorf("alter configs of %q: %w", pos[0], err)
	}
	for _, r := range resps {
		if r.Err != nil {
			return fmt.Errorf("alter configs of %q: %w", pos[0], kadmErr(r.Err, r.ErrMessage))
		}
	}
	if p := fs.printer(stdout); p.json {
		set := map[string]string{}
		for _, kv := range kvs {
			set[kv[0]] = kv[1]
		}
		return p.writeJSON(struct {
			Topic   string            `json:"topic"`
			Set     map[string]string `json:"set"`
			Deleted []string          `json:"deleted"`
		}{pos[0], set, append([]string{}, dels...)})
	}
	fmt.Fprintf(stdout, "altered topic %s: %s\n", pos[0], strings.Join(said, ", "))
	return nil
}

// kafkaUUID formats a topic id as Kafka's tools print it (Uuid.toString:
// URL-safe base64 without padding), so it can be compared with what
// kafka-topics.sh shows; kadm's String pads standard base64.
func kafkaUUID(id kadm.TopicID) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// ids formats broker ids as 1,2,3.
func ids(v []int32) string {
	s := make([]string, len(v))
	for i, id := range v {
		s[i] = strconv.Itoa(int(id))
	}
	return strings.Join(s, ",")
}

func nonNil(v []int32) []int32 {
	if v == nil {
		return []int32{}
	}
	return v
}
