package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/varvelog/varve/integration"
)

// openPTY opens a pseudo-terminal pair: what the child writes to slave,
// the test reads from master. It skips where the machine has none, and
// fails instead when CI is set.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	unavailable := func(format string, a ...any) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf("no pseudo-terminal (CI is set, so this fails instead of skipping): "+format, a...)
		}
		t.Skipf("no pseudo-terminal: "+format, a...)
	}
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		unavailable("%v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	var n uint32
	var ioctlErr error
	rc, err := m.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// Control keeps the master non-blocking (Fd would not), so closing
	// it ends a pending Read.
	err = rc.Control(func(fd uintptr) {
		var unlock int32
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); errno != 0 {
			ioctlErr = errno
			return
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); errno != 0 {
			ioctlErr = errno
		}
	})
	if err == nil {
		err = ioctlErr
	}
	if err != nil {
		unavailable("unlock /dev/ptmx: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		unavailable("%v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return m, s
}

// terminalOutput collects what arrives on a pty master until the
// terminal closes, with the line discipline's "\r\n" turned back into
// "\n".
type terminalOutput struct {
	mu   sync.Mutex
	b    bytes.Buffer
	done chan struct{}
}

func readTerminal(master *os.File) *terminalOutput {
	o := &terminalOutput{done: make(chan struct{})}
	go func() {
		defer close(o.done)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			o.mu.Lock()
			o.b.Write(buf[:n])
			o.mu.Unlock()
			if err != nil {
				return // EIO once the child and the test closed the slave
			}
		}
	}()
	return o
}

func (o *terminalOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.ReplaceAll(o.b.String(), "\r\n", "\n")
}

// wait returns everything once the child has exited and slave is closed.
func (o *terminalOutput) wait(t *testing.T) string {
	t.Helper()
	select {
	case <-o.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the terminal stayed open; so far: %q", o.String())
	}
	return o.String()
}

// startVarve starts the real main in a child process (as runVarve) with
// the given stdin and outputs.
func startVarve(t *testing.T, stdin io.Reader, stdout, stderr io.Writer, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = []string{"VARVE_TEST_RUN_MAIN=1", "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// The real binary with a terminal on stdout or stderr: tables aligned
// with spaces (JSON when asked), and produce's progress line, which a
// piped stderr never gets however long the run.
func TestToolsOnATerminal(t *testing.T) {
	c := integration.NewCluster(t, integration.Brokers(1))
	b := c.Addr()
	createTopic(t, c, "tty", 3)

	// topic list with stdout on a terminal: aligned; -o json: JSON.
	for _, tc := range []struct {
		args  []string
		check func(string) bool
	}{
		{[]string{"topic", "list"}, func(s string) bool { return s == "TOPIC  PARTITIONS  REPLICATION\ntty    3           1\n" }},
		{[]string{"topic", "list", "-o", "json"}, func(s string) bool {
			var rows []topicRow
			return json.Unmarshal([]byte(s), &rows) == nil && len(rows) == 1 && rows[0] == topicRow{Topic: "tty", Partitions: 3, ReplicationFactor: 1}
		}},
	} {
		master, slave := openPTY(t)
		out := readTerminal(master)
		var errb bytes.Buffer
		cmd := startVarve(t, nil, slave, &errb, append(tc.args, "--brokers", b)...)
		err := cmd.Wait()
		_ = slave.Close()
		if got := out.wait(t); err != nil || errb.Len() > 0 || !tc.check(got) {
			t.Errorf("varve %v on a terminal: %v, stderr %q, stdout %q", tc.args, err, errb.String(), got)
		}
	}

	// produce with stderr on a terminal: while stdin stays open, the
	// progress line shows the records acknowledged; at the end it is
	// erased and the summary printed.
	master, slave := openPTY(t)
	term := readTerminal(master)
	in, feed, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	cmd := startVarve(t, in, &stdout, slave, "produce", "-t", "tty", "-k", ":", "--brokers", b)
	_ = in.Close()
	if _, err := io.WriteString(feed, "a:1\nb:2\nc:3\n"); err != nil {
		t.Fatal(err)
	}
	progress := regexp.MustCompile(`\r3 records sent, 3 acknowledged, 0\.0 MB \(\d+ records/s, \d+\.\d\d MB/s\) in [1-9]\d*s\x1b\[K`)
	deadline := time.Now().Add(30 * time.Second)
	for !progress.MatchString(term.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line on the terminal with stdin open: %q", term.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = feed.Close()
	err = cmd.Wait()
	_ = slave.Close()
	got := term.wait(t)
	summary := regexp.MustCompile(`^(\r[^\r\n]+\x1b\[K)+\r\x1b\[Kproduced 3 records, 6 bytes in \S+ \(\d+\.\d\d MB/s\)\n$`)
	if err != nil || stdout.Len() > 0 || !summary.MatchString(got) {
		t.Errorf("produce on a terminal: %v, stdout %q, terminal %q", err, stdout.String(), got)
	}

	// The same run with stderr piped: only the summary, however long the
	// run. Stdin stays open past the progress line's start and a few
	// rewrites (the sleep is the point: nothing may appear meanwhile).
	in, feed, err = os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd = startVarve(t, in, &stdout, &errb, "produce", "-t", "tty", "--brokers", b)
	_ = in.Close()
	if _, err := io.WriteString(feed, "d\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(progressAfter + 3*progressEvery)
	_ = feed.Close()
	if err := cmd.Wait(); err != nil || stdout.Len() > 0 ||
		!regexp.MustCompile(`^produced 1 records, 1 bytes in \S+ \(\d+\.\d\d MB/s\)\n$`).MatchString(errb.String()) {
		t.Errorf("produce with stderr piped: %v, stdout %q, stderr %q", err, stdout.String(), errb.String())
	}
	out := strings.Fields(mustRun(t, "", "consume", "-t", "tty", "-e", "-f", `%k=%s `, "--brokers", b))
	if slices.Sort(out); strings.Join(out, " ") != "=d a=1 b=2 c=3" {
		t.Errorf("the topic holds %q", out)
	}
}
