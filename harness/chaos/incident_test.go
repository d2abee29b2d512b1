package chaos

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/functions/importer"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
)

// incidentCase is the incident's world: one tenant, a setting per target, a few hundred records
// over several pages and chunks, one tick.
func incidentCase(faults ...DeliveryFault) Case {
	return Case{
		PageSize: 50,
		Objects: []Object{
			{Name: "Contact", Prefix: "003", Rows: 300, Updated: 10, Seed: 3},
			{Name: "Lead", Prefix: "00Q", Rows: 300, Updated: 10, Seed: 4},
		},
		Settings: []Setting{
			{ID: "acme-upsert", Tenant: "acme", Object: 0, Target: model.TargetUpsert, ChunkSize: 40},
			{ID: "acme-generated", Tenant: "acme", Object: 1, Target: model.TargetGenerated, ChunkSize: 40},
		},
		Ticks:  []Tick{{}},
		Faults: Schedule{Deliveries: faults},
	}
}

// expandTwice is the incident: every expand message is delivered a second time 2 s after the
// first, while the first is writing its chunk plan.
var expandTwice = DeliveryFault{
	Target: Target{Function: config.Expander, Setting: -1, Tick: -1, Chunk: -1}, Nth: 1,
	Plan: sim.Plan{CopyAt: expander.StepChunkWritten, CopyDelay: 2 * time.Second},
}

// chunkTwice delivers every chunk message a second time 2 s after the first, at step.
func chunkTwice(step string) DeliveryFault {
	return DeliveryFault{
		Target: Target{Function: config.Importer, Setting: -1, Tick: -1, Chunk: -1}, Nth: 1,
		Plan: sim.Plan{CopyAt: step, CopyDelay: 2 * time.Second},
	}
}

// TestIncidentExpandDeliveredTwice pins the incident: the expand message delivered twice, 2 s
// apart. With the guards, one chunk plan and no duplicate; with them removed, the checkers report
// what goes wrong.
func TestIncidentExpandDeliveredTwice(t *testing.T) {
	t.Run("guarded", func(t *testing.T) {
		h := NewHarness(t, Mutation{})
		c := incidentCase(expandTwice, chunkTwice(importer.StepClaimed))
		res := runPinned(t, h, c)
		if len(res.Violations) > 0 {
			t.Fatalf("violations:\n  %s", strings.Join(res.Violations, "\n  "))
		}
		jobs, err := h.Env.Jobs(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) != 2 {
			t.Fatalf("%d jobs, want 2", len(jobs))
		}
		for _, j := range jobs {
			if j.Searches != j.SliceCount || j.SliceCount < 2 {
				t.Errorf("job %s: %d source searches for %d slices, want one a slice (and the window sliced)", j.ID, j.Searches, j.SliceCount)
			}
		}
		if got := res.Stats.Copies; got < 2+4 {
			t.Errorf("%d duplicate deliveries injected, want at least 6 (2 expand, 4+ chunk)", got)
		}
		if res.Report.Duplicates != 0 || res.Extra.ChunkRewrites != 0 {
			t.Errorf("duplicates %d, chunk rewrites %d; want 0 and 0", res.Report.Duplicates, res.Extra.ChunkRewrites)
		}
		if res.Stats.Suppressed < 2 {
			t.Errorf("%d duplicates sent back while the first delivery held the key, want >= 2", res.Stats.Suppressed)
		}
		report.pin(fmt.Sprintf("incident, guarded: expand delivered twice 2 s apart -> one plan per job (%d chunks), 1 search per job, 0 duplicates; %d duplicate deliveries suppressed",
			res.Report.Chunks, res.Suppressed))
	})

	t.Run("claim guard removed", func(t *testing.T) {
		h := NewHarness(t, MutantClaim)
		res := runPinned(t, h, incidentCase(expandTwice))
		if res.Extra.ChunkRewrites == 0 || res.Report.SearchOveruse == 0 {
			t.Fatalf("chunk rewrites %d, jobs searching too often %d; want both > 0 (the duplicate must plan again)\nviolations:\n  %s",
				res.Extra.ChunkRewrites, res.Report.SearchOveruse, strings.Join(res.Violations, "\n  "))
		}
		// Deterministic chunk IDs and the atomic chunk commit still keep the records single.
		t.Logf("caught by %s; records duplicated: %d", strings.Join(res.CaughtBy(), ", "), res.Report.Duplicates)
		report.pin(fmt.Sprintf("incident, claim guard removed: caught by %s (records duplicated: %d: chunk IDs are deterministic and the chunk commit atomic)",
			strings.Join(res.CaughtBy(), ", "), res.Report.Duplicates))
	})

	t.Run("claim guard removed and chunk commit not atomic", func(t *testing.T) {
		// Both plans publish their chunk messages; one of each pair arrives while the other is
		// between its two commits, as two instances would import them.
		h := NewHarness(t, MutantBoth)
		res := runPinned(t, h, incidentCase(expandTwice, chunkTwice(StepRecordsCommitted)))
		if res.Report.Duplicates == 0 {
			t.Fatalf("no duplicate reported; violations:\n  %s", strings.Join(res.Violations, "\n  "))
		}
		found := false
		for _, v := range res.Violations {
			found = found || strings.Contains(v, "(generated target)") && strings.Contains(v, "imported 2 times")
		}
		if !found {
			t.Errorf("no violation names a record of the generated-ID target imported twice:\n  %s", strings.Join(res.Violations, "\n  "))
		}
		t.Logf("caught by %s", strings.Join(res.CaughtBy(), ", "))
		report.pin(fmt.Sprintf("incident, claim guard removed + chunk commit not atomic: %d duplicate records reported; caught by %s",
			res.Report.Duplicates, strings.Join(res.CaughtBy(), ", ")))
	})
}

// runPinned runs one hand-written case and logs it.
func runPinned(t *testing.T, h *Harness, c Case) *Result {
	t.Helper()
	res, err := h.Run(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("case:\n%s\noutcome: %s\nreport: %s", c, res.Brief(), res.Report)
	return res
}
