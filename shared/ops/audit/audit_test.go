package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/audit"
	"github.com/oncesync/oncesync/shared/ops/audit/audittest"
)

var (
	windowStart = time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)
	simStart    = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

// newWorld is an Env with tenant acme and one setting per target (Contact → upsert, Lead →
// generated), each with n generated rows, 10% of them updated again inside the window.
func newWorld(t *testing.T, n, chunkSize int, opts sim.Options) *sim.Env {
	t.Helper()
	opts.Start = simStart
	if opts.PageSize == 0 {
		opts.PageSize = 50
	}
	e := sim.New(t, opts)
	ctx := t.Context()
	e.Tenant(ctx, "acme")
	for i, tg := range []string{model.TargetUpsert, model.TargetGenerated} {
		object := []string{"Contact", "Lead"}[i]
		e.Setting(ctx, model.SyncSetting{
			ID: "acme-" + tg, TenantID: "acme", SourceObject: object, Fields: []string{"Name", "Email"},
			Target: tg, ChunkSize: chunkSize, Enabled: true, Watermark: windowStart,
		})
		e.Fixture.PutRecords(object, fixture.Generate(int64(10+i), n, windowStart, simStart, fixture.GenOptions{UpdatedInWindow: 0.1})...)
	}
	return e
}

// run ticks once, delivers everything under p, and returns the Jobs by target kind.
func run(t *testing.T, e *sim.Env, p sim.Policy) map[string]model.Job {
	t.Helper()
	ctx := t.Context()
	if err := e.Tick(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Drain(ctx, p, 200); err != nil {
		t.Fatalf("drain: %v", err)
	}
	return jobs(t, e)
}

func jobs(t *testing.T, e *sim.Env) map[string]model.Job {
	t.Helper()
	out, err := e.JobsByTarget(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 {
		t.Fatalf("%d jobs, want one per target", len(out))
	}
	return out
}

func auditor(e *sim.Env) *audit.Auditor {
	a := audit.New(e.FS)
	a.Now = e.Clock.Now
	return a
}

func auditJob(t *testing.T, a *audit.Auditor, id string) audit.JobReport {
	t.Helper()
	rep, err := a.Job(t.Context(), id)
	if err != nil {
		t.Fatalf("audit job %s: %v", id, err)
	}
	return rep
}

func jobText(t *testing.T, r audit.JobReport) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func kinds(fs []audit.Finding) []string {
	var out []string
	for _, f := range fs {
		if !slices.Contains(out, f.Kind) {
			out = append(out, f.Kind)
		}
	}
	slices.Sort(out)
	return out
}

func step(r audit.JobReport, name string) audit.StepReport {
	for _, s := range r.Deliveries {
		if s.Step == name {
			return s
		}
	}
	return audit.StepReport{}
}

func TestCleanJobAuditsClean(t *testing.T) {
	t.Parallel()
	e := newWorld(t, 150, 40, sim.Options{})
	for tg, j := range run(t, e, sim.Policy{}) {
		a := auditor(e)
		if tg == model.TargetGenerated {
			a.Parallel = 2              // pages of 2 chunks
			audit.SetPreloadRows(a, -1) // one query per chunk for the records each wrote
		}
		rep := auditJob(t, a, j.ID)
		out := jobText(t, rep)
		if !rep.Clean() {
			t.Errorf("%s: clean Job has findings:\n%s", tg, out)
		}
		p := rep.Plan
		if p.Expected != j.ChunkCount || p.Found != j.ChunkCount || p.Done != j.ChunkCount || p.Rows != j.RecordCount {
			t.Errorf("%s: plan %+v, want %d chunks of %d rows", tg, p, j.ChunkCount, j.RecordCount)
		}
		if !rep.Target.Checked || rep.Target.Chunks != j.ChunkCount || rep.Target.Rows == 0 || rep.Target.Duplicated+rep.Target.Missing+rep.Target.Stale != 0 {
			t.Errorf("%s: target %+v", tg, rep.Target)
		}
		if s := step(rep, audit.StepExpand); s.Claims != 1 || s.Deliveries != 1 || s.Suppressed != 0 {
			t.Errorf("%s: expand step %+v, want one delivery", tg, s)
		}
		if s := step(rep, audit.StepChunk); s.Keys != j.ChunkCount || s.Claims != j.ChunkCount || s.Suppressed != 0 || s.Missing != 0 {
			t.Errorf("%s: chunk step %+v, want %d claims", tg, s, j.ChunkCount)
		}
		if !strings.Contains(out, "RESULT  clean") || !strings.Contains(out, "Job COMPLETED") {
			t.Errorf("%s: text report lacks the result or the completion:\n%s", tg, out)
		}
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte(`{"findings":[]`)) {
			t.Errorf("%s: JSON does not start with the findings: %.80s", tg, b)
		}
		if rep.Reads == 0 {
			t.Errorf("%s: no reads counted", tg)
		}
		t.Logf("%s: %d documents read for %d rows in %d chunks", tg, rep.Reads, j.RecordCount, j.ChunkCount)
	}
}

// Chunks cut short by the byte limit: the audit and the simulator's checker hold the plan to the
// same rule (model.ChunkRule) and both find it clean.
func TestByteCutPlanIsCleanToAuditAndChecker(t *testing.T) {
	t.Parallel()
	e := newWorld(t, 150, 100, sim.Options{Config: func(c *config.Config) { c.MaxChunkBytes = 10_000 }})
	js := run(t, e, sim.Policy{})
	rep, err := e.Check(t.Context(), sim.Expect{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PlanErrors != 0 {
		t.Errorf("the checker finds plan errors in a byte-cut plan: %v", rep.Violations)
	}
	cut := 0
	for tg, j := range js {
		r := auditJob(t, auditor(e), j.ID)
		if !r.Clean() {
			t.Errorf("%s: byte-cut Job has findings:\n%s", tg, jobText(t, r))
		}
		if r.Plan.Expected >= j.ChunkCount && r.Plan.ShortChunks > 0 {
			t.Errorf("%s: plan %+v: byte cuts without more chunks than rows alone need", tg, r.Plan)
		}
		cut += r.Plan.ShortChunks
	}
	if cut == 0 {
		t.Fatal("no chunk was cut by bytes: the test does not test the byte cut")
	}
}

func TestMetadataOnlyAuditReadsLittle(t *testing.T) {
	t.Parallel()
	e := newWorld(t, 150, 40, sim.Options{})
	j := run(t, e, sim.Policy{})[model.TargetGenerated]
	a := auditor(e)
	a.CheckRecords = false
	rep := auditJob(t, a, j.ID)
	if !rep.Clean() || rep.Target.Checked {
		t.Errorf("clean=%v checked=%v", rep.Clean(), rep.Target.Checked)
	}
	// Per chunk: its document, its key and its deliveries counter; per Job: the Job, its slices,
	// the tick's and the slices' keys and counters, the dead letters.
	if max := int64(3*j.ChunkCount + 6 + j.SliceCount); rep.Reads > max {
		t.Errorf("%d reads without record checks, want at most %d", rep.Reads, max)
	}
}

// The incident: the expand message delivered a second time 2 s after the first, while the
// first is writing the plan. The audit shows the suppressed duplicate and finds nothing wrong.
func TestIncidentDuplicateDeliveryIsReportedNotFlagged(t *testing.T) {
	t.Parallel()
	e := newWorld(t, 150, 40, sim.Options{})
	only := func(d sim.Delivery) sim.Plan {
		if d.Function() == "Expander" && d.Attempt == 1 && d.Copy == 0 {
			return sim.Plan{CopyAt: expander.StepChunkWritten, CopyDelay: 2 * time.Second}
		}
		return sim.Plan{}
	}
	for tg, j := range run(t, e, sim.Policy{Plan: only}) {
		rep := auditJob(t, auditor(e), j.ID)
		out := jobText(t, rep)
		if !rep.Clean() {
			t.Errorf("%s: findings:\n%s", tg, out)
		}
		s := step(rep, audit.StepExpand)
		if s.Suppressed != 1 || s.WhileInProgress != 1 || s.Deliveries != 2 || rep.Job.Searches != 1 {
			t.Errorf("%s: expand step %+v, searches %d; want 2 deliveries, 1 suppressed while in progress, 1 search", tg, s, rep.Job.Searches)
		}
		if !strings.Contains(out, "expand: duplicate delivery suppressed (sent back: the work was in progress)") {
			t.Errorf("%s: timeline does not show the suppressed duplicate:\n%s", tg, out)
		}
	}
}

// A crash during the expansion: the lease is taken over and the search resumed — a second
// search, explained by the takeover, so not a finding.
func TestTakeoverAfterCrashIsReportedNotFlagged(t *testing.T) {
	t.Parallel()
	e := newWorld(t, 150, 40, sim.Options{})
	crash := func(d sim.Delivery) sim.Plan {
		if d.Function() == "Expander" && d.Attempt == 1 && d.Copy == 0 {
			return sim.Plan{CrashAt: expander.StepChunkWritten}
		}
		return sim.Plan{}
	}
	for tg, j := range run(t, e, sim.Policy{Plan: crash}) {
		if j.Status != model.JobCompleted {
			t.Fatalf("%s: Job %s", tg, j.Status)
		}
		rep := auditJob(t, auditor(e), j.ID)
		if !rep.Clean() {
			t.Errorf("%s: findings:\n%s", tg, jobText(t, rep))
		}
		if s := step(rep, audit.StepExpand); s.Takeovers != 1 || rep.Job.Searches != 2 {
			t.Errorf("%s: expand step %+v, searches %d; want 1 takeover and 2 searches", tg, s, rep.Job.Searches)
		}
	}
}

func TestPlantedProblemsAreFound(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		target string
		kind   string
		plant  func(ctx context.Context, e *sim.Env, j model.Job) (audit.Finding, error)
	}{
		{"duplicate generated-ID record", model.TargetGenerated, audit.DuplicateRecord, func(ctx context.Context, e *sim.Env, j model.Job) (audit.Finding, error) {
			id, err := audittest.Duplicate(ctx, e.FS, j.ID)
			return audit.Finding{ExternalID: id}, err
		}},
		{"duplicate upsert record", model.TargetUpsert, audit.DuplicateRecord, func(ctx context.Context, e *sim.Env, j model.Job) (audit.Finding, error) {
			id, err := audittest.Duplicate(ctx, e.FS, j.ID)
			return audit.Finding{ExternalID: id}, err
		}},
		{"missing upsert record", model.TargetUpsert, audit.MissingRecord, func(ctx context.Context, e *sim.Env, j model.Job) (audit.Finding, error) {
			id, err := audittest.Missing(ctx, e.FS, j.ID)
			return audit.Finding{ExternalID: id}, err
		}},
		{"missing generated-ID record", model.TargetGenerated, audit.MissingRecord, func(ctx context.Context, e *sim.Env, j model.Job) (audit.Finding, error) {
			id, err := audittest.Missing(ctx, e.FS, j.ID)
			return audit.Finding{ExternalID: id}, err
		}},
		{"extra chunk", model.TargetUpsert, audit.ExtraChunk, func(ctx context.Context, e *sim.Env, j model.Job) (audit.Finding, error) {
			i, err := audittest.ExtraChunk(ctx, e.FS, j.ID)
			return audit.Finding{Chunk: &i}, err
		}},
		{"expired lease", model.TargetGenerated, audit.ExpiredLease, func(ctx context.Context, e *sim.Env, j model.Job) (audit.Finding, error) {
			k, err := audittest.ExpiredLease(ctx, e.FS, j.ID, e.Clock.Now())
			return audit.Finding{Key: k.String()}, err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			e := newWorld(t, 120, 40, sim.Options{})
			j := run(t, e, sim.Policy{})[tc.target]
			want, err := tc.plant(ctx, e, j)
			if err != nil {
				t.Fatal(err)
			}
			a := auditor(e)
			rep := auditJob(t, a, j.ID)
			out := jobText(t, rep)
			if got := kinds(rep.Findings); !slices.Equal(got, []string{tc.kind}) {
				t.Fatalf("finding kinds %v, want [%s]:\n%s", got, tc.kind, out)
			}
			f := rep.Findings[0]
			if len(rep.Findings) != 1 || f.Job != j.ID || f.ExternalID != want.ExternalID || f.Key != want.Key ||
				(want.Chunk != nil && (f.Chunk == nil || *f.Chunk != *want.Chunk)) {
				t.Errorf("findings %+v, want one like %+v", rep.Findings, want)
			}
			// The findings come first in the text report.
			if i, k := strings.Index(out, "FINDINGS"), strings.Index(out, "TIMELINE"); i < 0 || i > k || !strings.Contains(out[i:k], tc.kind) {
				t.Errorf("text report does not list the %s finding first:\n%s", tc.kind, out)
			}
			t.Logf("%s", out)

			trep, err := a.Tenant(ctx, "acme", time.Time{}, time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if got := kinds(trep.Findings); !slices.Equal(got, []string{tc.kind}) || trep.Totals.Jobs != 2 {
				var b bytes.Buffer
				_ = trep.WriteText(&b)
				t.Errorf("tenant audit: kinds %v, %d jobs; want [%s] over 2 jobs:\n%s", got, trep.Totals.Jobs, tc.kind, b.String())
			}
		})
	}
}

func TestTenantAuditRangeAndScan(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newWorld(t, 60, 40, sim.Options{})
	j := run(t, e, sim.Policy{})[model.TargetGenerated]
	a := auditor(e)
	rep, err := a.Tenant(ctx, "acme", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || rep.Totals.Jobs != 2 || rep.Totals.Completed != 2 || !rep.Tenant.Enabled {
		t.Fatalf("clean tenant: %+v", rep)
	}
	id, err := audittest.Duplicate(ctx, e.FS, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	// No Job in range: the duplicate is invisible to the per-Job checks, and found by the scan.
	since := e.Clock.Now().Add(time.Hour)
	if rep, err = a.Tenant(ctx, "acme", since, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() || rep.Totals.Jobs != 0 {
		t.Errorf("audit after the Jobs: jobs %d, findings %v", rep.Totals.Jobs, rep.Findings)
	}
	a.ScanTargets = true
	if rep, err = a.Tenant(ctx, "acme", since, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 1 || rep.Findings[0].Kind != audit.DuplicateRecord || rep.Findings[0].ExternalID != id {
		t.Errorf("scan findings %+v, want the duplicate of %s", rep.Findings, id)
	}
	if rep.Scan == nil || rep.Scan.Duplicated != 1 || rep.Scan.Extra != 1 || rep.Scan.Records == 0 {
		t.Errorf("scan %+v", rep.Scan)
	}
	// With the Jobs in range as well, the duplicate is reported once.
	if rep, err = a.Tenant(ctx, "acme", time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 1 {
		t.Errorf("findings %+v, want the duplicate once", rep.Findings)
	}
}

func TestBadSourceRowIsListedNotReplayed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newWorld(t, 60, 40, sim.Options{})
	e.Fixture.Put("Contact", json.RawMessage(`{"Id":"","SystemModstamp":"2025-12-31T12:00:00.000+0000","Name":"no id"}`))
	j := run(t, e, sim.Policy{})[model.TargetUpsert]
	a := auditor(e)
	rep := auditJob(t, a, j.ID)
	if got := kinds(rep.Findings); !slices.Equal(got, []string{audit.RejectedRow}) {
		t.Fatalf("kinds %v, want [rejected_row]:\n%s", got, jobText(t, rep))
	}
	dls, err := a.DeadLetters(ctx, audit.DeadLetterFilter{Kind: model.DeadRecord})
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].Replayable || dls[0].Job != j.ID || !strings.Contains(dls[0].Payload, `Id="" SystemModstamp=2025-12-31T12:00:00.000+0000 Name="no id"`) {
		t.Fatalf("dead letters %+v", dls)
	}
	r := &audit.Replayer{Client: e.FS, Publisher: e.Pub, Now: e.Clock.Now}
	res, err := r.Replay(ctx, dls[0].ID, audit.ReplayOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != audit.Refused || !strings.Contains(res.Detail, "bad source row") {
		t.Errorf("replay of a bad row: %+v", res)
	}
	if _, err := r.Replay(ctx, "no-such-dead-letter", audit.ReplayOptions{}); err == nil {
		t.Error("replay of a missing dead letter did not fail")
	}
}

// disableAfterTick disables tenant acme as soon as the tick has created the Jobs, so that the
// expander dead-letters their expand messages as tenant_disabled.
func disableAfterTick(t *testing.T, e *sim.Env) sim.Policy {
	return sim.Policy{Between: func(d sim.Delivery) {
		if d.Unit() { // the tick's Jobs exist
			if _, err := e.FS.Collection(model.Tenants).Doc("acme").Set(context.Background(), model.Tenant{Name: "acme", Enabled: false}); err != nil {
				t.Error(err)
			}
		}
	}}
}

func TestReplayCompletesTheJobOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	e := newWorld(t, 90, 40, sim.Options{})
	byTarget := run(t, e, disableAfterTick(t, e))
	a := auditor(e)
	dls, err := a.DeadLetters(ctx, audit.DeadLetterFilter{Tenant: "acme", Reason: "tenant_disabled"})
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 {
		t.Fatalf("%d tenant_disabled dead letters, want one per Job: %+v", len(dls), dls)
	}
	for _, j := range byTarget {
		if j.Status != model.JobPending {
			t.Fatalf("Job %s is %s, want PENDING", j.ID, j.Status)
		}
		if got := kinds(auditJob(t, a, j.ID).Findings); !slices.Equal(got, []string{audit.DeadLetter}) {
			t.Errorf("Job %s: kinds %v, want [dead_letter]", j.ID, got)
		}
	}

	e.Tenant(ctx, "acme") // the fix: enabled again
	// The pipeline abandons (deletes) the key of a message it dead-letters; deployments before
	// that left it DONE, which a replay must reopen. The second dead letter is given such a key.
	legacy := dls[1]
	legacyKey := idem.ExpandKey(legacy.Job)
	if _, err := e.FS.Collection(model.Keys).Doc(legacyKey.DocID()).Set(ctx, idem.Doc{
		Key: legacyKey.String(), Scope: legacyKey.Scope, State: idem.Done, Owner: "Expander/old", Attempts: 1,
		Labels:    map[string]string{"tenant": "acme", "job": legacy.Job, "messageId": legacy.MessageID},
		CreatedAt: e.Clock.Now(), UpdatedAt: e.Clock.Now(), DoneAt: e.Clock.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	r := &audit.Replayer{Client: e.FS, Publisher: e.Pub, Now: e.Clock.Now}
	for _, d := range dls {
		dry, err := r.Replay(ctx, d.ID, audit.ReplayOptions{DryRun: true})
		if err != nil || dry.Outcome != audit.WouldReplay || (d.ID == legacy.ID) != (dry.ReopenedKey != "") {
			t.Fatalf("dry run of %s: %+v, %v", d.ID, dry, err)
		}
	}
	for _, d := range dls {
		res, err := r.Replay(ctx, d.ID, audit.ReplayOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantKey := ""
		if d.ID == legacy.ID {
			wantKey = legacyKey.String()
		}
		if res.Outcome != audit.Replayed || res.MessageID == "" || res.Topic != sim.TopicExpand || res.ReopenedKey != wantKey || res.Replays != 1 {
			t.Errorf("replay: %+v, want reopened key %q", res, wantKey)
		}
	}
	if _, err := e.Drain(ctx, sim.Policy{}, 200); err != nil {
		t.Fatal(err)
	}
	after := jobs(t, e)
	for tg, j := range after {
		if j.Status != model.JobCompleted {
			t.Errorf("%s: Job %s after the replay, want COMPLETED", tg, j.Status)
		}
		rep := auditJob(t, a, j.ID)
		if !rep.Clean() {
			t.Errorf("%s: findings after the replay:\n%s", tg, jobText(t, rep))
		}
		if len(rep.DeadLetters) != 1 || rep.DeadLetters[0].Replays != 1 || rep.DeadLetters[0].ReplayMessageID == "" {
			t.Errorf("%s: dead letters %+v", tg, rep.DeadLetters)
		}
	}

	// Replaying again changes nothing: no message, no write.
	for _, d := range dls {
		res, err := r.Replay(ctx, d.ID, audit.ReplayOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Outcome != audit.AlreadyReplayed || res.MessageID != "" || res.Replays != 1 {
			t.Errorf("second replay: %+v", res)
		}
	}
	if n := pending(t, e, sim.TopicExpand); n != 0 {
		t.Errorf("%d expand messages after the second replay, want none", n)
	}
	// Another dead letter of the same expansion (a re-publish by the sweep, set aside before the
	// fix) is resolved by the Job's completion: no finding, nothing to replay.
	snap, err := e.FS.Collection(model.DeadLetters).Doc(dls[0].ID).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other := snap.Data()
	other["messageId"], other["replays"], other["replayedAt"] = "sweep-copy", 0, time.Time{}
	if _, err := e.FS.Collection(model.DeadLetters).Doc("Expander~sweep-copy").Set(ctx, other); err != nil {
		t.Fatal(err)
	}
	rep := auditJob(t, a, dls[0].Job)
	if !rep.Clean() || len(rep.DeadLetters) != 2 {
		t.Errorf("with a resolved dead letter: findings %v, dead letters %+v", rep.Findings, rep.DeadLetters)
	}
	listed, err := a.DeadLetters(ctx, audit.DeadLetterFilter{Job: dls[0].Job, Unreplayed: true})
	if err != nil || len(listed) != 1 || !listed[0].Resolved || listed[0].NeedsAction() {
		t.Errorf("unreplayed dead letters: %+v, %v", listed, err)
	}
	if res, err := r.Replay(ctx, "Expander~sweep-copy", audit.ReplayOptions{}); err != nil || res.Outcome != audit.NotNeeded {
		t.Errorf("replay of the resolved copy: %+v, %v", res, err)
	}

	// Forced, it publishes again, and the pipeline acks the copy as a duplicate: nothing changes.
	res, err := r.Replay(ctx, dls[0].ID, audit.ReplayOptions{Force: true})
	if err != nil || res.Outcome != audit.Replayed || res.Replays != 2 || res.ReopenedKey != "" {
		t.Errorf("forced replay: %+v, %v", res, err)
	}
	if _, err := e.Drain(ctx, sim.Policy{}, 200); err != nil {
		t.Fatal(err)
	}
	for tg, j := range jobs(t, e) {
		if !j.CompletedAt.Equal(after[tg].CompletedAt) || j.Imported != after[tg].Imported || j.Searches != after[tg].Searches {
			t.Errorf("%s: the Job changed after the replays: %+v, was %+v", tg, j, after[tg])
		}
	}
}

// pending counts the messages waiting on the Env's subscription to topic (and leaves them).
func pending(t *testing.T, e *sim.Env, topic string) int {
	t.Helper()
	resp, err := e.PS.SubscriptionAdminClient.Pull(t.Context(), &pubsubpb.PullRequest{
		Subscription: emu.SubscriptionName(e.PS, "sim-"+topic), MaxMessages: 10, ReturnImmediately: true, //lint:ignore SA1019 quiescence check
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.ReceivedMessages)
}
