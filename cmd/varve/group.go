package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/varvelog/varve/client"
)

// runGroup is varve group: list, describe, delete, reset-offsets.
func runGroup(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return runSub(ctx, "group", []subcommand{
		{"list", "list consumer groups with their states", groupList},
		{"describe", "a group's members, assignments, committed offsets and lag per partition", groupDescribe},
		{"delete", "delete an empty group and its committed offsets", groupDelete},
		{"reset-offsets", "move an empty group's committed offsets on a topic (dry run unless --execute)", groupResetOffsets},
	}, args, stdin, stdout, stderr)
}

// groupRow is one group in group list -o json.
type groupRow struct {
	Group        string `json:"group"`
	State        string `json:"state"`
	ProtocolType string `json:"protocol_type"`
	Coordinator  int32  `json:"coordinator"`
}

func groupList(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newToolFlags("group list", "varve group list [-o text|json]", "  varve group list\n").withOutput()
	if _, err := fs.parse(args, 0, stdout); err != nil {
		return helped(err)
	}
	cl, adm, err := fs.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		return fmt.Errorf("list groups: %w", err)
	}
	rows := []groupRow{}
	for _, g := range groups.Sorted() {
		rows = append(rows, groupRow{g.Group, g.State, g.ProtocolType, g.Coordinator})
	}
	p := fs.printer(stdout)
	if p.json {
		return p.writeJSON(rows)
	}
	var table [][]string
	for _, r := range rows {
		table = append(table, []string{r.Group, r.State, r.ProtocolType, strconv.Itoa(int(r.Coordinator))})
	}
	p.table([]string{"GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATOR"}, table)
	return nil
}

// groupDescription is group describe -o json.
type groupDescription struct {
	Group        string        `json:"group"`
	State        string        `json:"state"`
	ProtocolType string        `json:"protocol_type"`
	Protocol     string        `json:"protocol"`
	Coordinator  int32         `json:"coordinator"`
	Members      []groupMember `json:"members"`
	Offsets      []groupOffset `json:"offsets"`
	TotalLag     int64         `json:"total_lag"`
}

type groupMember struct {
	MemberID   string  `json:"member_id"`
	InstanceID *string `json:"instance_id"`
	ClientID   string  `json:"client_id"`
	Host       string  `json:"host"`
	Assignment string  `json:"assignment"` // topic:0,1;other:2
}

type groupOffset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Committed *int64 `json:"committed"` // null: nothing committed
	LogEnd    int64  `json:"log_end"`
	Lag       *int64 `json:"lag"` // null: unknown
	Member    string `json:"member"`
	Error     string `json:"error,omitempty"`
}

func groupDescribe(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newToolFlags("group describe", "varve group describe GROUP [-o text|json]", "  varve group describe billing\n").withOutput()
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
	var l kadm.DescribedGroupLag
	err = client.Retry(ctx, func() error {
		lags, err := adm.Lag(ctx, name)
		if err != nil {
			return err
		}
		var ok bool
		if l, ok = lags[name]; !ok {
			return errors.New("no answer")
		}
		return l.Error()
	})
	if err != nil {
		return fmt.Errorf("describe group %q: %w", name, err)
	}
	if (l.State == "Dead" || l.State == "") && len(l.Members) == 0 && len(l.Lag) == 0 {
		return fmt.Errorf("group %q does not exist", name)
	}
	d := groupDescription{Group: name, State: l.State, ProtocolType: l.ProtocolType, Protocol: l.Protocol,
		Coordinator: l.Coordinator.NodeID, Members: []groupMember{}, Offsets: []groupOffset{}}
	for _, m := range l.Members {
		d.Members = append(d.Members, groupMember{MemberID: m.MemberID, InstanceID: m.InstanceID, ClientID: m.ClientID,
			Host: m.ClientHost, Assignment: assignment(m)})
	}
	for _, ml := range l.Lag.Sorted() {
		o := groupOffset{Topic: ml.Topic, Partition: ml.Partition, LogEnd: ml.End.Offset}
		if ml.Commit.At >= 0 {
			at := ml.Commit.At
			o.Committed = &at
		}
		if ml.Lag >= 0 {
			lag := ml.Lag
			o.Lag = &lag
			d.TotalLag += lag
		}
		if ml.Member != nil {
			o.Member = ml.Member.MemberID
		}
		if ml.Err != nil {
			o.Error = ml.Err.Error()
		}
		d.Offsets = append(d.Offsets, o)
	}

	p := fs.printer(stdout)
	if p.json {
		return p.writeJSON(d)
	}
	protocol := d.ProtocolType
	if d.Protocol != "" {
		protocol += "/" + d.Protocol
	}
	p.fields([2]string{"group", d.Group}, [2]string{"state", d.State}, [2]string{"protocol", protocol},
		[2]string{"coordinator", strconv.Itoa(int(d.Coordinator))}, [2]string{"members", strconv.Itoa(len(d.Members))},
		[2]string{"total lag", strconv.FormatInt(d.TotalLag, 10)})
	if len(d.Members) > 0 {
		var rows [][]string
		for _, m := range d.Members {
			rows = append(rows, []string{m.MemberID, m.ClientID, m.Host, m.Assignment})
		}
		p.table([]string{"MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT"}, rows)
	}
	var rows [][]string
	for _, o := range d.Offsets {
		rows = append(rows, []string{o.Topic, strconv.Itoa(int(o.Partition)), optInt(o.Committed),
			strconv.FormatInt(o.LogEnd, 10), optInt(o.Lag), o.Member, o.Error})
	}
	p.table([]string{"TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "MEMBER", "ERROR"}, rows)
	return nil
}

// assignment formats a consumer member's assignment as topic:0,1;other:2.
func assignment(m kadm.DescribedGroupMember) string {
	c, ok := m.Assigned.AsConsumer()
	if !ok {
		return ""
	}
	var parts []string
	for _, t := range c.Topics {
		ps := append([]int32(nil), t.Partitions...)
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		parts = append(parts, t.Topic+":"+ids(ps))
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

func optInt(v *int64) string {
	if v == nil {
		return ""
	}
	return strconv.FormatInt(*v, 10)
}

func groupDelete(ctx context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newToolFlags("group delete", "varve group delete GROUP [-o text|json]", "  varve group delete billing\n").withOutput()
	pos, err := fs.parse(args, 1, stdout)
	if err != nil {
		return helped(err)
	}
	cl, adm, err := fs.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	var resp kadm.DeleteGroupResponse
	err = client.Retry(ctx, func() (err error) {
		resp, err = adm.DeleteGroup(ctx, pos[0])
		return err
	})
	if err != nil {
		return fmt.Errorf("delete group %q: %w", pos[0], kadmErr(err, resp.ErrMessage))
	}
	if p := fs.printer(stdout); p.json {
		return p.writeJSON(struct {
			Group   string `json:"group"`
			Deleted bool   `json:"deleted"`
		}{pos[0], true})
	}
	fmt.Fprintf(stdout, "deleted group %s\n", pos[0])
	return nil
}

// offsetReset is one partition in group reset-offsets -o json.
type offsetReset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Current   *int64 `json:"current"` // null: nothing committed
	New       int64  `json:"new"`
}

func groupResetOffsets(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newToolFlags("group reset-offsets",
		"varve group reset-offsets GROUP -t TOPIC --to-earliest|--to-latest|--to-offset N|--to-time TIME [--execute] [-o text|json]",
		"  varve group reset-offsets billing -t demo --to-earliest            # dry run: prints the plan\n"+
			"  varve group reset-offsets billing -t demo --to-time 1700000000000 --execute\n"+
			"  varve group reset-offsets billing -t demo --to-time 2026-11-28T09:00:00Z --execute\n"+
			"  varve group reset-offsets billing -t demo --to-time -1h --execute     # an hour back\n").withOutput()
	topic := fs.String("t", "", "`TOPIC` whose partitions to reset (required)")
	earliest := fs.Bool("to-earliest", false, "reset to the log start offsets")
	latest := fs.Bool("to-latest", false, "reset to the end offsets (skip everything)")
	toOffset := fs.Int64("to-offset", -1, "reset to offset `N` (clamped to each partition's start and end)")
	toTime := fs.String("to-time", "", "reset to the first record at or after `TIME`: Unix milliseconds, an RFC 3339 time (2026-11-28T09:00:00Z) or -DURATION (-1h: an hour ago)")
	execute := fs.Bool("execute", false, "commit the new offsets (without it: a dry run that changes nothing)")
	pos, err := fs.parse(args, 1, stdout)
	if err != nil {
		return helped(err)
	}
	name := pos[0]
	var specs []client.OffsetSpec
	var timeErr error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "to-earliest":
			if *earliest {
				specs = append(specs, client.OffsetSpec{Kind: client.OffsetBeginning})
			}
		case "to-latest":
			if *latest {
				specs = append(specs, client.OffsetSpec{Kind: client.OffsetEnd})
			}
		case "to-offset":
			specs = append(specs, client.OffsetSpec{Kind: client.OffsetExact, N: *toOffset})
		case "to-time":
			ms, err := client.ParseTime(*toTime, time.Now())
			timeErr = err
			specs = append(specs, client.OffsetSpec{Kind: client.OffsetTime, N: ms})
		}
	})
	switch {
	case *topic == "":
		return usagef("-t TOPIC is required")
	case len(specs) != 1:
		return usagef("give exactly one of --to-earliest, --to-latest, --to-offset N, --to-time TIME")
	case timeErr != nil:
		return usagef("--to-time: %v", timeErr)
	case specs[0].N < 0:
		return usagef("--to-offset takes an offset >= 0")
	}
	cl, adm, err := fs.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	plan, newOffsets, err := planReset(ctx, adm, name, *topic, specs[0])
	if err != nil {
		return err
	}
	if *execute {
		err := client.Retry(ctx, func() error {
			resps, err := adm.CommitOffsets(ctx, name, newOffsets)
			if err == nil {
				err = resps.Error()
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("commit offsets of group %q: %w", name, err)
		}
	}

	p := fs.printer(stdout)
	if p.json {
		if err := p.writeJSON(struct {
			Group    string        `json:"group"`
			Executed bool          `json:"executed"`
			Offsets  []offsetReset `json:"offsets"`
		}{name, *execute, plan}); err != nil {
			return err
		}
	} else {
		var rows [][]string
		for _, r := range plan {
			rows = append(rows, []string{r.Topic, strconv.Itoa(int(r.Partition)), optInt(r.Current), strconv.FormatInt(r.New, 10)})
		}
		p.table([]string{"TOPIC", "PARTITION", "CURRENT", "NEW"}, rows)
	}
	if *execute {
		fmt.Fprintf(stderr, "committed new offsets for %d partitions of group %s\n", len(plan), name)
	} else {
		fmt.Fprintf(stderr, "dry run: nothing committed (add --execute to commit these offsets)\n")
	}
	return nil
}

// planReset checks that group is empty (or does not exist yet) and
// resolves spec in every partition of topic: the plan to print, and the
// offsets to commit.
func planReset(ctx context.Context, adm *kadm.Client, name, topic string, spec client.OffsetSpec) ([]offsetReset, kadm.Offsets, error) {
	var g kadm.DescribedGroup
	err := client.Retry(ctx, func() error {
		described, err := adm.DescribeGroups(ctx, name)
		if err != nil {
			return err
		}
		g = described[name]
		return kadmErr(g.Err, g.ErrMessage)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("describe group %q: %w", name, err)
	}
	if g.State != "Empty" && g.State != "Dead" && g.State != "" {
		return nil, nil, fmt.Errorf("group %q is %s with %d members: offsets can only be reset while it is empty (stop its consumers)", name, g.State, len(g.Members))
	}
	if _, err := client.Topic(ctx, adm, topic); err != nil {
		return nil, nil, err
	}
	resolved, err := spec.Resolve(ctx, adm, topic)
	if err != nil {
		return nil, nil, err
	}
	var committed kadm.OffsetResponses
	err = client.Retry(ctx, func() (err error) {
		committed, err = adm.FetchOffsets(ctx, name)
		if err == nil {
			err = committed.Error()
		}
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("fetch offsets of group %q: %w", name, err)
	}
	plan := []offsetReset{}
	newOffsets := kadm.Offsets{}
	for p, o := range resolved {
		r := offsetReset{Topic: topic, Partition: p, New: o.At}
		if c, ok := committed.Lookup(topic, p); ok && c.At >= 0 {
			at := c.At
			r.Current = &at
		}
		plan = append(plan, r)
		newOffsets.Add(kadm.Offset{Topic: topic, Partition: p, At: o.At, LeaderEpoch: -1})
	}
	sort.Slice(plan, func(i, j int) bool { return plan[i].Partition < plan[j].Partition })
	return plan, newOffsets, nil
}
