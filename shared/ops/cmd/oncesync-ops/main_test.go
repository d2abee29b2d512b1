package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The operator's binary runs against production: it must link none of the test harness, and
// none of the functions (it builds its source through shared/source/connectors).
func TestLinksNoTestPackages(t *testing.T) {
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages: %q", len(deps), deps)
	}
	for _, d := range deps {
		if d == "testing" || strings.HasPrefix(d, "testing/") || strings.HasPrefix(d, "github.com/oncesync/oncesync/harness") ||
			strings.HasSuffix(d, "/audittest") || strings.HasSuffix(d, "/pstest") || strings.HasPrefix(d, "github.com/oncesync/oncesync/functions/") {
			t.Errorf("oncesync-ops links %s", d)
		}
	}
}
