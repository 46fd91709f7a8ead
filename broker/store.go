package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// store is the broker's badger database: the topic registry and the
// producer id allocator, written with SyncWrites so an acknowledged
// CreateTopics survives a crash. On a single broker this is the source of
// truth; once the metadata Raft group exists it becomes the local
// materialisation of that group's state (see DESIGN.md).
//
// Keys (format version 1):
//
//	topic/v1/<name>      JSON topicRecord
//	producer-ids/v1      JSON {"next": N}: ids below N may have been handed out
type store struct {
	db *badger.DB
}

const (
	topicKeyPrefix = "topic/v1/"
	producerIDsKey = "producer-ids/v1"
)

// topicRecord is a topic as stored.
type topicRecord struct {
	Name       string            `json:"name"`
	ID         topicID           `json:"id"`
	Partitions int32             `json:"partitions"`
	Configs    map[string]string `json:"configs,omitempty"`
	CreatedMs  int64             `json:"created_ms"`
}

func openStore(dir string, logger *slog.Logger) (*store, error) {
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(badgerLogger{logger}).
		// The registry is tiny: keep badger's memory small so several
		// brokers fit in one test process.
		WithMemTableSize(4 << 20).
		WithValueThreshold(64 << 10).
		WithNumMemtables(2).
		WithValueLogFileSize(16 << 20).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithCompression(options.None).
		WithNumCompactors(2)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("broker: open metadata store: %w", err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

func (s *store) putTopic(t topicRecord) error {
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(topicKeyPrefix+t.Name), v) })
}

func (s *store) deleteTopic(name string) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete([]byte(topicKeyPrefix + name)) })
}

func (s *store) topics() ([]topicRecord, error) {
	var out []topicRecord
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(topicKeyPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var t topicRecord
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &t) }); err != nil {
				return fmt.Errorf("topic record %q: %w", it.Item().Key(), err)
			}
			out = append(out, t)
		}
		return nil
	})
	return out, err
}

// reserveProducerIDs durably moves the allocator past a block of n ids and
// returns the first. Ids are never handed out twice, even across a crash:
// the block is persisted before any id in it is used.
func (s *store) reserveProducerIDs(n int64) (int64, error) {
	var first int64
	err := s.db.Update(func(txn *badger.Txn) error {
		var cur struct {
			Next int64 `json:"next"`
		}
		item, err := txn.Get([]byte(producerIDsKey))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &cur) }); err != nil {
				return err
			}
		}
		first = cur.Next
		cur.Next += n
		v, _ := json.Marshal(cur)
		return txn.Set([]byte(producerIDsKey), v)
	})
	return first, err
}

// badgerLogger adapts badger's printf-style logger to slog, one level down
// (badger is chatty at Info).
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) { b.l.Error("badger", "msg", trim(f, a)) }
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn("badger", "msg", trim(f, a))
}
func (b badgerLogger) Infof(f string, a ...any)  { b.l.Debug("badger", "msg", trim(f, a)) }
func (b badgerLogger) Debugf(f string, a ...any) {}

func trim(f string, a []any) string { return strings.TrimSpace(fmt.Sprintf(f, a...)) }
