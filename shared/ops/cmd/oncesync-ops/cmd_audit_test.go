package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/audit"
	"github.com/oncesync/oncesync/shared/ops/audit/audittest"
)

// auditWorld is an Env with tenant acme and one setting per target (Contact → upsert, Lead →
// generated), ticked once and delivered under p. It returns the Jobs by target kind.
func auditWorld(t *testing.T, p func(e *sim.Env) sim.Policy) (*sim.Env, map[string]model.Job) {
	t.Helper()
	windowStart := time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := sim.New(t, sim.Options{Start: start, PageSize: 50})
	ctx := t.Context()
	e.Tenant(ctx, "acme")
	for i, tg := range []string{model.TargetUpsert, model.TargetGenerated} {
		object := []string{"Contact", "Lead"}[i]
		e.Setting(ctx, model.SyncSetting{
			ID: "acme-" + tg, TenantID: "acme", SourceObject: object, Fields: []string{"Name", "Email"},
			Target: tg, ChunkSize: 40, Enabled: true, Watermark: windowStart,
		})
		e.Fixture.PutRecords(object, fixture.Generate(int64(20+i), 100, windowStart, start, fixture.GenOptions{UpdatedInWindow: 0.1})...)
	}
	if err := e.Tick(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	policy := sim.Policy{}
	if p != nil {
		policy = p(e)
	}
	if _, err := e.Drain(ctx, policy, 200); err != nil {
		t.Fatal(err)
	}
	return e, auditJobs(t, e)
}

func auditJobs(t *testing.T, e *sim.Env) map[string]model.Job {
	t.Helper()
	out, err := e.JobsByTarget(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// invoke runs one command's run function and returns its exit code and output.
func invoke(t *testing.T, run func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) int, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func auditCLI(ctx context.Context, args []string, out, errb *bytes.Buffer) int {
	return runAudit(ctx, args, out, errb)
}

func deadLettersCLI(ctx context.Context, args []string, out, errb *bytes.Buffer) int {
	return runDeadLetters(ctx, args, out, errb)
}

// findingKinds decodes a --json report and returns its finding kinds, sorted, once each.
func findingKinds(t *testing.T, out string) []string {
	t.Helper()
	var rep struct{ Findings []audit.Finding }
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out)
	}
	var kinds []string
	for _, f := range rep.Findings {
		if !slices.Contains(kinds, f.Kind) {
			kinds = append(kinds, f.Kind)
		}
	}
	slices.Sort(kinds)
	return kinds
}

func TestAuditCommandExitCodes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e, jobs := auditWorld(t, nil)
	up, gen := jobs[model.TargetUpsert], jobs[model.TargetGenerated]
	p := []string{"--project", e.Project}

	for _, j := range jobs {
		code, out, errs := invoke(t, auditCLI, append([]string{"job", j.ID}, p...)...)
		if code != exitClean || !strings.Contains(out, "RESULT  clean") {
			t.Fatalf("clean Job %s: exit %d\n%s%s", j.ID, code, out, errs)
		}
	}
	if code, out, _ := invoke(t, auditCLI, append([]string{"tenant", "acme", "--json"}, p...)...); code != exitClean || len(findingKinds(t, out)) != 0 {
		t.Fatalf("clean tenant: exit %d\n%s", code, out)
	}

	// Each planted problem is found, in the text report and the JSON, with exit code 1.
	steps := []struct {
		job   model.Job
		kind  string
		plant func() error
	}{
		{gen, audit.DuplicateRecord, func() error { _, err := audittest.Duplicate(ctx, e.FS, gen.ID); return err }},
		{up, audit.MissingRecord, func() error { _, err := audittest.Missing(ctx, e.FS, up.ID); return err }},
		{up, audit.ExtraChunk, func() error { _, err := audittest.ExtraChunk(ctx, e.FS, up.ID); return err }},
		{gen, audit.ExpiredLease, func() error { _, err := audittest.ExpiredLease(ctx, e.FS, gen.ID, time.Now()); return err }},
	}
	for _, s := range steps {
		if err := s.plant(); err != nil {
			t.Fatal(err)
		}
		code, out, errs := invoke(t, auditCLI, append([]string{"job", s.job.ID}, p...)...)
		if code != exitFindings || !strings.Contains(out[:strings.Index(out, "TIMELINE")], s.kind) {
			t.Errorf("after planting %s: exit %d, want 1 and the finding before the timeline:\n%s%s", s.kind, code, out, errs)
		}
		code, out, _ = invoke(t, auditCLI, append([]string{"job", "--json", s.job.ID}, p...)...)
		if code != exitFindings || !slices.Contains(findingKinds(t, out), s.kind) {
			t.Errorf("after planting %s: --json exit %d, kinds %v", s.kind, code, findingKinds(t, out))
		}
	}
	code, out, _ := invoke(t, auditCLI, append([]string{"tenant", "acme", "--json"}, p...)...)
	want := []string{audit.DuplicateRecord, audit.ExpiredLease, audit.ExtraChunk, audit.MissingRecord}
	if got := findingKinds(t, out); code != exitFindings || !slices.Equal(got, want) {
		t.Errorf("tenant: exit %d, kinds %v, want 1 and %v", code, got, want)
	}
	// Jobs outside the range are not audited, but the tenant's expired lease still is.
	code, out, _ = invoke(t, auditCLI, append([]string{"tenant", "acme", "--since", "1h", "--json"}, p...)...)
	if got := findingKinds(t, out); code != exitFindings || !slices.Equal(got, []string{audit.ExpiredLease}) {
		t.Errorf("tenant --since 1h: exit %d, kinds %v, want [expired_lease]", code, got)
	}
	code, out, _ = invoke(t, auditCLI, append([]string{"tenant", "acme"}, p...)...)
	if code != exitFindings || !strings.HasPrefix(out, "AUDIT  tenant acme (enabled)") || !strings.Contains(out, "duplicate_record") {
		t.Errorf("tenant text: exit %d\n%s", code, out)
	}

	for _, args := range [][]string{
		append([]string{"job", "no-such-job"}, p...),
		{"job", gen.ID, "--project", ""},
		append([]string{"job"}, p...),
		append([]string{"job", "a", "b"}, p...),
		append([]string{"jobs", gen.ID}, p...),
		append([]string{"tenant", "acme", "--since", "yesterday"}, p...),
		append([]string{"job", gen.ID, "--since", "1h"}, p...),
		{},
	} {
		if code, _, errs := invoke(t, auditCLI, args...); code != exitCannot || errs == "" {
			t.Errorf("audit %q: exit %d, want 2 with a message; stderr %q", args, code, errs)
		}
	}
}

func TestDeadLettersCommandReplaysOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// The tenant is disabled once the tick has created the Jobs: the expander dead-letters both
	// expand messages as tenant_disabled.
	e, jobs := auditWorld(t, func(e *sim.Env) sim.Policy {
		return sim.Policy{Between: func(d sim.Delivery) {
			if d.Unit() { // the tick's Jobs exist
				if _, err := e.FS.Collection(model.Tenants).Doc("acme").Set(context.Background(), model.Tenant{Name: "acme"}); err != nil {
					t.Error(err)
				}
			}
		}}
	})
	up, gen := jobs[model.TargetUpsert], jobs[model.TargetGenerated]
	p := []string{"--project", e.Project}

	code, out, errs := invoke(t, deadLettersCLI, append([]string{"list"}, p...)...)
	if code != exitFindings || !strings.HasPrefix(out, "DEAD LETTERS (2)") || strings.Count(out, "message  Expander  tenant_disabled") != 2 {
		t.Fatalf("list: exit %d, want 1 and two tenant_disabled dead letters:\n%s%s", code, out, errs)
	}
	code, out, _ = invoke(t, deadLettersCLI, append([]string{"list", "--json", "--job", gen.ID}, p...)...)
	var dls []audit.DeadLetterSummary
	if err := json.Unmarshal([]byte(out), &dls); err != nil || code != exitFindings || len(dls) != 1 || !dls[0].Replayable {
		t.Fatalf("list --json --job: exit %d, %v: %s", code, err, out)
	}
	if code, _, _ := invoke(t, deadLettersCLI, append([]string{"list", "--kind", "record"}, p...)...); code != exitClean {
		t.Errorf("list --kind record: exit %d, want 0 (none)", code)
	}
	if code, out, _ := invoke(t, auditCLI, append([]string{"job", up.ID}, p...)...); code != exitFindings || !strings.Contains(out, "dead_letter") {
		t.Errorf("audit of the dead-lettered Job: exit %d\n%s", code, out)
	}

	e.Tenant(ctx, "acme") // the fix
	if code, out, errs := invoke(t, deadLettersCLI, append([]string{"replay", "--job", up.ID, "--dry-run"}, p...)...); code != exitClean || !strings.Contains(out, audit.WouldReplay) {
		t.Fatalf("replay --dry-run: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := invoke(t, deadLettersCLI, append([]string{"replay", "--job", up.ID}, p...)...); code != exitClean || !strings.Contains(out, audit.Replayed) {
		t.Fatalf("replay --job: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = invoke(t, deadLettersCLI, append([]string{"replay", dls[0].ID, "--json"}, p...)...)
	var res []audit.ReplayResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitClean || len(res) != 1 || res[0].Outcome != audit.Replayed {
		t.Fatalf("replay ID: exit %d, %v\n%s%s", code, err, out, errs)
	}
	if _, err := e.Drain(ctx, sim.Policy{}, 200); err != nil {
		t.Fatal(err)
	}
	for tg, j := range auditJobs(t, e) {
		if j.Status != model.JobCompleted {
			t.Errorf("%s: Job %s after the replay, want COMPLETED", tg, j.Status)
		}
	}
	if code, out, _ := invoke(t, auditCLI, append([]string{"tenant", "acme"}, p...)...); code != exitClean {
		t.Errorf("tenant after the replay: exit %d\n%s", code, out)
	}

	// Replaying again changes nothing.
	if code, _, errs := invoke(t, deadLettersCLI, append([]string{"replay", "--tenant", "acme"}, p...)...); code != exitClean || !strings.Contains(errs, "no dead-lettered message to replay") {
		t.Errorf("second replay --tenant: exit %d, stderr %q", code, errs)
	}
	if code, out, _ := invoke(t, deadLettersCLI, append([]string{"replay", dls[0].ID}, p...)...); code != exitClean || !strings.Contains(out, audit.AlreadyReplayed) {
		t.Errorf("second replay ID: exit %d\n%s", code, out)
	}
	if code, _, _ := invoke(t, deadLettersCLI, append([]string{"list", "--unreplayed"}, p...)...); code != exitClean {
		t.Errorf("list --unreplayed after the replays: exit %d, want 0", code)
	}

	for _, args := range [][]string{
		append([]string{"replay"}, p...),
		append([]string{"replay", "x", "--job", up.ID}, p...),
		append([]string{"replay", "no-such-dead-letter"}, p...),
		append([]string{"list", "extra"}, p...),
		append([]string{"purge"}, p...),
	} {
		if code, _, errs := invoke(t, deadLettersCLI, args...); code != exitCannot || errs == "" {
			t.Errorf("deadletters %q: exit %d, want 2 with a message; stderr %q", args, code, errs)
		}
	}
}
