package demo_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/oncesync/oncesync/harness/demo"
	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/stack"
)

// The demo with every message delivered twice writes its Job's trace as a page, and a real headless
// browser (Chromium) shows it: one trace, the three functions' deliveries, and the duplicates
// suppressed, each linked to the delivery that holds its key.
func TestDemoTracePageInABrowser(t *testing.T) {
	emu.Require(t)
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (make setup installs it): %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "oncesync")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/oncesync/oncesync/harness/cmd/oncesync").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var log strings.Builder
	page := filepath.Join(dir, "trace.html")
	r, err := demo.Run(t.Context(), demo.Options{
		Records: 300, ChunkSize: 100, Duplicates: true, Seed: 3, TracePage: page, Out: &log,
		Stack: stack.Options{
			Project: emu.ProjectID(t), Binary: bin, LogDir: dir,
			Emulators: &emu.Emulators{FirestoreHost: os.Getenv("FIRESTORE_EMULATOR_HOST"), PubSubHost: os.Getenv("PUBSUB_EMULATOR_HOST")},
		},
	})
	if err != nil || !r.OK() {
		t.Fatalf("demo: %v, OK %v\n%s", err, r.OK(), log.String())
	}

	out, err := exec.CommandContext(t.Context(), browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "chromium"), "--dump-dom", "file://"+page).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	dom := string(out)
	// The rows are made by the page's script: finding them shows it ran in the browser.
	rows := regexp.MustCompile(`<div class="span([^"]*)" data-name="([^"]*)" data-span-id="([0-9a-f]{16})"[^>]*?(?: data-outcome="([a-z_]*)")?(?: data-linked="([0-9a-f]{16})")?>`).
		FindAllStringSubmatch(dom, -1)
	if len(rows) != len(r.Trace.Spans) || len(rows) == 0 {
		t.Fatalf("the browser shows %d span rows, the trace has %d spans", len(rows), len(r.Trace.Spans))
	}
	if !strings.Contains(dom, `data-trace="`+r.Trace.ID+`"`) {
		t.Errorf("the page is not of the Job's trace %s", r.Trace.ID)
	}
	name := map[string]string{}
	outcome := map[string]string{}
	deliveries := map[string]int{}
	for _, m := range rows {
		name[m[3]], outcome[m[3]] = m[2], m[4]
		if strings.Contains(m[1], "delivery") {
			deliveries[m[2]]++
		}
	}
	for _, fn := range []string{"Scheduler deliver", "Expander deliver", "Importer deliver"} {
		if deliveries[fn] < 2 {
			t.Errorf("%d %q rows, want the delivery and its duplicate", deliveries[fn], fn)
		}
	}
	// The copies come 2 s later: suppressed once the work is done, sent back while it runs (on a
	// loaded machine); either way linked to the delivery of the same function that holds the key.
	dups := map[string]int{}
	for _, m := range rows {
		if m[4] != "suppressed" && m[4] != "sent_back" {
			continue
		}
		dups[m[4]]++
		if !strings.Contains(m[1], "duplicate") || m[5] == "" || name[m[5]] != m[2] || outcome[m[5]] != "ack" {
			t.Errorf("%s %s %s: class %q, linked to %q (%s, %s); want the acked delivery of the same function",
				m[4], m[2], m[3], m[1], m[5], name[m[5]], outcome[m[5]])
		}
	}
	if dups["suppressed"] == 0 || dups["suppressed"]+dups["sent_back"] != r.Trace.Duplicates {
		t.Errorf("duplicates shown %v, the trace has %d", dups, r.Trace.Duplicates)
	}
}
