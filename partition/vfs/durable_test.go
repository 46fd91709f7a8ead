package vfs

import (
	"bytes"
	"testing"
)

func TestDurableHelpersSurviveACrash(t *testing.T) {
	m := NewMem()
	if err := MkdirAllDurable(m, "/a/b/c"); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(m, "/a/b/c", "f", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(m, "/a/b/c", "f", []byte("two")); err != nil {
		t.Fatal(err)
	}
	m.Crash(nil)
	got, err := ReadFile(m, "/a/b/c/f")
	if err != nil || !bytes.Equal(got, []byte("two")) {
		t.Fatalf("after a crash: %q %v", got, err)
	}
	// Without the helpers a nested directory is not durable: the model
	// drops it, which is what makes the test above mean something.
	if err := m.MkdirAll("/x/y", 0o755); err != nil {
		t.Fatal(err)
	}
	m.Crash(nil)
	if _, err := m.Stat("/x/y"); err == nil {
		t.Fatal("an unsynced directory survived a crash")
	}
	// A failed write leaves the old contents.
	m.FailNext(OpSync, errInjected)
	if err := WriteFileAtomic(m, "/a/b/c", "f", []byte("three")); err == nil {
		t.Fatal("failed sync not reported")
	}
	m.Crash(nil)
	if got, _ := ReadFile(m, "/a/b/c/f"); !bytes.Equal(got, []byte("two")) {
		t.Fatalf("after a failed replace: %q", got)
	}
}
