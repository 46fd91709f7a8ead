package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// env is one filesystem under test and a directory to work in.
type env struct {
	fs   FS
	dir  string
	join func(elem ...string) string
}

func (e env) p(elem ...string) string { return e.join(append([]string{e.dir}, elem...)...) }

// impls are the FS implementations the conformance suite runs over; each call
// of setup returns a fresh, empty filesystem.
var impls = []struct {
	name  string
	setup func(t *testing.T) env
}{
	{"OS", func(t *testing.T) env { return env{fs: OS{}, dir: t.TempDir(), join: filepath.Join} }},
	{"Mem", func(t *testing.T) env { return env{fs: NewMem(), dir: "/", join: path.Join} }},
}

const rw = os.O_RDWR | os.O_CREATE

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, fsys FS, name string, flag int) File {
	t.Helper()
	f, err := fsys.OpenFile(name, flag, 0o644)
	must(t, err)
	return f
}

func write(t *testing.T, f File, s string) {
	t.Helper()
	n, err := f.Write([]byte(s))
	must(t, err)
	if n != len(s) {
		t.Fatalf("wrote %d bytes, want %d", n, len(s))
	}
}

// writeFile replaces name with data, syncing the data (not the directory)
// when sync is set.
func writeFile(t *testing.T, fsys FS, name, data string, sync bool) {
	t.Helper()
	f := open(t, fsys, name, rw|os.O_TRUNC)
	write(t, f, data)
	if sync {
		must(t, f.Sync())
	}
	must(t, f.Close())
}

// readAll reads name through a fresh handle, so it sees what FS reports
// rather than Mem's introspection helpers.
func readAll(t *testing.T, fsys FS, name string) string {
	t.Helper()
	f := open(t, fsys, name, os.O_RDONLY)
	defer f.Close()
	return readHandle(t, f)
}

func readHandle(t *testing.T, f File) string {
	t.Helper()
	size, err := f.Size()
	must(t, err)
	buf := make([]byte, size)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !(err == io.EOF && n == len(buf)) {
		t.Fatalf("ReadAt: n=%d err=%v", n, err)
	}
	return string(buf[:n])
}

func wantContents(t *testing.T, fsys FS, name, want string) {
	t.Helper()
	if got := readAll(t, fsys, name); got != want {
		t.Fatalf("%s = %q, want %q", name, got, want)
	}
}

func wantErrIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want errors.Is %v", err, target)
	}
}

func wantNames(t *testing.T, fsys FS, dir string, want ...string) {
	t.Helper()
	got, err := fsys.ReadDir(dir)
	must(t, err)
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Fatalf("ReadDir(%s) = %q, want %q", dir, got, want)
	}
}

// conformance is the behaviour OS and Mem must share.
var conformance = []struct {
	name string
	run  func(t *testing.T, e env)
}{
	{"CreateWriteReadAtSize", func(t *testing.T, e env) {
		f := open(t, e.fs, e.p("f"), rw|os.O_EXCL)
		defer f.Close()
		write(t, f, "hello ")
		write(t, f, "world")
		if size, err := f.Size(); err != nil || size != 11 {
			t.Fatalf("Size = %d, %v; want 11", size, err)
		}
		cases := []struct {
			off     int64
			buf     int
			want    string
			wantEOF bool
		}{
			{0, 11, "hello world", false},
			{6, 5, "world", false},
			{6, 8, "world", true},
			{11, 4, "", true},
			{20, 4, "", true},
		}
		for _, c := range cases {
			buf := make([]byte, c.buf)
			n, err := f.ReadAt(buf, c.off)
			if got := string(buf[:n]); got != c.want || (err == io.EOF) != c.wantEOF || (err != nil && err != io.EOF) {
				t.Errorf("ReadAt(%d, off %d) = %q, %v; want %q, EOF %v", c.buf, c.off, got, err, c.want, c.wantEOF)
			}
		}
		st, err := e.fs.Stat(e.p("f"))
		must(t, err)
		if st != (FileInfo{Size: 11}) {
			t.Fatalf("Stat = %+v", st)
		}
	}},
	{"ExclOnExisting", func(t *testing.T, e env) {
		writeFile(t, e.fs, e.p("f"), "x", false)
		_, err := e.fs.OpenFile(e.p("f"), rw|os.O_EXCL, 0o644)
		wantErrIs(t, err, fs.ErrExist)
		wantContents(t, e.fs, e.p("f"), "x")
	}},
	{"OpenMissing", func(t *testing.T, e env) {
		_, err := e.fs.OpenFile(e.p("missing"), os.O_RDONLY, 0)
		wantErrIs(t, err, fs.ErrNotExist)
		_, err = e.fs.OpenFile(e.p("nodir", "f"), rw, 0o644)
		wantErrIs(t, err, fs.ErrNotExist)
	}},
	{"OffsetAndAppend", func(t *testing.T, e env) {
		writeFile(t, e.fs, e.p("f"), "abc", false)
		a := open(t, e.fs, e.p("f"), os.O_WRONLY|os.O_APPEND)
		write(t, a, "def")
		w := open(t, e.fs, e.p("f"), os.O_WRONLY)
		write(t, w, "X") // offset 0: overwrites
		write(t, a, "g") // O_APPEND: at the end regardless
		write(t, w, "Y") // offset 1
		must(t, a.Close())
		must(t, w.Close())
		wantContents(t, e.fs, e.p("f"), "XYcdefg")
	}},
	{"OpenTrunc", func(t *testing.T, e env) {
		writeFile(t, e.fs, e.p("f"), "long contents", false)
		f := open(t, e.fs, e.p("f"), os.O_WRONLY|os.O_TRUNC)
		write(t, f, "new")
		must(t, f.Close())
		wantContents(t, e.fs, e.p("f"), "new")
	}},
	{"Truncate", func(t *testing.T, e env) {
		f := open(t, e.fs, e.p("f"), rw)
		defer f.Close()
		write(t, f, "abcdef")
		must(t, f.Truncate(2))
		if got := readHandle(t, f); got != "ab" {
			t.Fatalf("after shrink %q", got)
		}
		must(t, f.Truncate(5))
		if got := readHandle(t, f); got != "ab\x00\x00\x00" {
			t.Fatalf("after grow %q", got)
		}
		write(t, f, "Z") // the offset stays at 6 after truncation: a hole
		if got := readHandle(t, f); got != "ab\x00\x00\x00\x00Z" {
			t.Fatalf("after write past end %q", got)
		}
	}},
	{"RenameReplaces", func(t *testing.T, e env) {
		writeFile(t, e.fs, e.p("a"), "new", false)
		writeFile(t, e.fs, e.p("b"), "old contents", false)
		must(t, e.fs.Rename(e.p("a"), e.p("b")))
		wantContents(t, e.fs, e.p("b"), "new")
		_, err := e.fs.Stat(e.p("a"))
		wantErrIs(t, err, fs.ErrNotExist)
		wantNames(t, e.fs, e.dir, "b")
		wantErrIs(t, e.fs.Rename(e.p("a"), e.p("c")), fs.ErrNotExist)
	}},
	{"RenameDir", func(t *testing.T, e env) {
		must(t, e.fs.MkdirAll(e.p("d1", "sub"), 0o755))
		writeFile(t, e.fs, e.p("d1", "sub", "f"), "x", false)
		must(t, e.fs.Rename(e.p("d1"), e.p("d2")))
		wantContents(t, e.fs, e.p("d2", "sub", "f"), "x")
		wantNames(t, e.fs, e.dir, "d2")
	}},
	{"LinkSharesContents", func(t *testing.T, e env) {
		writeFile(t, e.fs, e.p("a"), "data", false)
		must(t, e.fs.Link(e.p("a"), e.p("b")))
		f := open(t, e.fs, e.p("b"), os.O_WRONLY|os.O_APPEND)
		write(t, f, "more")
		must(t, f.Close())
		wantContents(t, e.fs, e.p("a"), "datamore")
		must(t, e.fs.Remove(e.p("a")))
		wantContents(t, e.fs, e.p("b"), "datamore")
		wantErrIs(t, e.fs.Link(e.p("b"), e.p("b")), fs.ErrExist)
		wantErrIs(t, e.fs.Link(e.p("a"), e.p("c")), fs.ErrNotExist)
	}},
	{"Remove", func(t *testing.T, e env) {
		writeFile(t, e.fs, e.p("f"), "x", false)
		must(t, e.fs.Remove(e.p("f")))
		_, err := e.fs.Stat(e.p("f"))
		wantErrIs(t, err, fs.ErrNotExist)
		wantErrIs(t, e.fs.Remove(e.p("f")), fs.ErrNotExist)
	}},
	{"RemoveNonEmptyDir", func(t *testing.T, e env) {
		must(t, e.fs.MkdirAll(e.p("d"), 0o755))
		writeFile(t, e.fs, e.p("d", "f"), "x", false)
		if err := e.fs.Remove(e.p("d")); err == nil {
			t.Fatal("removed a non-empty directory")
		}
		wantContents(t, e.fs, e.p("d", "f"), "x")
		must(t, e.fs.Remove(e.p("d", "f")))
		must(t, e.fs.Remove(e.p("d")))
		wantNames(t, e.fs, e.dir)
	}},
	{"ReadDirSorted", func(t *testing.T, e env) {
		for _, n := range []string{"c", "a", "b10", "b2"} {
			writeFile(t, e.fs, e.p(n), n, false)
		}
		must(t, e.fs.MkdirAll(e.p("B"), 0o755))
		wantNames(t, e.fs, e.dir, "B", "a", "b10", "b2", "c")
		wantNames(t, e.fs, e.p("B"))
		_, err := e.fs.ReadDir(e.p("missing"))
		wantErrIs(t, err, fs.ErrNotExist)
	}},
	{"MkdirAllNested", func(t *testing.T, e env) {
		must(t, e.fs.MkdirAll(e.p("a", "b", "c"), 0o755))
		must(t, e.fs.MkdirAll(e.p("a", "b", "c"), 0o755)) // existing is fine
		must(t, e.fs.MkdirAll(e.p("a", "b"), 0o755))
		for _, d := range []string{e.p("a"), e.p("a", "b"), e.p("a", "b", "c")} {
			st, err := e.fs.Stat(d)
			must(t, err)
			if !st.IsDir {
				t.Fatalf("%s is not a directory", d)
			}
		}
		writeFile(t, e.fs, e.p("a", "b", "c", "f"), "x", false)
		if err := e.fs.MkdirAll(e.p("a", "b", "c", "f", "g"), 0o755); err == nil {
			t.Fatal("MkdirAll through a file succeeded")
		}
	}},
	{"Stat", func(t *testing.T, e env) {
		writeFile(t, e.fs, e.p("f"), "12345", false)
		must(t, e.fs.MkdirAll(e.p("d"), 0o755))
		st, err := e.fs.Stat(e.p("f"))
		must(t, err)
		if st != (FileInfo{Size: 5}) {
			t.Fatalf("Stat(f) = %+v", st)
		}
		st, err = e.fs.Stat(e.p("d"))
		must(t, err)
		if !st.IsDir {
			t.Fatalf("Stat(d) = %+v", st)
		}
		_, err = e.fs.Stat(e.p("missing"))
		wantErrIs(t, err, fs.ErrNotExist)
	}},
	{"SyncAndSyncDir", func(t *testing.T, e env) {
		must(t, e.fs.MkdirAll(e.p("d"), 0o755))
		writeFile(t, e.fs, e.p("d", "f"), "x", true)
		must(t, e.fs.SyncDir(e.p("d")))
		must(t, e.fs.SyncDir(e.dir))
		wantErrIs(t, e.fs.SyncDir(e.p("missing")), fs.ErrNotExist)
	}},
	{"ReadAfterRemove", func(t *testing.T, e env) {
		f := open(t, e.fs, e.p("f"), rw)
		defer f.Close()
		write(t, f, "still here")
		must(t, e.fs.Remove(e.p("f")))
		if got := readHandle(t, f); got != "still here" {
			t.Fatalf("read after remove = %q", got)
		}
		write(t, f, "!")
		must(t, f.Sync())
		if got := readHandle(t, f); got != "still here!" {
			t.Fatalf("read after write to unlinked file = %q", got)
		}
		wantNames(t, e.fs, e.dir)
	}},
	{"ReadAfterRename", func(t *testing.T, e env) {
		f := open(t, e.fs, e.p("a"), rw)
		defer f.Close()
		must(t, e.fs.Rename(e.p("a"), e.p("b")))
		write(t, f, "moved")
		wantContents(t, e.fs, e.p("b"), "moved")
	}},
	{"AccessModes", func(t *testing.T, e env) {
		writeFile(t, e.fs, e.p("f"), "abc", false)
		r := open(t, e.fs, e.p("f"), os.O_RDONLY)
		defer r.Close()
		if _, err := r.Write([]byte("x")); err == nil {
			t.Error("Write on O_RDONLY handle succeeded")
		}
		if err := r.Truncate(0); err == nil {
			t.Error("Truncate on O_RDONLY handle succeeded")
		}
		w := open(t, e.fs, e.p("f"), os.O_WRONLY)
		defer w.Close()
		if _, err := w.ReadAt(make([]byte, 1), 0); err == nil {
			t.Error("ReadAt on O_WRONLY handle succeeded")
		}
		wantContents(t, e.fs, e.p("f"), "abc")
	}},
	{"Closed", func(t *testing.T, e env) {
		f := open(t, e.fs, e.p("f"), rw)
		must(t, f.Close())
		wantErrIs(t, f.Close(), fs.ErrClosed)
		_, err := f.Write([]byte("x"))
		wantErrIs(t, err, fs.ErrClosed)
		_, err = f.ReadAt(make([]byte, 1), 0)
		wantErrIs(t, err, fs.ErrClosed)
		// OS.Sync goes through SyscallConn, which reports a closed file
		// as internal/poll's "use of closed file", not fs.ErrClosed, so
		// only an error is common ground; TestMemClosedHandle is exact.
		if err := f.Sync(); err == nil {
			t.Error("Sync on a closed handle succeeded")
		}
		wantErrIs(t, f.Truncate(0), fs.ErrClosed)
		_, err = f.Size()
		wantErrIs(t, err, fs.ErrClosed)
	}},
}

func TestConformance(t *testing.T) {
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			for _, c := range conformance {
				t.Run(c.name, func(t *testing.T) { c.run(t, impl.setup(t)) })
			}
		})
	}
}

// TestConcurrentAppendReadAt checks the File contract that ReadAt of ranges a
// completed Write covered may run alongside further Writes; run it with -race.
func TestConcurrentAppendReadAt(t *testing.T) {
	const chunk, chunks, readers = 97, 300, 4
	pattern := func(off int64) byte { return byte(off*7 + off>>8) }
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			e := impl.setup(t)
			f := open(t, e.fs, e.p("log"), rw|os.O_APPEND)
			defer f.Close()
			var written atomic.Int64
			var done atomic.Bool
			var wg sync.WaitGroup
			wg.Go(func() {
				defer done.Store(true)
				buf := make([]byte, chunk)
				for i := range chunks {
					base := int64(i * chunk)
					for j := range buf {
						buf[j] = pattern(base + int64(j))
					}
					if _, err := f.Write(buf); err != nil {
						t.Error(err)
						return
					}
					written.Store(base + chunk)
				}
			})
			for r := range readers {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(r), 1))
					for reads := 0; !done.Load() || reads < 10; reads++ {
						end := written.Load()
						if end == 0 {
							continue
						}
						off := rng.Int64N(end)
						buf := make([]byte, rng.Int64N(end-off)+1)
						n, err := f.ReadAt(buf, off)
						if err != nil || n != len(buf) {
							t.Errorf("ReadAt(%d, off %d) = %d, %v", len(buf), off, n, err)
							return
						}
						for i, b := range buf {
							if want := pattern(off + int64(i)); b != want {
								t.Errorf("byte %d = %d, want %d", off+int64(i), b, want)
								return
							}
						}
					}
				})
			}
			wg.Wait()
			if size, err := f.Size(); err != nil || size != chunk*chunks {
				t.Fatalf("Size = %d, %v", size, err)
			}
		})
	}
}

// memFileWith opens name on m with the given contents, synced up to synced bytes,
// and the parent directory synced so the name itself is durable.
func memFileWith(t *testing.T, m *Mem, name, synced, unsynced string) File {
	t.Helper()
	f := open(t, m, name, rw|os.O_TRUNC)
	write(t, f, synced)
	must(t, f.Sync())
	must(t, m.SyncDir(path.Dir(clean(name))))
	write(t, f, unsynced)
	return f
}

func memContents(t *testing.T, m *Mem, name string) string {
	t.Helper()
	b, err := m.ReadFile(name)
	must(t, err)
	return string(b)
}

func TestMemCrashDropsUnsyncedData(t *testing.T) {
	m := NewMem()
	memFileWith(t, m, "/f", "durable", " lost")
	if n, err := m.SyncedSize("/f"); err != nil || n != 7 {
		t.Fatalf("SyncedSize = %d, %v; want 7", n, err)
	}
	m.Crash(nil)
	wantContents(t, m, "/f", "durable")
}

// TestMemCrashTornAppend checks that an unsynced append survives a crash as
// some prefix, never less than the synced part and never other bytes, and
// that the seed decides which prefix.
func TestMemCrashTornAppend(t *testing.T) {
	const synced, tail = "0123456789", "abcdefghijklmnopqrstuvwxyz"
	const full = synced + tail
	crash := func(seed uint64) string {
		m := NewMem()
		memFileWith(t, m, "/seg", synced, tail[:10])
		f := open(t, m, "/seg", os.O_WRONLY|os.O_APPEND) // a second handle writes too
		write(t, f, tail[10:])
		m.Crash(rand.New(rand.NewPCG(seed, 42)))
		got := readAll(t, m, "/seg")
		if n, err := m.SyncedSize("/seg"); err != nil || n != int64(len(got)) {
			t.Fatalf("seed %d: SyncedSize = %d, %v after crash; want %d", seed, n, err, len(got))
		}
		// The survivor is the new durable state: another crash keeps it.
		m.Crash(rand.New(rand.NewPCG(seed, 7)))
		wantContents(t, m, "/seg", got)
		return got
	}
	var none, partial, all int
	for seed := range uint64(200) {
		got := crash(seed)
		if !strings.HasPrefix(full, got) || len(got) < len(synced) {
			t.Fatalf("seed %d: survived %q, want a prefix of %q at least %q long", seed, got, full, synced)
		}
		if again := crash(seed); again != got {
			t.Fatalf("seed %d: not reproducible: %q then %q", seed, got, again)
		}
		switch len(got) {
		case len(synced):
			none++
		case len(full):
			all++
		default:
			partial++
		}
	}
	if partial == 0 {
		t.Fatalf("no seed kept a partial tail (none %d, all %d)", none, all)
	}
	t.Logf("tails kept: none %d, partial %d, all %d", none, partial, all)
}

func TestMemCrashRevertsOverwrites(t *testing.T) {
	cases := []struct {
		name string
		mod  func(t *testing.T, f File)
	}{
		{"Overwrite", func(t *testing.T, f File) { write(t, f, "J") }},
		{"OverwriteAndAppend", func(t *testing.T, f File) { write(t, f, "JELLO, WORLD") }},
		{"Shrink", func(t *testing.T, f File) { must(t, f.Truncate(2)) }},
		{"ShrinkAndRegrow", func(t *testing.T, f File) {
			must(t, f.Truncate(2))
			must(t, f.Truncate(9))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for seed := range uint64(20) {
				m := NewMem()
				memFileWith(t, m, "/f", "hello", "")
				f := open(t, m, "/f", os.O_WRONLY) // offset 0
				c.mod(t, f)
				m.Crash(rand.New(rand.NewPCG(seed, 0)))
				wantContents(t, m, "/f", "hello")
			}
		})
	}
}

func TestMemSyncAfterOverwrite(t *testing.T) {
	m := NewMem()
	f := memFileWith(t, m, "/f", "hello", " world")
	must(t, f.Truncate(3))
	write(t, f, "p!") // the handle offset is 11: a hole
	must(t, f.Sync())
	want := "hel\x00\x00\x00\x00\x00\x00\x00\x00p!"
	m.Crash(rand.New(rand.NewPCG(1, 2)))
	wantContents(t, m, "/f", want)
}

func TestMemCrashDirectoryOps(t *testing.T) {
	cases := []struct {
		name   string
		do     func(t *testing.T, m *Mem)
		want   map[string]string // surviving files and their contents
		absent []string
	}{
		{
			name: "CreateWithoutSyncDirVanishes",
			do: func(t *testing.T, m *Mem) {
				writeFile(t, m, "/new", "synced data", true)
			},
			absent: []string{"/new"},
		},
		{
			name: "CreateWithSyncDirSurvivesWithoutUnsyncedData",
			do: func(t *testing.T, m *Mem) {
				writeFile(t, m, "/new", "unsynced", false)
				must(t, m.SyncDir("/"))
			},
			want: map[string]string{"/new": ""},
		},
		{
			name: "RenameWithoutSyncDirReverts",
			do: func(t *testing.T, m *Mem) {
				must(t, m.Rename("/base", "/moved"))
			},
			want:   map[string]string{"/base": "base"},
			absent: []string{"/moved"},
		},
		{
			name: "RenameWithSyncDirSticks",
			do: func(t *testing.T, m *Mem) {
				must(t, m.Rename("/base", "/moved"))
				must(t, m.SyncDir("/"))
			},
			want:   map[string]string{"/moved": "base"},
			absent: []string{"/base"},
		},
		{
			name: "RenameOverWithoutSyncDirRestoresBoth",
			do: func(t *testing.T, m *Mem) {
				writeFile(t, m, "/tmp", "replacement", true)
				must(t, m.Rename("/tmp", "/base"))
			},
			want:   map[string]string{"/base": "base"},
			absent: []string{"/tmp"},
		},
		{
			name: "FailedSyncDirMakesNothingDurable",
			do: func(t *testing.T, m *Mem) {
				writeFile(t, m, "/new", "x", true)
				m.FailNext(OpSyncDir, errInjected)
				wantErrIs(t, m.SyncDir("/"), errInjected)
			},
			want:   map[string]string{"/base": "base"},
			absent: []string{"/new"},
		},
		{
			name: "RemoveWithoutSyncDirComesBack",
			do: func(t *testing.T, m *Mem) {
				must(t, m.Remove("/base"))
			},
			want: map[string]string{"/base": "base"},
		},
		{
			name: "RemoveWithSyncDirSticks",
			do: func(t *testing.T, m *Mem) {
				must(t, m.Remove("/base"))
				must(t, m.SyncDir("/"))
			},
			absent: []string{"/base"},
		},
		{
			name: "LinkWithoutSyncDirVanishes",
			do: func(t *testing.T, m *Mem) {
				must(t, m.Link("/base", "/link"))
			},
			want:   map[string]string{"/base": "base"},
			absent: []string{"/link"},
		},
		{
			name: "LinkWithSyncDirSharesSyncedData",
			do: func(t *testing.T, m *Mem) {
				must(t, m.Link("/base", "/link"))
				must(t, m.SyncDir("/"))
				f := open(t, m, "/link", os.O_WRONLY|os.O_APPEND)
				write(t, f, "+synced")
				must(t, f.Sync())
				write(t, f, "+lost")
			},
			want: map[string]string{"/base": "base+synced", "/link": "base+synced"},
		},
		{
			name: "MkdirAllWithoutParentSyncVanishes",
			do: func(t *testing.T, m *Mem) {
				must(t, m.MkdirAll("/a/b", 0o755))
				writeFile(t, m, "/a/b/f", "x", true)
				must(t, m.SyncDir("/a/b"))
				must(t, m.SyncDir("/a")) // /a itself is never synced into /
			},
			want:   map[string]string{"/base": "base"},
			absent: []string{"/a", "/a/b", "/a/b/f"},
		},
		{
			name: "MkdirAllSyncedEachLevelSurvives",
			do: func(t *testing.T, m *Mem) {
				must(t, m.MkdirAll("/a/b", 0o755))
				writeFile(t, m, "/a/b/f", "x", true)
				must(t, m.SyncDir("/a/b"))
				must(t, m.SyncDir("/a"))
				must(t, m.SyncDir("/"))
				writeFile(t, m, "/a/unsynced", "y", true)
			},
			want:   map[string]string{"/a/b/f": "x"},
			absent: []string{"/a/unsynced"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := NewMem()
			f := memFileWith(t, m, "/base", "base", "")
			must(t, f.Close())
			c.do(t, m)
			m.Crash(nil)
			for name, want := range c.want {
				wantContents(t, m, name, want)
			}
			for _, name := range c.absent {
				_, err := m.Stat(name)
				wantErrIs(t, err, fs.ErrNotExist)
			}
		})
	}
}

func TestMemCrashClosesHandles(t *testing.T) {
	m := NewMem()
	f := memFileWith(t, m, "/f", "abc", "def")
	m.Crash(nil)
	_, err := f.Write([]byte("x"))
	wantErrIs(t, err, fs.ErrClosed)
	_, err = f.ReadAt(make([]byte, 1), 0)
	wantErrIs(t, err, fs.ErrClosed)
	wantErrIs(t, f.Sync(), fs.ErrClosed)
	wantErrIs(t, f.Truncate(0), fs.ErrClosed)
	_, err = f.Size()
	wantErrIs(t, err, fs.ErrClosed)
	wantErrIs(t, f.Close(), fs.ErrClosed)
	wantContents(t, m, "/f", "abc")
	g := open(t, m, "/f", os.O_WRONLY|os.O_APPEND)
	write(t, g, "!")
	must(t, g.Close())
	wantContents(t, m, "/f", "abc!")
}

func TestMemClosedHandle(t *testing.T) {
	m := NewMem()
	f := open(t, m, "/f", rw)
	must(t, f.Close())
	wantErrIs(t, f.Sync(), fs.ErrClosed)
	wantErrIs(t, f.Close(), fs.ErrClosed)
}

func TestMemRelativePaths(t *testing.T) {
	m := NewMem()
	must(t, m.MkdirAll("a/b/", 0o755))
	writeFile(t, m, "a/./b/../b/f", "x", false)
	wantContents(t, m, "/a/b/f", "x")
	wantNames(t, m, "a", "b")
}

var errInjected = errors.New("injected")

func TestMemFailNextSyncOnce(t *testing.T) {
	m := NewMem()
	f := open(t, m, "/f", rw)
	write(t, f, "abc")
	m.FailNext(OpSync, errInjected)
	wantErrIs(t, f.Sync(), errInjected)
	if n, _ := m.SyncedSize("/f"); n != 0 {
		t.Fatalf("failed Sync made %d bytes durable", n)
	}
	must(t, f.Sync())
	if n, _ := m.SyncedSize("/f"); n != 3 {
		t.Fatalf("SyncedSize = %d after Sync, want 3", n)
	}
	must(t, f.Sync())
}

// TestMemFaultChangesNothing fails each operation once and checks that the
// filesystem is as it was, then that the retry (or the next op) succeeds.
func TestMemFaultChangesNothing(t *testing.T) {
	cases := []struct {
		op Op
		do func(m *Mem, f File) error
	}{
		{OpOpen, func(m *Mem, _ File) error {
			_, err := m.OpenFile("/f", os.O_WRONLY|os.O_TRUNC, 0)
			return err
		}},
		{OpWrite, func(_ *Mem, f File) error { _, err := f.Write([]byte("XYZ")); return err }},
		{OpSync, func(_ *Mem, f File) error { return f.Sync() }},
		{OpTruncate, func(_ *Mem, f File) error { return f.Truncate(1) }},
		{OpRemove, func(m *Mem, _ File) error { return m.Remove("/f") }},
		{OpRename, func(m *Mem, _ File) error { return m.Rename("/f", "/g") }},
		{OpLink, func(m *Mem, _ File) error { return m.Link("/f", "/g") }},
		{OpMkdir, func(m *Mem, _ File) error { return m.MkdirAll("/d", 0o755) }},
		{OpSyncDir, func(m *Mem, _ File) error { return m.SyncDir("/") }},
		{OpRead, func(_ *Mem, f File) error { _, err := f.ReadAt(make([]byte, 3), 0); return err }},
		{OpClose, func(_ *Mem, f File) error { return f.Close() }},
	}
	for _, c := range cases {
		t.Run(c.op.String(), func(t *testing.T) {
			m := NewMem()
			f := open(t, m, "/f", rw)
			write(t, f, "abc")
			snapshot := func() string {
				names, err := m.ReadDir("/")
				must(t, err)
				n, err := m.SyncedSize("/f")
				must(t, err)
				return fmt.Sprintf("%q|%q|%d", names, memContents(t, m, "/f"), n)
			}
			before := snapshot()
			m.FailNext(c.op, errInjected)
			wantErrIs(t, c.do(m, f), errInjected)
			if after := snapshot(); after != before {
				t.Fatalf("failed %v changed state: %q -> %q", c.op, before, after)
			}
			must(t, c.do(m, f))
		})
	}
}

func TestMemFailedWriteKeepsOffset(t *testing.T) {
	m := NewMem()
	f := open(t, m, "/f", rw)
	write(t, f, "abc")
	m.SetFault(func(op Op, _ string) error {
		if op == OpWrite {
			return errInjected
		}
		return nil
	})
	n, err := f.Write([]byte("lost"))
	if n != 0 {
		t.Fatalf("failed Write reported %d bytes", n)
	}
	wantErrIs(t, err, errInjected)
	if got := memContents(t, m, "/f"); got != "abc" {
		t.Fatalf("contents after failed write %q", got)
	}
	m.SetFault(nil)
	write(t, f, "def")
	wantContents(t, m, "/f", "abcdef")
}

func TestMemSetFaultPathPattern(t *testing.T) {
	m := NewMem()
	var mu sync.Mutex
	var seen []string
	m.SetFault(func(op Op, name string) error {
		mu.Lock()
		seen = append(seen, op.String()+" "+name)
		mu.Unlock()
		if ok, _ := path.Match("*.index", path.Base(name)); ok && op != OpOpen {
			return errInjected
		}
		return nil
	})
	must(t, m.MkdirAll("/p", 0o755))
	writeFile(t, m, "/p/00.log", "log", true)
	writeFile(t, m, "/p/00.tmp", "idx", true)
	wantErrIs(t, m.Rename("/p/00.tmp", "/p/00.index"), errInjected)
	wantNames(t, m, "/p", "00.log", "00.tmp")
	must(t, m.Rename("/p/00.tmp", "/p/01.tmp"))

	f := open(t, m, "p/00.index", rw) // OpOpen is let through
	_, err := f.Write([]byte("x"))
	wantErrIs(t, err, errInjected)
	wantErrIs(t, f.Sync(), errInjected)
	var pe *fs.PathError
	if !errors.As(f.Sync(), &pe) || pe.Path != "/p/00.index" || pe.Op != "sync" {
		t.Fatalf("fault error does not name the op and path: %#v", pe)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{"rename /p/00.tmp", "rename /p/00.index", "open /p/00.index", "write /p/00.index"} {
		if !slices.Contains(seen, want) {
			t.Errorf("hook never saw %q; saw %q", want, seen)
		}
	}
}

// TestMemFailNextWithHook checks that a queued one-shot fault wins over the
// hook, is used once, and that the hook may call back into Mem.
func TestMemFailNextWithHook(t *testing.T) {
	m := NewMem()
	errHook := errors.New("hook")
	calls := 0
	m.SetFault(func(op Op, name string) error {
		if op != OpMkdir {
			return nil
		}
		calls++
		if _, err := m.Stat("/"); err != nil { // must not deadlock
			return err
		}
		if name == "/bad" {
			return errHook
		}
		return nil
	})
	m.FailNext(OpMkdir, errInjected)
	m.FailNext(OpMkdir, errInjected)
	m.FailNext(OpMkdir, nil) // queues nothing
	wantErrIs(t, m.MkdirAll("/bad", 0o755), errInjected)
	wantErrIs(t, m.MkdirAll("/good", 0o755), errInjected)
	if calls != 0 {
		t.Fatalf("hook consulted %d times for ops a one-shot fault failed", calls)
	}
	wantErrIs(t, m.MkdirAll("/bad", 0o755), errHook)
	must(t, m.MkdirAll("/good", 0o755))
	if calls != 2 {
		t.Fatalf("hook consulted %d times, want 2", calls)
	}
	wantNames(t, m, "/", "good")
}

func TestOpString(t *testing.T) {
	want := map[Op]string{
		OpOpen: "open", OpWrite: "write", OpSync: "sync", OpTruncate: "truncate",
		OpRemove: "remove", OpRename: "rename", OpLink: "link", OpMkdir: "mkdir",
		OpSyncDir: "syncdir", OpRead: "read", OpClose: "close", Op(0): "Op(0)", Op(99): "Op(99)",
	}
	for op, s := range want {
		if got := op.String(); got != s {
			t.Errorf("Op(%d).String() = %q, want %q", int(op), got, s)
		}
	}
}

func TestMemRejects(t *testing.T) {
	m := NewMem()
	must(t, m.MkdirAll("/d/sub", 0o755))
	writeFile(t, m, "/f", "x", false)
	cases := []struct {
		name string
		err  error
	}{
		{"OpenDir", func() error { _, err := m.OpenFile("/d", os.O_RDONLY, 0); return err }()},
		{"OpenRoot", func() error { _, err := m.OpenFile("/", os.O_RDONLY, 0); return err }()},
		{"OpenUnderFile", func() error { _, err := m.OpenFile("/f/x", rw, 0); return err }()},
		{"RemoveRoot", m.Remove("/")},
		{"RenameDirIntoItself", m.Rename("/d", "/d/sub/d")},
		{"RenameFileOverDir", m.Rename("/f", "/d")},
		{"RenameDirOverFile", m.Rename("/d", "/f")},
		{"LinkDir", m.Link("/d", "/d2")},
		{"SyncDirFile", m.SyncDir("/f")},
		{"ReadDirFile", func() error { _, err := m.ReadDir("/f"); return err }()},
		{"ReadFileDir", func() error { _, err := m.ReadFile("/d"); return err }()},
		{"NegativeReadAt", func() error {
			f := open(t, m, "/f", os.O_RDONLY)
			defer f.Close()
			_, err := f.ReadAt(make([]byte, 1), -1)
			return err
		}()},
		{"HugeTruncate", func() error {
			f := open(t, m, "/f", os.O_RDWR)
			defer f.Close()
			return f.Truncate(1 << 50)
		}()},
	}
	for _, c := range cases {
		if c.err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	wantNames(t, m, "/", "d", "f")
	wantNames(t, m, "/d", "sub")
	wantContents(t, m, "/f", "x")
}
