package protocol

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies holds the package map's line: protocol imports nothing of
// Varve's, so the broker's internals can never leak into the wire layer.
func TestDependencies(t *testing.T) {
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found")
	}
	out, err := exec.Command(gotool, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"/broker", "/partition", "/replication"} {
			if strings.Contains(dep, banned) {
				t.Errorf("protocol depends on %s", dep)
			}
		}
		if strings.HasPrefix(dep, "github.com/varvelog/varve") && dep != "github.com/varvelog/varve/protocol" {
			t.Errorf("protocol imports %s; it may import nothing of ours", dep)
		}
	}
}
