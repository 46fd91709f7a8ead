package replication

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// captured is one record a captureHandler saw, its attributes flattened
// (With attributes first).
type captured struct {
	level slog.Level
	msg   string
	attrs map[string]any
}

// captureHandler records every record at or above its level.
type captureHandler struct {
	level slog.Level
	attrs []slog.Attr
	mu    *sync.Mutex
	out   *[]captured
}

func newCapture(level slog.Level) (*slog.Logger, *captureHandler) {
	h := &captureHandler{level: level, mu: &sync.Mutex{}, out: &[]captured{}}
	return slog.New(h), h
}

func (h *captureHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	c := captured{level: r.Level, msg: r.Message, attrs: map[string]any{}}
	for _, a := range h.attrs {
		c.attrs[a.Key] = a.Value.Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		c.attrs[a.Key] = a.Value.Any()
		return true
	})
	h.mu.Lock()
	*h.out = append(*h.out, c)
	h.mu.Unlock()
	return nil
}

func (h *captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(slices.Clip(h.attrs), as...)
	return &c
}

func (h *captureHandler) WithGroup(string) slog.Handler { return h }

func (h *captureHandler) records() []captured {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(*h.out)
}

func (h *captureHandler) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.out = nil
}

// TestHCLogLevels: raft's Info (and below) become slog Debug, Warn and
// Error keep their level, Off is dropped.
func TestHCLogLevels(t *testing.T) {
	l, h := newCapture(slog.LevelDebug)
	a := newHCLog(l)
	a.Trace("trace line", "k", 1)
	a.Debug("debug line", "k", 2)
	a.Info("info line", "k", 3)
	a.Warn("warn line", "k", 4)
	a.Error("error line", "k", 5)
	a.Log(hclog.Off, "off line")
	want := []struct {
		msg   string
		level slog.Level
	}{
		{"trace line", slog.LevelDebug},
		{"debug line", slog.LevelDebug},
		{"info line", slog.LevelDebug},
		{"warn line", slog.LevelWarn},
		{"error line", slog.LevelError},
	}
	got := h.records()
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].msg != w.msg || got[i].level != w.level {
			t.Errorf("record %d: %q at %v, want %q at %v", i, got[i].msg, got[i].level, w.msg, w.level)
		}
		if i < 5 && got[i].attrs["k"] != int64(i+1) {
			t.Errorf("record %d: attrs %v, want k=%d", i, got[i].attrs, i+1)
		}
	}
}

// TestHCLogEnabled: at slog Info, raft's Info is filtered out (it is
// Debug), Warn passes; the Is* answers and GetLevel agree.
func TestHCLogEnabled(t *testing.T) {
	l, h := newCapture(slog.LevelInfo)
	a := newHCLog(l)
	a.Info("dropped")
	a.Debug("dropped")
	a.Warn("kept")
	if got := h.records(); len(got) != 1 || got[0].msg != "kept" || got[0].level != slog.LevelWarn {
		t.Fatalf("records %+v, want only the warning", got)
	}
	if a.IsTrace() || a.IsDebug() || a.IsInfo() || !a.IsWarn() || !a.IsError() {
		t.Fatalf("Is*: trace %v debug %v info %v warn %v error %v", a.IsTrace(), a.IsDebug(), a.IsInfo(), a.IsWarn(), a.IsError())
	}
	if lv := a.GetLevel(); lv != hclog.Warn {
		t.Fatalf("GetLevel at slog Info = %v, want Warn", lv)
	}
	a.SetLevel(hclog.Trace) // ignored: the slog handler rules
	if a.IsDebug() {
		t.Fatalf("SetLevel changed the level")
	}

	dl, _ := newCapture(slog.LevelDebug)
	if d := newHCLog(dl); !d.IsTrace() || !d.IsInfo() || d.GetLevel() != hclog.Debug {
		t.Fatalf("at slog Debug: IsTrace %v IsInfo %v GetLevel %v", d.IsTrace(), d.IsInfo(), d.GetLevel())
	}
	el, _ := newCapture(slog.LevelError)
	if e := newHCLog(el); e.IsWarn() || !e.IsError() || e.GetLevel() != hclog.Error {
		t.Fatalf("at slog Error: IsWarn %v IsError %v GetLevel %v", e.IsWarn(), e.IsError(), e.GetLevel())
	}
	// A nil logger discards.
	newHCLog(nil).Error("nowhere")
}

// TestHCLogNamedWith: Named nests names (carried as raft_logger), With
// carries arguments into every line and ImpliedArgs, and neither changes
// the logger it was derived from.
func TestHCLogNamedWith(t *testing.T) {
	l, h := newCapture(slog.LevelDebug)
	root := newHCLog(l)
	if root.Name() != "" {
		t.Fatalf("root name %q", root.Name())
	}
	n := root.Named("raft").Named("replicate")
	if n.Name() != "raft.replicate" {
		t.Fatalf("nested name %q", n.Name())
	}
	w := n.With("peer", "2", "group", "g1")
	w2 := w.With("extra", true)
	w2.Warn("lagging", "index", 10)
	got := h.records()
	if len(got) != 1 {
		t.Fatalf("records %+v", got)
	}
	r := got[0]
	if r.msg != "lagging" || r.level != slog.LevelWarn || r.attrs["raft_logger"] != "raft.replicate" ||
		r.attrs["peer"] != "2" || r.attrs["group"] != "g1" || r.attrs["extra"] != true || r.attrs["index"] != int64(10) {
		t.Fatalf("record %+v", r)
	}
	if args := w2.ImpliedArgs(); !slices.Equal(args, []any{"peer", "2", "group", "g1", "extra", true}) {
		t.Fatalf("ImpliedArgs %v", args)
	}
	if args := w.ImpliedArgs(); len(args) != 4 {
		t.Fatalf("With changed its parent's args: %v", args)
	}
	if w2.Name() != "raft.replicate" {
		t.Fatalf("With lost the name: %q", w2.Name())
	}
	if r := w2.ResetNamed("fresh"); r.Name() != "fresh" || len(r.ImpliedArgs()) != 6 {
		t.Fatalf("ResetNamed: name %q args %v", r.Name(), r.ImpliedArgs())
	}
	if root.Name() != "" || len(root.ImpliedArgs()) != 0 {
		t.Fatalf("root changed: %q %v", root.Name(), root.ImpliedArgs())
	}

	// Siblings derived from one parent do not share argument storage.
	h.reset()
	base := root.With("a", 1)
	s1, s2 := base.With("b", 2), base.With("c", 3)
	s1.Warn("one")
	if args := s1.ImpliedArgs(); !slices.Equal(args, []any{"a", 1, "b", 2}) {
		t.Fatalf("sibling 1 args %v", args)
	}
	if args := s2.ImpliedArgs(); !slices.Equal(args, []any{"a", 1, "c", 3}) {
		t.Fatalf("sibling 2 args %v", args)
	}
	// Named keeps the parent's With arguments in the lines it writes.
	h.reset()
	base.Named("x").Error("boom")
	if got := h.records(); len(got) != 1 || got[0].attrs["a"] != int64(1) || got[0].attrs["raft_logger"] != "x" {
		t.Fatalf("Named after With: %+v", got)
	}
}

// TestHCLogStandardLogger: lines through a standard *log.Logger arrive as
// raft Info, that is slog Debug, without the trailing newline.
func TestHCLogStandardLogger(t *testing.T) {
	l, h := newCapture(slog.LevelDebug)
	a := newHCLog(l).Named("std")
	a.StandardLogger(nil).Printf("hello %d", 5)
	if _, err := a.StandardWriter(nil).Write([]byte("raw line\n")); err != nil {
		t.Fatal(err)
	}
	got := h.records()
	if len(got) != 2 || got[0].msg != "hello 5" || got[1].msg != "raw line" ||
		got[0].level != slog.LevelDebug || got[0].attrs["raft_logger"] != "std" {
		t.Fatalf("records %+v", got)
	}
}
