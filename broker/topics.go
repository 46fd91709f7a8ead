package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/varvelog/varve/broker/metadata"
)

// Errors of topic management, mapped to Kafka codes in errors.go.
var (
	ErrTopicExists         = errors.New("broker: topic already exists")
	ErrUnknownTopic        = errors.New("broker: unknown topic or partition")
	ErrInvalidTopic        = errors.New("broker: invalid topic name")
	ErrInvalidPartitions   = errors.New("broker: invalid number of partitions")
	ErrInvalidReplication  = errors.New("broker: invalid replication factor")
	ErrPolicyViolation     = errors.New("broker: not allowed")
	ErrClusterShuttingDown = errors.New("broker: shutting down")
)

// maxPartitionsPerTopic bounds CreateTopics and CreatePartitions, so one
// request cannot make the broker open a million directories.
const maxPartitionsPerTopic = 10000

// validateTopicName applies Kafka's rule: 1-249 characters of
// [a-zA-Z0-9._-], and not "." or "..". Names become directory names, so
// this is also what keeps a name from escaping the data directory.
func validateTopicName(name string) error {
	if name == "" || len(name) > 249 || name == "." || name == ".." {
		return fmt.Errorf("%w: %q", ErrInvalidTopic, name)
	}
	for _, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("%w: %q has %q", ErrInvalidTopic, name, c)
		}
	}
	return nil
}

// internalTopic reports Kafka's internal topics, which clients must see
// marked internal and must not write to directly.
func internalTopic(name string) bool {
	return name == "__consumer_offsets" || name == "__transaction_state"
}

// topicSpec is a topic to create.
type topicSpec struct {
	name              string
	partitions        int32
	replicationFactor int16
	assignment        [][]int32
	configs           map[string]string
}

// checkTopicSpec validates a creation request as far as this broker can
// without the metadata leader (CreateTopics' validateOnly uses it alone).
func (b *Broker) checkTopicSpec(spec *topicSpec) (topicSettings, error) {
	if err := validateTopicName(spec.name); err != nil {
		return topicSettings{}, err
	}
	if spec.partitions == -1 {
		spec.partitions = b.cfg.DefaultPartitions
	}
	if spec.partitions < 1 || spec.partitions > maxPartitionsPerTopic {
		return topicSettings{}, fmt.Errorf("%w: %d (1 to %d)", ErrInvalidPartitions, spec.partitions, maxPartitionsPerTopic)
	}
	st := b.meta.State()
	brokers := int16(len(st.Brokers))
	if spec.replicationFactor == -1 {
		spec.replicationFactor = min(brokers, 3)
	}
	if spec.assignment == nil && (spec.replicationFactor < 1 || spec.replicationFactor > brokers) {
		return topicSettings{}, fmt.Errorf("%w: %d, this cluster has %d brokers", ErrInvalidReplication, spec.replicationFactor, brokers)
	}
	s, err := resolveTopicSettings(&b.cfg, spec.configs)
	if err != nil {
		return s, err
	}
	if _, exists := st.Topics[spec.name]; exists {
		return s, fmt.Errorf("%w: %q", ErrTopicExists, spec.name)
	}
	return s, b.checkPartitionBudget(int(spec.partitions))
}

// createTopic creates a topic through the metadata group; its replicas
// start as every broker's reconciler sees it. Returns once this broker's
// metadata has it (leaders are elected moments later).
func (b *Broker) createTopic(ctx context.Context, spec topicSpec) (*topic, error) {
	if _, err := b.checkTopicSpec(&spec); err != nil {
		return nil, err
	}
	res, err := b.propose(ctx, metadata.CreateTopic{
		Name:              spec.name,
		ID:                newTopicID(),
		Partitions:        spec.partitions,
		ReplicationFactor: spec.replicationFactor,
		Assignment:        spec.assignment,
		Configs:           spec.configs,
		CreatedMs:         b.cfg.Now().UnixMilli(),
	})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return nil, err
	}
	b.logger.Info("created topic", "topic", spec.name, "partitions", spec.partitions, "replication_factor", spec.replicationFactor)
	t, err := b.waitTopic(ctx, spec.name)
	if err == nil {
		b.waitLeaders(ctx, spec.name, 15*time.Second)
	}
	return t, err
}

// waitLeaders waits, at most limit or until ctx ends, for every partition
// of a topic to have a published leader, so that a client producing
// right after CreateTopics finds one. Kafka's controller names leaders in
// the creation itself; here they are elected, which takes a moment.
func (b *Broker) waitLeaders(ctx context.Context, name string, limit time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		st := b.meta.State()
		mt, ok := st.Topics[name]
		if !ok {
			return
		}
		missing := false
		for _, p := range mt.Partitions {
			missing = missing || p.Leader < 0
		}
		if !missing {
			_ = b.waitReconciled(ctx, st.Index) // Metadata answers from the reconciled view
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-b.meta.Changed():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitTopic waits until the reconciler has published a topic the local
// metadata holds.
func (b *Broker) waitTopic(ctx context.Context, name string) (*topic, error) {
	for {
		if t := b.lookupTopic(name); t != nil {
			return t, nil
		}
		if _, ok := b.meta.State().Topics[name]; !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, name)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// deleteTopic removes a topic from the metadata; every broker's
// reconciler then stops and deletes its replicas.
func (b *Broker) deleteTopic(ctx context.Context, name string) error {
	res, err := b.propose(ctx, metadata.DeleteTopic{Name: name})
	if err == nil {
		err = res.Err
	}
	if err == nil {
		b.logger.Info("deleted topic", "topic", name)
	}
	return err
}

// createPartitions grows a topic to total partitions.
func (b *Broker) createPartitions(ctx context.Context, name string, total int32, assignment [][]int32, validateOnly bool) error {
	mt, ok := b.meta.State().Topics[name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, name)
	}
	have := int32(len(mt.Partitions))
	if total <= have || total > maxPartitionsPerTopic {
		return fmt.Errorf("%w: topic %q has %d partitions, asked for %d", ErrInvalidPartitions, name, have, total)
	}
	if err := b.checkPartitionBudget(int(total - have)); err != nil {
		return err
	}
	if validateOnly {
		return nil
	}
	res, err := b.propose(ctx, metadata.CreatePartitions{Name: name, Total: total, Assignment: assignment})
	if err == nil {
		err = res.Err
	}
	if err == nil {
		b.waitLeaders(ctx, name, 15*time.Second)
	}
	return err
}

// alterTopicConfigs replaces a topic's explicit configs with
// change(current), validated here first. Two concurrent alterations of one
// topic race: the later proposal wins whole.
func (b *Broker) alterTopicConfigs(ctx context.Context, name string, change func(map[string]string) (map[string]string, error), validateOnly bool) error {
	mt, ok := b.meta.State().Topics[name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, name)
	}
	configs, err := change(mt.Configs)
	if err != nil {
		return err
	}
	if _, err := resolveTopicSettings(&b.cfg, configs); err != nil || validateOnly {
		return err
	}
	res, err := b.propose(ctx, metadata.AlterConfigs{Name: name, Configs: configs})
	if err == nil {
		err = res.Err
	}
	return err
}

// checkPartitionBudget refuses adding more partitions than
// Config.MaxPartitions allows in the cluster.
func (b *Broker) checkPartitionBudget(adding int) error {
	held := 0
	for _, t := range b.meta.State().Topics {
		held += len(t.Partitions)
	}
	if held+adding > b.cfg.MaxPartitions {
		return fmt.Errorf("%w: %d more partitions would make %d, over the limit of %d", ErrPolicyViolation, adding, held+adding, b.cfg.MaxPartitions)
	}
	return nil
}

// lookupTopic finds a topic by name.
func (b *Broker) lookupTopic(name string) *topic {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.topics[name]
}

// lookupTopicID finds a topic by id.
func (b *Broker) lookupTopicID(id metadata.TopicID) *topic {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.byID[id]
}

// topicNames lists every topic, sorted.
func (b *Broker) topicNames() []string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	names := make([]string, 0, len(b.topics))
	for n := range b.topics {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// partition returns a topic's partition as the handlers see it, or nil
// when the topic (t may be nil) or the partition does not exist.
func (t *topic) partition(i int32) *raftReplica {
	if t == nil {
		return nil
	}
	ps := t.load().partitions
	if i < 0 || int(i) >= len(ps) {
		return nil
	}
	return ps[i]
}

func parseHostPort(s string) (hostPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return hostPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return hostPort{}, fmt.Errorf("port %q: %w", port, err)
	}
	return hostPort{host: host, port: int32(p)}, nil
}
