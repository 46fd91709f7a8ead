package broker

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path"
	"sort"
	"strconv"
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

// loadTopics opens every stored topic's partitions.
func (b *Broker) loadTopics() error {
	recs, err := b.store.topics()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		s, err := resolveTopicSettings(&b.cfg, rec.Configs)
		if err != nil {
			return fmt.Errorf("broker: stored topic %q: %w", rec.Name, err)
		}
		t := &topic{name: rec.Name, id: rec.ID, internal: internalTopic(rec.Name)}
		st := &topicState{configs: rec.Configs, settings: s}
		for i := range rec.Partitions {
			r, err := openLocalReplica(b, rec.Name, i, s)
			if err != nil {
				return err
			}
			st.partitions = append(st.partitions, r)
		}
		t.state.Store(st)
		b.topics[t.name] = t
		b.byID[t.id] = t
	}
	return nil
}

// topicSpec is a topic to create.
type topicSpec struct {
	name              string
	partitions        int32
	replicationFactor int16
	configs           map[string]string
}

// checkTopicSpec validates a creation request without creating anything
// (CreateTopics' validateOnly uses it alone).
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
	if spec.replicationFactor != -1 && spec.replicationFactor != 1 {
		return topicSettings{}, fmt.Errorf("%w: %d, this cluster has 1 broker", ErrInvalidReplication, spec.replicationFactor)
	}
	s, err := resolveTopicSettings(&b.cfg, spec.configs)
	if err != nil {
		return s, err
	}
	b.mu.RLock()
	_, exists := b.topics[spec.name]
	budget := b.checkPartitionBudgetLocked(int(spec.partitions))
	b.mu.RUnlock()
	if exists {
		return s, fmt.Errorf("%w: %q", ErrTopicExists, spec.name)
	}
	return s, budget
}

// createTopic creates a topic: its partitions' directories first, then the
// durable registry entry, then it becomes visible. A crash before the
// registry write leaves empty directories that the next creation reuses.
func (b *Broker) createTopic(spec topicSpec) (*topic, error) {
	s, err := b.checkTopicSpec(&spec)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClusterShuttingDown
	}
	if _, exists := b.topics[spec.name]; exists {
		return nil, fmt.Errorf("%w: %q", ErrTopicExists, spec.name)
	}
	if err := b.checkPartitionBudgetLocked(int(spec.partitions)); err != nil {
		return nil, err
	}
	t := &topic{name: spec.name, id: newTopicID(), internal: internalTopic(spec.name)}
	st := &topicState{configs: spec.configs, settings: s}
	for i := range spec.partitions {
		// A directory left by a topic of the same name that was deleted
		// must not leak its data into the new one.
		if err := b.removePartitionDir(partitionDir(b.cfg.DataDir, spec.name, i)); err != nil {
			return nil, err
		}
		r, err := openLocalReplica(b, spec.name, i, s)
		if err != nil {
			for _, p := range st.partitions {
				_ = p.close()
			}
			return nil, err
		}
		st.partitions = append(st.partitions, r)
	}
	rec := topicRecord{Name: t.name, ID: t.id, Partitions: spec.partitions, Configs: st.configs, CreatedMs: b.cfg.Now().UnixMilli()}
	if err := b.store.putTopic(rec); err != nil {
		for _, p := range st.partitions {
			_ = p.close()
		}
		return nil, err
	}
	t.state.Store(st)
	b.topics[t.name] = t
	b.byID[t.id] = t
	b.logger.Info("created topic", "topic", t.name, "topic_id", t.id.String(), "partitions", spec.partitions)
	return t, nil
}

// deleteTopic removes a topic from the registry (durably, first), then
// closes its partitions and deletes their directories, all under mu: a
// CreateTopics of the same name waits, so it can never create directories
// that this deletion then removes.
func (b *Broker) deleteTopic(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.topics[name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, name)
	}
	if err := b.store.deleteTopic(name); err != nil {
		return err
	}
	delete(b.topics, name)
	delete(b.byID, t.id)
	var errs []error
	for _, p := range t.load().partitions {
		_ = p.log.Close()
		if err := b.removePartitionDir(partitionDir(b.cfg.DataDir, name, p.index)); err != nil {
			errs = append(errs, err)
		}
	}
	b.logger.Info("deleted topic", "topic", name, "topic_id", t.id.String())
	return errors.Join(errs...)
}

// createPartitions grows a topic to total partitions.
func (b *Broker) createPartitions(name string, total int32, validateOnly bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.topics[name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, name)
	}
	cur := t.load()
	have := int32(len(cur.partitions))
	if total <= have || total > maxPartitionsPerTopic {
		return fmt.Errorf("%w: topic %q has %d partitions, asked for %d", ErrInvalidPartitions, name, have, total)
	}
	if err := b.checkPartitionBudgetLocked(int(total - have)); err != nil {
		return err
	}
	if validateOnly {
		return nil
	}
	var added []*localReplica
	for i := have; i < total; i++ {
		if err := b.removePartitionDir(partitionDir(b.cfg.DataDir, name, i)); err != nil {
			return err
		}
		r, err := openLocalReplica(b, name, i, cur.settings)
		if err != nil {
			for _, p := range added {
				_ = p.close()
			}
			return err
		}
		added = append(added, r)
	}
	rec := topicRecord{Name: t.name, ID: t.id, Partitions: total, Configs: cur.configs, CreatedMs: b.cfg.Now().UnixMilli()}
	if err := b.store.putTopic(rec); err != nil {
		for _, p := range added {
			_ = p.close()
		}
		return err
	}
	t.state.Store(&topicState{configs: cur.configs, settings: cur.settings, partitions: append(cur.partitions[:have:have], added...)})
	return nil
}

// alterTopicConfigs replaces a topic's explicit configs with
// change(current), validated first, durably, and applies them to its
// partitions. mu is held across the read, the change and the write, so two
// concurrent alterations cannot lose one another.
func (b *Broker) alterTopicConfigs(name string, change func(map[string]string) (map[string]string, error), validateOnly bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.topics[name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTopic, name)
	}
	cur := t.load()
	configs, err := change(cur.configs)
	if err != nil {
		return err
	}
	s, err := resolveTopicSettings(&b.cfg, configs)
	if err != nil || validateOnly {
		return err
	}
	rec := topicRecord{Name: t.name, ID: t.id, Partitions: int32(len(cur.partitions)), Configs: configs, CreatedMs: b.cfg.Now().UnixMilli()}
	if err := b.store.putTopic(rec); err != nil {
		return err
	}
	t.state.Store(&topicState{configs: configs, settings: s, partitions: cur.partitions})
	for _, p := range cur.partitions {
		if err := p.log.SetConfig(s.log); err != nil {
			return err
		}
	}
	return nil
}

// checkPartitionBudgetLocked refuses adding more partitions than
// Config.MaxPartitions allows in total. mu is held (for reading suffices).
func (b *Broker) checkPartitionBudgetLocked(adding int) error {
	held := 0
	for _, t := range b.topics {
		held += len(t.load().partitions)
	}
	if held+adding > b.cfg.MaxPartitions {
		return fmt.Errorf("%w: %d more partitions would make %d, over this broker's limit of %d", ErrPolicyViolation, adding, held+adding, b.cfg.MaxPartitions)
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
func (b *Broker) lookupTopicID(id topicID) *topic {
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
func (t *topic) partition(i int32) replica {
	if t == nil {
		return nil
	}
	ps := t.load().partitions
	if i < 0 || int(i) >= len(ps) {
		return nil
	}
	return ps[i]
}

// removePartitionDir deletes a partition directory and the files in it
// (partition directories hold no subdirectories), then syncs the parent so
// the removal is durable.
func (b *Broker) removePartitionDir(dir string) error {
	fsys := b.cfg.FS
	names, err := fsys.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("broker: list %s: %w", dir, err)
	}
	for _, n := range names {
		if err := fsys.Remove(path.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("broker: remove %s/%s: %w", dir, n, err)
		}
	}
	if err := fsys.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("broker: remove %s: %w", dir, err)
	}
	return fsys.SyncDir(path.Dir(dir))
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
