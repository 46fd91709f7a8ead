package snapstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/varvelog/varve/partition/vfs"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger discards unless VARVE_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("VARVE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// forEachFS runs body on the real filesystem and on vfs.Mem: the conformance
// half of the tests, which must hold on both.
func forEachFS(t *testing.T, body func(t *testing.T, fsys vfs.FS, dir string)) {
	t.Run("os", func(t *testing.T) { body(t, vfs.OS{}, t.TempDir()+"/snaps") })
	t.Run("mem", func(t *testing.T) { body(t, vfs.NewMem(), "/data/snaps") })
}

func mustOpen(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// testConf is a configuration with every suffrage, so the meta round trip
// covers each.
func testConf() raft.Configuration {
	return raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "a", Address: "10.0.0.1:9093"},
		{Suffrage: raft.Nonvoter, ID: "b", Address: "10.0.0.2:9093"},
		{Suffrage: raft.Staging, ID: "c", Address: "10.0.0.3:9093"},
	}}
}

// payload is deterministic bytes that depend on seed, so one snapshot's
// bytes cannot pass for another's.
func payload(seed, size int) []byte {
	b := make([]byte, size)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// create writes data as a snapshot at (term, index), in uneven pieces as an
// FSM would, closes it and returns its id.
func create(t testing.TB, s *Store, term, index uint64, data []byte) string {
	t.Helper()
	sink := mustCreate(t, s, term, index)
	writePieces(t, sink, data)
	if err := sink.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return sink.ID()
}

func mustCreate(t testing.TB, s *Store, term, index uint64) *Sink {
	t.Helper()
	sink, err := s.Create(raft.SnapshotVersionMax, index, term, testConf(), index/2, nil)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return sink.(*Sink)
}

func writePieces(t testing.TB, w io.Writer, data []byte) {
	t.Helper()
	for i, n := 0, 1; i < len(data); n = n*3 + 1 {
		end := min(i+n, len(data))
		if _, err := w.Write(data[i:end]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		i = end
	}
}

// createRef closes a snapshot at (term, index) that references ref.
func createRef(t testing.TB, s *Store, term, index uint64, ref string, size int64) string {
	t.Helper()
	sink := mustCreate(t, s, term, index)
	if err := sink.Reference(ref, size); err != nil {
		t.Fatalf("Reference: %v", err)
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return sink.ID()
}

// readSnap opens id and reads it whole, asserting the reader yields
// meta.Size bytes.
func readSnap(t testing.TB, s *Store, id string) (*raft.SnapshotMeta, []byte) {
	t.Helper()
	meta, rc, err := s.Open(id)
	if err != nil {
		t.Fatalf("Open(%s): %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", id, err)
	}
	if int64(len(b)) != meta.Size {
		t.Fatalf("read %d bytes, meta.Size %d", len(b), meta.Size)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("close reader: %v", err)
	}
	return meta, b
}

func listIDs(t testing.TB, s *Store) []string {
	t.Helper()
	metas, err := s.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	ids := make([]string, len(metas))
	for i, m := range metas {
		ids[i] = m.ID
	}
	return ids
}

func readDir(t testing.TB, fsys vfs.FS, dir string) []string {
	t.Helper()
	names, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	return names
}

// fakeSource holds referenced contents in memory and records what the store
// asks of it.
type fakeSource struct {
	mu      sync.Mutex
	data    map[string][]byte
	removed []string
	opened  int // readers open now
	failRm  error
	// lie makes Open report a size other than the bytes' length, or the
	// stream differ from it, to test the store's size checks.
	lieSize   int64
	extraTail []byte
}

func newFakeSource() *fakeSource { return &fakeSource{data: map[string][]byte{}} }

func (f *fakeSource) put(ref string, b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data[ref] = b
}

func (f *fakeSource) Open(ref string) (io.ReadCloser, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.data[ref]
	if !ok {
		return nil, 0, fmt.Errorf("fake source: %q: %w", ref, fs.ErrNotExist)
	}
	f.opened++
	size := int64(len(b)) + f.lieSize
	stream := io.MultiReader(bytes.NewReader(b), bytes.NewReader(f.extraTail))
	return &fakeStream{Reader: stream, f: f}, size, nil
}

func (f *fakeSource) Remove(ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failRm != nil {
		return f.failRm
	}
	f.removed = append(f.removed, ref)
	delete(f.data, ref)
	return nil
}

func (f *fakeSource) removedRefs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.removed)
}

func (f *fakeSource) openReaders() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opened
}

type fakeStream struct {
	io.Reader
	f      *fakeSource
	closed bool
}

func (s *fakeStream) Close() error {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if s.closed {
		return errors.New("fake stream closed twice")
	}
	s.closed = true
	s.f.opened--
	return nil
}
