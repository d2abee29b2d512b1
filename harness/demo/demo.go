// Package demo runs the main job end to end on the local stack: one tick, and the Jobs of two
// tenants, each connected to its own org (its own instance, records and credentials: the JWT
// bearer flow through the fixture's login host, access tokens that end every few seconds), over
// generated windows of source records, expanded, chunked and imported side by side through the
// real emulators and the functions framework — optionally with every message delivered twice, two
// seconds apart, as in the incident — and reports what was imported, and each tenant's token
// refreshes.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"

	"github.com/oncesync/oncesync/harness/eventarc"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/stack"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/audit"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Options configure a demo run.
type Options struct {
	Records    int           // distinct source records in the window (default 20,000)
	ChunkSize  int           // records per chunk (default 500)
	Duplicates bool          // deliver every message a second time, 2 s after the first
	Seed       int64         // dataset seed
	Updated    float64       // fraction of records that also appear with a newer version (updated while paging)
	Timeout    time.Duration // give up after this long (default 10 min)
	// TracePage, when set, is where the Job's trace is written as an HTML page (the functions
	// export their spans to a file for it: ONCESYNC_TRACES=file:…).
	TracePage string
	Out       io.Writer
	Stack     stack.Options
}

// Report is what the demo found.
type Report struct {
	JobID                string
	RecordsInWindow      int // distinct external IDs the source holds in the Job's window
	RowsInWindow         int // rows, counting a record updated during the window once per version
	Imported             int // target records for the tenant
	DuplicateRecords     int // target records beyond one per external ID
	Chunks               int
	DuplicatesSuppressed int // deliveries refused by an idempotency key
	Posts, Copies        int64
	DeadLetters          int
	Searches             int
	Audit                *audit.JobReport // the audit of the demo's Job
	Elapsed              time.Duration    // tick published → Job COMPLETED
	FirstImport          time.Duration    // tick published → first chunk DONE
	RecordsPerSecond     float64
	Trace                Trace  // the Job's trace, when Options.TracePage is set
	TracePage            string // where it was written
	// Tenants are both tenants' results (acme's Job is the one above, and the audited one).
	Tenants []TenantResult
}

// TenantResult is one tenant's import, from its own org.
type TenantResult struct {
	Tenant, Org, JobID string
	Records            int // distinct records in its window, in its org
	Imported           int
	Duplicates         int
	Foreign            int // records that did not come from its own org
	TokensIssued       int // access tokens its connection obtained
	SessionsEnded      int // tokens its org refused as ended (each cost one refresh, no failure)
}

// sessionTimeout is the demo orgs' session timeout: short, so that the demo refreshes tokens.
const sessionTimeout = 3 * time.Second

// orgs of the demo's two tenants.
var demoTenants = []struct{ tenant, org string }{{"acme", "00DACME0000001"}, {"globex", "00DGLBX0000001"}}

// OK reports whether every record was imported exactly once.
func (r Report) OK() bool {
	for _, t := range r.Tenants {
		if t.Imported != t.Records || t.Duplicates != 0 || t.Foreign != 0 {
			return false
		}
	}
	return len(r.Tenants) == len(demoTenants) && r.Imported == r.RecordsInWindow && r.DuplicateRecords == 0 && r.DeadLetters == 0 &&
		r.Audit != nil && r.Audit.Clean()
}

// Run runs the demo.
func Run(ctx context.Context, o Options) (Report, error) {
	if o.Records == 0 {
		o.Records = 20000
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = 500
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Duplicates {
		o.Stack.Faults = eventarc.Duplicate(2 * time.Second)
	}
	o.Stack.Log = o.Out
	o.Stack.SessionTimeout = sessionTimeout
	var spansFile string
	if o.TracePage != "" {
		dir, err := os.MkdirTemp("", "oncesync-demo-spans")
		if err != nil {
			return Report{}, fmt.Errorf("demo: %w", err)
		}
		defer os.RemoveAll(dir)
		spansFile = filepath.Join(dir, "spans.jsonl")
		o.Stack.ExtraEnv = append(o.Stack.ExtraEnv, config.EnvTraces+"=file:"+spansFile, config.EnvTraceSample+"=1")
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	s, err := stack.Start(ctx, o.Stack)
	if err != nil {
		return Report{}, err
	}
	defer s.Stop()

	now := time.Now().UTC().Truncate(time.Millisecond)
	from := now.Add(-24 * time.Hour)
	var r Report
	var st model.SyncSetting
	for i, dt := range demoTenants {
		if _, err := s.AddOrg(dt.org); err != nil {
			return Report{}, err
		}
		n := o.Records
		if i > 0 {
			n = max(o.Records/4, 1)
		}
		rows := fixture.Generate(o.Seed+int64(i), n, from, now.Add(-config.Default().WindowLag-time.Minute), fixture.GenOptions{UpdatedInWindow: o.Updated})
		for j := range rows {
			rows[j].ID = fmt.Sprintf("%s%s", rows[j].ID[:3], strings.ToUpper(dt.tenant[:2])+rows[j].ID[5:]) // whose org a record came from shows in its ID
		}
		ts := model.SyncSetting{
			ID: dt.tenant + "-contacts", TenantID: dt.tenant, SourceObject: "Contact", Fields: []string{"Name", "Email", "Phone", "Title"},
			Target: model.TargetGenerated, ChunkSize: o.ChunkSize, Enabled: true, Watermark: from,
		}
		if err := s.SeedOrg(ctx, dt.org, ts, rows); err != nil {
			return Report{}, err
		}
		if err := s.Connect(ctx, dt.tenant, dt.org); err != nil {
			return Report{}, err
		}
		ids := map[string]bool{}
		for _, row := range rows {
			ids[row.ID] = true
		}
		r.Tenants = append(r.Tenants, TenantResult{Tenant: dt.tenant, Org: dt.org, Records: len(ids)})
		s.Logf("tenant %s: setting %s, connected to its own org %s (JWT bearer flow; sessions end every %v), which holds %d records (%d rows)",
			dt.tenant, ts.ID, dt.org, sessionTimeout, len(ids), len(rows))
		if i == 0 {
			st = ts
			r.RecordsInWindow, r.RowsInWindow = len(ids), len(rows)
		}
	}
	s.Logf("as these do on a deployment:\n  oncesync-ops tenants add acme\n  oncesync-ops tenants connect acme --client-id KEY --username USER --key-file server.key\n  oncesync-ops settings add %s --tenant acme --object %s --fields %s --target %s --chunk-size %d --since %s",
		st.ID, st.SourceObject, strings.Join(st.Fields, ","), st.Target, st.ChunkSize, from.Format(time.RFC3339Nano))
	if o.Duplicates {
		s.Logf("DUPLICATES=1: every message is delivered twice, the copy 2 s after the first (the incident)")
	}

	tickID, err := s.Tick(ctx)
	if err != nil {
		return r, err
	}
	start := time.Now()
	r.JobID = model.JobID(st.ID, tickID)
	s.Logf("tick %s published; waiting for Job %s", tickID, r.JobID)
	job, _, err := s.WaitJob(ctx, r.JobID, time.Second, progress(s))
	if err != nil {
		return r, err
	}
	// Timed by the documents, not by the once-a-second poll: the Job's completion and the first
	// chunk's DONE are stamped by the functions, on this machine's clock.
	r.Elapsed = job.CompletedAt.Sub(start)
	if r.FirstImport, err = firstImport(ctx, s.FS, r.JobID, start); err != nil {
		return r, err
	}
	r.RecordsPerSecond = float64(job.RecordCount) / r.Elapsed.Seconds()
	r.Chunks, r.Searches = job.ChunkCount, job.Searches
	s.Logf("Job COMPLETED in %v", r.Elapsed.Round(time.Millisecond))
	for i := range r.Tenants[1:] {
		t := &r.Tenants[i+1]
		t.JobID = model.JobID(t.Tenant+"-contacts", tickID)
		if _, _, err := s.WaitJob(ctx, t.JobID, time.Second, progress(s)); err != nil {
			return r, err
		}
	}
	s.Logf("every Job COMPLETED; letting in-flight duplicates arrive")
	if err := s.Quiesce(ctx); err != nil {
		return r, err
	}
	if err := count(ctx, s.FS, &r); err != nil {
		return r, err
	}
	r.Tenants[0].JobID = r.JobID
	stats := s.Login.Stats()
	for i := range r.Tenants {
		t := &r.Tenants[i]
		if err := countTenant(ctx, s.FS, t); err != nil {
			return r, err
		}
		for k, v := range stats[t.Org] {
			if strings.HasPrefix(k, "token issued") {
				t.TokensIssued += v
			}
		}
		t.SessionsEnded = stats[t.Org]["session expired"]
	}
	tot := s.Eventarc.Stats().Total()
	r.Posts, r.Copies = tot.Posts, tot.Copies
	rep, err := audit.New(s.FS).Job(ctx, r.JobID)
	if err != nil {
		return r, fmt.Errorf("demo: audit: %w", err)
	}
	r.Audit = &rep
	if o.TracePage != "" {
		if err := r.writeTrace(job.Trace, spansFile, o.TracePage); err != nil {
			return r, err
		}
	}
	return r, nil
}

// writeTrace writes the page of the Job's trace from the spans the functions exported.
func (r *Report) writeTrace(traceID, spansFile, path string) error {
	spans, err := telemetry.ReadFile(spansFile)
	if err != nil {
		return err
	}
	r.Trace = TraceOf(traceID, spans)
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("demo: trace page: %w", err)
	}
	if err := WritePage(f, r.Trace); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("demo: trace page: %w", err)
	}
	r.TracePage, _ = filepath.Abs(path)
	return nil
}

// firstImport is the time from start to the first chunk DONE.
func firstImport(ctx context.Context, fs *firestore.Client, jobID string, start time.Time) (time.Duration, error) {
	docs, err := fs.Collection(model.Jobs).Doc(jobID).Collection(model.Chunks).Where("status", "==", model.ChunkDone).
		Select("doneAt").Documents(ctx).GetAll()
	if err != nil {
		return 0, fmt.Errorf("demo: chunks of %s: %w", jobID, err)
	}
	var first time.Time
	for _, d := range docs {
		if v, err := d.DataAt("doneAt"); err == nil {
			if t, ok := v.(time.Time); ok && (first.IsZero() || t.Before(first)) {
				first = t
			}
		}
	}
	if first.IsZero() {
		return 0, nil
	}
	return first.Sub(start), nil
}

// progress reports the Job's progress while the demo waits for it.
func progress(s *stack.Stack) func(context.Context, model.Job) {
	last := ""
	return func(ctx context.Context, j model.Job) {
		done := 0 // chunks import while the plan is still being written (streaming)
		q := s.FS.Collection(model.Jobs).Doc(j.ID).Collection(model.Chunks).Where("status", "==", model.ChunkDone)
		if res, err := q.NewAggregationQuery().WithCount("n").Get(ctx); err == nil {
			done = intOf(res["n"])
		}
		line := fmt.Sprintf("job %s: %s, chunks %d/%d done, %d records planned", j.ID, j.Status, done, j.ChunkCount, j.RecordCount)
		if line != last {
			s.Logf("%s", line)
			last = line
		}
	}
}

func count(ctx context.Context, fs *firestore.Client, r *Report) error {
	seen := map[string]int{}
	kind, _ := model.Kind(model.TargetGenerated) // the demo's setting imports into the generated-ID target
	it := fs.Collection(kind.Records).Where("tenantId", "==", "acme").Select("externalId").Documents(ctx)
	defer it.Stop()
	for {
		d, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return fmt.Errorf("demo: count engagements: %w", err)
		}
		id, _ := d.DataAt("externalId")
		seen[fmt.Sprint(id)]++
		r.Imported++
	}
	for _, n := range seen {
		r.DuplicateRecords += n - 1
	}
	r.Imported -= r.DuplicateRecords
	dl, err := fs.Collection(model.DeadLetters).Documents(ctx).GetAll()
	if err != nil {
		return err
	}
	r.DeadLetters = len(dl)
	docs, err := fs.Collection(model.Deliveries).Documents(ctx).GetAll()
	if err != nil {
		return err
	}
	for _, d := range docs {
		var c idem.Deliveries
		if err := d.DataTo(&c); err != nil {
			return err
		}
		r.DuplicatesSuppressed += c.Duplicates
	}
	return nil
}

// countTenant counts t's target records, and those that did not come from its own org.
func countTenant(ctx context.Context, fs *firestore.Client, t *TenantResult) error {
	kind, _ := model.Kind(model.TargetGenerated)
	docs, err := fs.Collection(kind.Records).Where("tenantId", "==", t.Tenant).Select("externalId").Documents(ctx).GetAll()
	if err != nil {
		return fmt.Errorf("demo: records of %s: %w", t.Tenant, err)
	}
	seen := map[string]bool{}
	mark := strings.ToUpper(t.Tenant[:2])
	for _, d := range docs {
		id, _ := d.DataAt("externalId")
		s := fmt.Sprint(id)
		if seen[s] {
			t.Duplicates++
		}
		seen[s] = true
		if len(s) < 5 || s[3:5] != mark {
			t.Foreign++
		}
	}
	t.Imported = len(seen)
	return nil
}

func intOf(v any) int {
	if x, ok := v.(interface{ GetIntegerValue() int64 }); ok {
		return int(x.GetIntegerValue())
	}
	return 0
}

// Write prints the report as a table.
func (r Report) Write(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\n== oncesync demo report ==\t\n")
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("job", r.JobID)
	row("records in the window", r.RecordsInWindow)
	row("rows in the window (with updates)", r.RowsInWindow)
	row("records imported", r.Imported)
	row("duplicate records", r.DuplicateRecords)
	row("chunks", r.Chunks)
	row("source searches", r.Searches)
	row("deliveries (POSTs)", r.Posts)
	row("injected duplicate deliveries", r.Copies)
	row("duplicates suppressed by keys", r.DuplicatesSuppressed)
	row("dead letters", r.DeadLetters)
	row("tick → first chunk imported", r.FirstImport.Round(time.Millisecond))
	row("elapsed (tick → COMPLETED)", r.Elapsed.Round(time.Millisecond))
	row("records/s", fmt.Sprintf("%.0f", r.RecordsPerSecond))
	if r.TracePage != "" {
		row("the Job's trace", fmt.Sprintf("%s: %d spans, %d deliveries, %d of them duplicates (suppressed or sent back, each linked to the delivery holding its key)",
			r.Trace.ID, len(r.Trace.Spans), r.Trace.Deliveries, r.Trace.Duplicates))
		row("open it in a browser", "file://"+r.TracePage)
	}
	for _, t := range r.Tenants {
		row("tenant "+t.Tenant, fmt.Sprintf("org %s: %d of %d records imported, %d duplicates, %d from another org; %d access tokens, %d sessions ended mid-import (each one refresh, no failure)",
			t.Org, t.Imported, t.Records, t.Duplicates, t.Foreign, t.TokensIssued, t.SessionsEnded))
	}
	verdict := "OK: every record of both tenants imported exactly once, each from its own org, and the audit is clean"
	if !r.OK() {
		verdict = "FAILED: records lost or duplicated"
	}
	row("verdict", verdict)
	tw.Flush()
	if r.Audit != nil {
		fmt.Fprintf(w, "\n== oncesync-ops audit job %s ==\n", r.JobID)
		_ = r.Audit.WriteText(w)
	}
}
