package snapstore

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/varvelog/varve/partition/vfs"
)

func TestRoundTrip(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		s := mustOpen(t, Options{Dir: dir, FS: fsys, Retain: 10})
		sizes := []int{0, 1, 3<<20 + 7}
		ids := make([]string, len(sizes))
		for i, size := range sizes {
			ids[i] = create(t, s, 3, uint64(10+i), payload(i, size))
		}
		for i, size := range sizes {
			meta, got := readSnap(t, s, ids[i])
			want := raft.SnapshotMeta{
				Version:            raft.SnapshotVersionMax,
				ID:                 ids[i],
				Index:              uint64(10 + i),
				Term:               3,
				Configuration:      testConf(),
				ConfigurationIndex: uint64(10+i) / 2,
				Size:               int64(size),
			}
			if !reflect.DeepEqual(*meta, want) {
				t.Errorf("size %d: meta\n got %+v\nwant %+v", size, *meta, want)
			}
			if !bytes.Equal(got, payload(i, size)) {
				t.Errorf("size %d: data differs", size)
			}
		}
		// List carries the same metas, newest first.
		metas, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(metas) != 3 || metas[0].ID != ids[2] || metas[0].Size != int64(sizes[2]) ||
			!reflect.DeepEqual(metas[0].Configuration, testConf()) {
			t.Fatalf("List: %+v", metas)
		}
		// A reopened store reads the same.
		s2 := mustOpen(t, Options{Dir: dir, FS: fsys, Retain: 10})
		if got := listIDs(t, s2); !slices.Equal(got, []string{ids[2], ids[1], ids[0]}) {
			t.Fatalf("after reopen List = %v", got)
		}
		if _, got := readSnap(t, s2, ids[1]); !bytes.Equal(got, payload(1, 1)) {
			t.Fatal("after reopen: data differs")
		}
	})
}

func TestEmptyConfiguration(t *testing.T) {
	s := mustOpen(t, Options{Dir: "/s", FS: vfs.NewMem()})
	sink, err := s.Create(1, 5, 1, raft.Configuration{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	meta, _ := readSnap(t, s, sink.ID())
	if len(meta.Configuration.Servers) != 0 || meta.ConfigurationIndex != 0 || meta.Size != 0 {
		t.Fatalf("meta %+v", meta)
	}
}

func TestUnsupportedVersion(t *testing.T) {
	s := mustOpen(t, Options{Dir: "/s", FS: vfs.NewMem()})
	for _, v := range []raft.SnapshotVersion{0, raft.SnapshotVersionMax + 1} {
		if _, err := s.Create(v, 1, 1, raft.Configuration{}, 0, nil); !errors.Is(err, ErrUnsupportedVersion) {
			t.Errorf("Create(version %d) = %v, want ErrUnsupportedVersion", v, err)
		}
	}
}

func TestOptions(t *testing.T) {
	if _, err := Open(Options{FS: vfs.NewMem()}); err == nil {
		t.Error("Open without Dir succeeded")
	}
	if _, err := Open(Options{Dir: "/s", FS: vfs.NewMem(), Retain: -1}); err == nil {
		t.Error("Open with Retain -1 succeeded")
	}
	s := mustOpen(t, Options{Dir: "/s", FS: vfs.NewMem()})
	if s.retain != DefaultRetain {
		t.Errorf("retain %d, want %d", s.retain, DefaultRetain)
	}
}

func TestReference(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		src := newFakeSource()
		want := payload(7, 100_000)
		src.put("pin-1", want)
		src.put("pin-empty", nil)
		s := mustOpen(t, Options{Dir: dir, FS: fsys, Source: src, Retain: 5})
		id := createRef(t, s, 2, 40, "pin-1", int64(len(want)))
		empty := createRef(t, s, 2, 41, "pin-empty", 0)

		// Nothing but the meta was written.
		if got := readDir(t, fsys, path.Join(dir, id)); !slices.Equal(got, []string{metaName}) {
			t.Fatalf("snapshot directory holds %v", got)
		}
		meta, got := readSnap(t, s, id)
		if meta.Size != int64(len(want)) || meta.Index != 40 || meta.Term != 2 || !bytes.Equal(got, want) {
			t.Fatalf("reference read back meta %+v, %d bytes", meta, len(got))
		}
		if _, got := readSnap(t, s, empty); len(got) != 0 {
			t.Fatalf("empty reference read %d bytes", len(got))
		}
		if n := src.openReaders(); n != 0 {
			t.Fatalf("%d source streams left open", n)
		}
		refs, err := s.References()
		if err != nil || !slices.Equal(refs, []string{"pin-empty", "pin-1"}) {
			t.Fatalf("References = %v, %v", refs, err)
		}
		if got := src.removedRefs(); len(got) != 0 {
			t.Fatalf("removed %v before any reap", got)
		}
	})
}

func TestReferenceMisuse(t *testing.T) {
	src := newFakeSource()
	s := mustOpen(t, Options{Dir: "/s", FS: vfs.NewMem(), Source: src})

	sink := mustCreate(t, s, 1, 1)
	if _, err := sink.Write(nil); err != nil {
		t.Fatal(err)
	}
	if err := sink.Reference("r", 1); !errors.Is(err, ErrMixed) {
		t.Errorf("Reference after Write = %v, want ErrMixed", err)
	}
	_ = sink.Cancel()

	sink = mustCreate(t, s, 1, 2)
	if err := sink.Reference("r", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("x")); !errors.Is(err, ErrMixed) {
		t.Errorf("Write after Reference = %v, want ErrMixed", err)
	}
	if err := sink.Reference("r2", 1); !errors.Is(err, ErrMixed) {
		t.Errorf("second Reference = %v, want ErrMixed", err)
	}
	_ = sink.Cancel()

	sink = mustCreate(t, s, 1, 3)
	for _, bad := range []struct {
		ref  string
		size int64
	}{{"", 1}, {"r", -1}} {
		if err := sink.Reference(bad.ref, bad.size); err == nil {
			t.Errorf("Reference(%q, %d) succeeded", bad.ref, bad.size)
		}
	}
	_ = sink.Cancel()

	noSrc := mustOpen(t, Options{Dir: "/nosrc", FS: vfs.NewMem()})
	sink = mustCreate(t, noSrc, 1, 1)
	if err := sink.Reference("r", 1); !errors.Is(err, ErrNoSource) {
		t.Errorf("Reference without a Source = %v, want ErrNoSource", err)
	}
	_ = sink.Cancel()
}

// The Source's stream must have the size recorded at Reference: raft sends
// meta.Size bytes to followers and a different length would truncate or
// misframe what they install.
func TestReferenceSizeChecked(t *testing.T) {
	src := newFakeSource()
	src.put("r", payload(1, 1000))
	s := mustOpen(t, Options{Dir: "/s", FS: vfs.NewMem(), Source: src})
	id := createRef(t, s, 1, 1, "r", 1000)

	src.lieSize = 1 // Open reports 1001
	if _, _, err := s.Open(id); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open with a source size mismatch = %v, want ErrCorrupt", err)
	}
	src.lieSize = 0
	src.extraTail = []byte("more") // the stream is longer than it claims
	_, rc, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reading a too-long reference = %v, want ErrCorrupt", err)
	}
	rc.Close()
	src.extraTail = nil

	src.put("r", payload(1, 999)) // shorter than recorded, and says so
	if _, _, err := s.Open(id); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open of a shrunk reference = %v, want ErrCorrupt", err)
	}
	if n := src.openReaders(); n != 0 {
		t.Fatalf("%d source streams left open", n)
	}
}

func TestRetention(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		src := newFakeSource()
		s := mustOpen(t, Options{Dir: dir, FS: fsys, Source: src}) // Retain 2
		var ids []string
		for i := range 5 {
			ref := string(rune('a' + i))
			src.put(ref, payload(i, 10))
			ids = append(ids, createRef(t, s, 1, uint64(100+i), ref, 10))
		}
		ids = append(ids, create(t, s, 1, 200, payload(9, 50)))
		ids = append(ids, create(t, s, 1, 201, payload(10, 50)))
		if got := listIDs(t, s); !slices.Equal(got, []string{ids[6], ids[5]}) {
			t.Fatalf("List = %v", got)
		}
		// Reaping went oldest first and released every reference.
		if got := src.removedRefs(); !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
			t.Fatalf("removed %v", got)
		}
		if got := readDir(t, fsys, dir); !slices.Equal(got, []string{ids[5], ids[6]}) {
			t.Fatalf("directory holds %v", got)
		}
		// A store reopened with a lower Retain reaps at Open.
		s1 := mustOpen(t, Options{Dir: dir, FS: fsys, Source: src, Retain: 1})
		if got := listIDs(t, s1); !slices.Equal(got, []string{ids[6]}) {
			t.Fatalf("Retain 1: List = %v", got)
		}
		if got := readDir(t, fsys, dir); !slices.Equal(got, []string{ids[6]}) {
			t.Fatalf("Retain 1: directory holds %v", got)
		}
	})
}

// A Remove failure is logged, not fatal: the new snapshot is durable, and
// the next Open releases the reference.
func TestRetentionRemoveFails(t *testing.T) {
	fsys := vfs.NewMem()
	src := newFakeSource()
	s := mustOpen(t, Options{Dir: "/s", FS: fsys, Source: src, Retain: 1})
	src.put("a", []byte("aa"))
	src.put("b", []byte("bb"))
	a := createRef(t, s, 1, 1, "a", 2)
	src.failRm = errors.New("busy")
	b := createRef(t, s, 1, 2, "b", 2)
	if got := listIDs(t, s); !slices.Equal(got, []string{b}) {
		t.Fatalf("List = %v", got)
	}
	if got := readDir(t, fsys, "/s"); !slices.Equal(got, []string{a + reapSuffix, b}) {
		t.Fatalf("directory holds %v", got)
	}
	src.failRm = nil
	s = mustOpen(t, Options{Dir: "/s", FS: fsys, Source: src, Retain: 1})
	if got := src.removedRefs(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("removed %v", got)
	}
	if got := readDir(t, fsys, "/s"); !slices.Equal(got, []string{b}) {
		t.Fatalf("after reopen directory holds %v", got)
	}
	_ = s
}

// A snapshot open for reading (raft streaming it to a follower) is not
// reaped under the reader; it goes when the reader closes.
func TestReaderHoldsOffReap(t *testing.T) {
	src := newFakeSource()
	src.put("a", payload(1, 100))
	fsys := vfs.NewMem()
	s := mustOpen(t, Options{Dir: "/s", FS: fsys, Source: src, Retain: 1})
	a := createRef(t, s, 1, 1, "a", 100)
	_, rc, err := s.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	b := create(t, s, 1, 2, []byte("b"))
	if got := listIDs(t, s); !slices.Equal(got, []string{b}) {
		t.Fatalf("List = %v", got)
	}
	if got := src.removedRefs(); len(got) != 0 {
		t.Fatalf("reference released under a reader: %v", got)
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, payload(1, 100)) {
		t.Fatalf("read under reap: %d bytes, %v", len(got), err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("second reader Close: %v", err)
	}
	if got := src.removedRefs(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("after the reader closed, removed %v", got)
	}
	if got := readDir(t, fsys, "/s"); !slices.Equal(got, []string{b}) {
		t.Fatalf("directory holds %v", got)
	}
}

func TestOrdering(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		s := mustOpen(t, Options{Dir: dir, FS: fsys, Retain: 10})
		t2i5a := create(t, s, 2, 5, []byte("a"))
		t1i10 := create(t, s, 1, 10, []byte("b"))
		t2i3 := create(t, s, 2, 3, []byte("c"))
		t2i5b := create(t, s, 2, 5, []byte("d"))
		t3i1 := create(t, s, 3, 1, []byte("e"))
		if t2i5a == t2i5b {
			t.Fatalf("equal term and index gave equal ids %s", t2i5a)
		}
		want := []string{t3i1, t2i5b, t2i5a, t2i3, t1i10}
		if got := listIDs(t, s); !slices.Equal(got, want) {
			t.Fatalf("List =\n %v\nwant\n %v", got, want)
		}
		// Ids sort as bytes in the same order.
		sorted := slices.Clone(want)
		slices.Sort(sorted)
		slices.Reverse(sorted)
		if !slices.Equal(sorted, want) {
			t.Fatalf("ids do not sort by (term, index, creation): %v", sorted)
		}
		// List stops at Retain.
		s3 := mustOpen(t, Options{Dir: dir, FS: fsys, Retain: 3})
		if got := listIDs(t, s3); !slices.Equal(got, want[:3]) {
			t.Fatalf("Retain 3: List = %v", got)
		}
		// New ids stay unique and newer after a reopen even if the clock
		// stepped back: they are above every seq in the directory.
		s3.mu.Lock()
		last := s3.lastSeq
		s3.mu.Unlock()
		if _, _, seq, _ := parseID(t3i1); last < seq {
			t.Fatalf("reopened store's last seq %d below an existing %d", last, seq)
		}
	})
}

func TestParseID(t *testing.T) {
	good := formatID(1, 2, 3)
	if term, index, seq, ok := parseID(good); !ok || term != 1 || index != 2 || seq != 3 {
		t.Fatalf("parseID(%s) = %d %d %d %v", good, term, index, seq, ok)
	}
	maxID := formatID(^uint64(0), ^uint64(0), ^uint64(0))
	if _, _, _, ok := parseID(maxID); !ok {
		t.Fatalf("parseID(%s) failed", maxID)
	}
	for _, bad := range []string{
		"", "..", "../x", good + ".tmp", good[1:], "x" + good[1:],
		strings.Replace(good, "-", "_", 1), "+" + good[1:],
		"99999999999999999999" + good[20:], // overflows uint64
	} {
		if _, _, _, ok := parseID(bad); ok {
			t.Errorf("parseID(%q) accepted", bad)
		}
	}
}

func TestOpenNotFound(t *testing.T) {
	s := mustOpen(t, Options{Dir: "/s", FS: vfs.NewMem()})
	for _, id := range []string{"nope", "../s", formatID(1, 1, 1)} {
		if _, _, err := s.Open(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func TestCancel(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		src := newFakeSource()
		s := mustOpen(t, Options{Dir: dir, FS: fsys, Source: src})
		keep := create(t, s, 1, 1, []byte("keep"))

		sink := mustCreate(t, s, 1, 2)
		writePieces(t, sink, payload(1, 5000))
		if err := sink.Cancel(); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		if err := sink.Cancel(); err != nil {
			t.Fatalf("second Cancel: %v", err)
		}
		if err := sink.Close(); !errors.Is(err, ErrSinkDone) {
			t.Fatalf("Close after Cancel = %v, want ErrSinkDone", err)
		}
		if _, err := sink.Write([]byte("x")); !errors.Is(err, ErrSinkDone) {
			t.Fatalf("Write after Cancel = %v, want ErrSinkDone", err)
		}

		// A cancelled reference is released: the store owned it.
		src.put("r", []byte("r"))
		rsink := mustCreate(t, s, 1, 3)
		if err := rsink.Reference("r", 1); err != nil {
			t.Fatal(err)
		}
		if err := rsink.Cancel(); err != nil {
			t.Fatal(err)
		}
		if got := src.removedRefs(); !slices.Equal(got, []string{"r"}) {
			t.Fatalf("removed %v", got)
		}

		// Cancel before any Write.
		if err := mustCreate(t, s, 1, 4).Cancel(); err != nil {
			t.Fatal(err)
		}

		if got := listIDs(t, s); !slices.Equal(got, []string{keep}) {
			t.Fatalf("List = %v", got)
		}
		if got := readDir(t, fsys, dir); !slices.Equal(got, []string{keep}) {
			t.Fatalf("directory holds %v", got)
		}
	})
}

// raft calls Close after an FSM's Persist that already closed the sink: the
// second Close must report the first one's result, and Cancel after Close
// must not undo a published snapshot.
func TestCloseTwice(t *testing.T) {
	s := mustOpen(t, Options{Dir: "/s", FS: vfs.NewMem()})
	sink := mustCreate(t, s, 1, 1)
	if _, err := sink.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := sink.Cancel(); err != nil {
		t.Fatalf("Cancel after Close: %v", err)
	}
	if _, got := readSnap(t, s, sink.ID()); string(got) != "x" {
		t.Fatalf("read %q", got)
	}
}

// overwrite replaces a file's contents through the vfs.
func overwrite(t testing.TB, fsys vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptMetaSkipped(t *testing.T) {
	flip := func(b []byte) []byte {
		// Change a digit inside the snapshot object so the JSON stays valid
		// and only the CRC can tell.
		i := bytes.Index(b, []byte(`"index":`)) + len(`"index":`)
		b = bytes.Clone(b)
		b[i] = '0' + (b[i]-'0'+1)%10
		return b
	}
	cases := []struct {
		name string
		edit func([]byte) []byte
		want error
	}{
		{"bit flip", flip, ErrCorrupt},
		{"garbage", func([]byte) []byte { return []byte("{not json") }, ErrCorrupt},
		{"empty", func([]byte) []byte { return nil }, ErrCorrupt},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }, ErrCorrupt},
		{"future format", func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"format":1`), []byte(`"format":2`), 1)
		}, ErrUnsupportedVersion},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
				s := mustOpen(t, Options{Dir: dir, FS: fsys, Retain: 5})
				older := create(t, s, 1, 1, []byte("older"))
				bad := create(t, s, 1, 2, []byte("bad"))
				newer := create(t, s, 1, 3, []byte("newer"))
				p := path.Join(dir, bad, metaName)
				b, err := vfs.ReadFile(fsys, p)
				if err != nil {
					t.Fatal(err)
				}
				overwrite(t, fsys, p, c.edit(b))
				if got := listIDs(t, s); !slices.Equal(got, []string{newer, older}) {
					t.Fatalf("List = %v", got)
				}
				if _, _, err := s.Open(bad); !errors.Is(err, c.want) {
					t.Fatalf("Open = %v, want %v", err, c.want)
				}
				// A reopened store keeps it (for inspection) and still
				// lists the others.
				s2 := mustOpen(t, Options{Dir: dir, FS: fsys, Retain: 5})
				if got := listIDs(t, s2); !slices.Equal(got, []string{newer, older}) {
					t.Fatalf("after reopen List = %v", got)
				}
			})
		})
	}
}

// A meta with a valid CRC but fields that disagree with its name or with
// each other is refused too.
func TestMetaConsistency(t *testing.T) {
	tab := crc32.MakeTable(crc32.Castagnoli)
	id := formatID(2, 7, 1)
	sum := uint32(0)
	base := newSnapMeta(id, 1, 7, 2, testConf(), 3)
	base.DataCRC32C = &sum
	cases := []struct {
		name string
		edit func(m *snapMeta)
	}{
		{"other id", func(m *snapMeta) { m.ID = formatID(2, 7, 2) }},
		{"other term", func(m *snapMeta) { m.Term = 3 }},
		{"other index", func(m *snapMeta) { m.Index = 8 }},
		{"negative size", func(m *snapMeta) { m.Size = -1 }},
		{"ref and crc", func(m *snapMeta) { m.Ref = "r" }},
		{"neither", func(m *snapMeta) { m.DataCRC32C = nil }},
		{"version 0", func(m *snapMeta) { m.Version = 0 }},
	}
	if b, err := encodeMeta(&base, tab); err != nil {
		t.Fatal(err)
	} else if _, err := decodeMeta(b, id, tab); err != nil {
		t.Fatalf("base meta refused: %v", err)
	}
	for _, c := range cases {
		m := base
		c.edit(&m)
		b, err := encodeMeta(&m, tab)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeMeta(b, id, tab); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

func TestCorruptDataDetected(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		s := mustOpen(t, Options{Dir: dir, FS: fsys, Retain: 5})
		for _, size := range []int{1, 1000, 200_000} {
			id := create(t, s, 1, uint64(size), payload(size, size))
			p := path.Join(dir, id, dataName)
			b, err := vfs.ReadFile(fsys, p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0x40
			overwrite(t, fsys, p, b)

			// io.ReadAll reads to EOF.
			_, rc, err := s.Open(id)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if _, err := io.ReadAll(rc); !errors.Is(err, ErrCorrupt) {
				t.Errorf("size %d: ReadAll = %v, want ErrCorrupt", size, err)
			}
			rc.Close()
			// io.ReadFull of exactly Size bytes never asks for EOF; it
			// must fail too.
			meta, rc, err := s.Open(id)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(rc, make([]byte, meta.Size)); !errors.Is(err, ErrCorrupt) {
				t.Errorf("size %d: ReadFull = %v, want ErrCorrupt", size, err)
			}
			rc.Close()

			// A data file of the wrong length is refused at Open.
			overwrite(t, fsys, p, b[:len(b)-1])
			if _, _, err := s.Open(id); !errors.Is(err, ErrCorrupt) {
				t.Errorf("size %d: Open of a short data file = %v, want ErrCorrupt", size, err)
			}
		}
	})
}

// An empty snapshot's CRC is checked too, on the first Read.
func TestCorruptEmptyData(t *testing.T) {
	fsys := vfs.NewMem()
	s := mustOpen(t, Options{Dir: "/s", FS: fsys})
	sink := mustCreate(t, s, 1, 1)
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewrite the meta with a wrong data CRC but a valid meta CRC.
	m, err := s.readMeta(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	wrong := uint32(1)
	m.DataCRC32C = &wrong
	b, err := encodeMeta(m, s.tab)
	if err != nil {
		t.Fatal(err)
	}
	overwrite(t, fsys, path.Join("/s", sink.ID(), metaName), b)
	_, rc, err := s.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadAll = %v, want ErrCorrupt", err)
	}
}

func TestUnknownEntriesIgnored(t *testing.T) {
	fsys := vfs.NewMem()
	s := mustOpen(t, Options{Dir: "/s", FS: fsys})
	id := create(t, s, 1, 1, []byte("x"))
	if err := fsys.MkdirAll("/s/lost+found", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := vfs.WriteFileAtomic(fsys, "/s", "README", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, Options{Dir: "/s", FS: fsys})
	if got := listIDs(t, s); !slices.Equal(got, []string{id}) {
		t.Fatalf("List = %v", got)
	}
	if got := readDir(t, fsys, "/s"); !slices.Equal(got, []string{id, "README", "lost+found"}) {
		t.Fatalf("directory holds %v", got)
	}
}

func TestMissingMetaSkipped(t *testing.T) {
	fsys := vfs.NewMem()
	s := mustOpen(t, Options{Dir: "/s", FS: fsys, Retain: 5})
	a := create(t, s, 1, 1, []byte("a"))
	b := create(t, s, 1, 2, []byte("b"))
	if err := fsys.Remove(path.Join("/s", b, metaName)); err != nil {
		t.Fatal(err)
	}
	if got := listIDs(t, s); !slices.Equal(got, []string{a}) {
		t.Fatalf("List = %v", got)
	}
	if _, _, err := s.Open(b); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open = %v, want ErrNotFound", err)
	}
}

// Raft creates, lists, opens and closes snapshots from several goroutines
// at once; run that under the race detector and check the end state.
func TestConcurrent(t *testing.T) {
	fsys := vfs.NewMem()
	src := newFakeSource()
	s := mustOpen(t, Options{Dir: "/s", FS: fsys, Source: src, Retain: 2})
	const writers, perWriter = 4, 15
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errc := make(chan error, 100)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				index := uint64(w*perWriter + i + 1)
				rs, err := s.Create(1, index, 1, testConf(), 0, nil)
				if err != nil {
					errc <- err
					return
				}
				sink := rs.(*Sink)
				if i%2 == 0 {
					ref := fmt.Sprintf("r%d", index)
					src.put(ref, payload(int(index), 100))
					err = sink.Reference(ref, 100)
				} else {
					_, err = sink.Write(payload(int(index), 100))
				}
				if err == nil {
					err = sink.Close()
				}
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				metas, err := s.List()
				if err != nil {
					errc <- err
					return
				}
				for _, m := range metas {
					_, rc, err := s.Open(m.ID)
					if errors.Is(err, ErrNotFound) {
						continue // reaped between List and Open
					}
					if err != nil {
						errc <- fmt.Errorf("Open(%s): %w", m.ID, err)
						return
					}
					b, err := io.ReadAll(rc)
					rc.Close()
					_, index, _, _ := parseID(m.ID)
					if err != nil || !bytes.Equal(b, payload(int(index), 100)) {
						errc <- fmt.Errorf("read %s: %d bytes, %v", m.ID, len(b), err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	ids := listIDs(t, s)
	if len(ids) != 2 {
		t.Fatalf("List = %v", ids)
	}
	// Readers may have held off a reap; the last reader's Close ran it.
	if got := readDir(t, fsys, "/s"); len(got) != 2 {
		t.Fatalf("directory holds %v", got)
	}
	refs, err := s.References()
	if err != nil {
		t.Fatal(err)
	}
	want := writers * ((perWriter + 1) / 2)
	if got := len(src.removedRefs()) + len(refs); got != want {
		t.Fatalf("%d references released + %d held, want %d in all", len(src.removedRefs()), len(refs), want)
	}
}
