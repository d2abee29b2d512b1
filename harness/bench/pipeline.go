package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/eventarc"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/stack"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
)

// Modes of a pipeline run.
const (
	ModeGuarded    = "guarded"    // the pipeline as deployed
	ModeUnguarded  = "unguarded"  // idempotency keys removed (the incident's design)
	ModeDuplicates = "duplicates" // guarded, every message delivered twice, the copy 2 s after the first
	ModeUpdated    = "updated"    // guarded, with Options.UpdatedShare of the records updated during the window
	ModeSlowSource = "slowsource" // guarded, with a source at Salesforce's speed (SlowSource)
	ModeLargest    = "largest"    // guarded, the largest dataset the emulator's memory allows (Options.Largest)
)

// Run is one pipeline run: one tick, one Job, on a fresh stack.
type Run struct {
	Mode     string
	Rep      int // repetition, from 1
	Records  int // distinct source records in the window
	Rows     int // source rows (records updated during the window count twice)
	Chunks   int
	Imported int // target records found after the run
	Extra    int // target records beyond one per external ID (duplicated records)

	Elapsed     time.Duration // tick published → Job COMPLETED
	FirstImport time.Duration // tick published → first chunk committed
	Planned     time.Duration // tick published → plan complete (Job PLANNED)

	Stats Stats // the functions' counters, after the run settled

	SourceRequests  int // HTTP requests the fixture source served (pages)
	SourceSearches  int // searches started
	SourceThrottled int // requests refused for the per-org concurrency limit (REQUEST_LIMIT_EXCEEDED)
	SourcePages     int // pages served
	SourceCounts    int // aggregate (count) queries answered, to cut the Job into slices
	// Longest is the longest single delivery of any function, and LongestIn its "Function/class".
	Longest   time.Duration
	LongestIn string
	PeakRSS   int64
	CPU       CPU // CPU seconds used during the run, per process

	Posts, Copies, FailedPosts int64  // local Eventarc
	Profile                    string // CPU profile of the functions process, if taken
}

// RecordsPerSecond is the run's throughput.
func (r Run) RecordsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Records) / r.Elapsed.Seconds()
}

// OK reports whether every record was imported exactly once.
func (r Run) OK() bool { return r.Imported == r.Records && r.Extra == 0 }

type runOptions struct {
	rep         int
	emu         *emu.Emulators
	project     string
	mode        string
	records     int
	seed        int64
	updated     float64
	concurrency int
	binary      string
	logDir      string
	profile     string // write a CPU profile of the functions here
	log         io.Writer
	timeout     time.Duration
	latency     fixture.Latency
}

// runPipeline starts a stack, seeds records, ticks once and waits for the Job to complete.
func runPipeline(ctx context.Context, o runOptions) (r Run, err error) {
	r.Mode, r.Rep = o.mode, o.rep
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	sopts := stack.Options{
		Emulators: o.emu, Project: o.project, LogDir: o.logDir, Concurrency: o.concurrency, Binary: o.binary, Log: o.log,
		RunArgs: []string{"--bench"}, FuncPath: PathPrefix,
	}
	switch o.mode {
	case ModeUnguarded:
		sopts.RunArgs = append(sopts.RunArgs, "--unguarded")
	case ModeDuplicates:
		sopts.Faults = eventarc.Duplicate(2 * time.Second)
	}
	sopts.Latency = o.latency
	if err := os.MkdirAll(o.logDir, 0o755); err != nil {
		return r, err
	}
	s, err := stack.Start(ctx, sopts)
	if err != nil {
		return r, err
	}
	defer s.Stop()

	now := time.Now().UTC().Truncate(time.Millisecond)
	from := now.Add(-24 * time.Hour)
	rows := fixture.Generate(o.seed, o.records, from, now.Add(-config.Default().WindowLag-time.Minute), fixture.GenOptions{UpdatedInWindow: o.updated})
	st := model.SyncSetting{
		ID: "acme-contacts", TenantID: "acme", SourceObject: "Contact", Fields: Fields,
		Target: model.TargetGenerated, Enabled: true, Watermark: from, // ChunkSize 0: the deployment default
	}
	if err := s.Seed(ctx, st, rows); err != nil {
		return r, err
	}
	r.Records, r.Rows = o.records, len(rows)
	procs := []proc{{"functions", s.FunctionsPID()}, {"firestore emulator", emulatorPID(s.Emu.FirestoreHost)},
		{"pubsub emulator", emulatorPID(s.Emu.PubSubHost)}, {"bench (source, Eventarc)", os.Getpid()}}
	cpu0 := sampleCPU(procs)

	if o.profile != "" {
		if err := profile(ctx, s.FuncURL, "start", ""); err != nil {
			return r, err
		}
	}
	start := time.Now()
	tickID, err := s.Tick(ctx)
	if err != nil {
		return r, err
	}
	jobID := model.JobID(st.ID, tickID)
	s.Logf("%s: tick published; waiting for Job %s over %d records", o.mode, jobID, o.records)
	last := time.Now()
	job, done, err := s.WaitJob(ctx, jobID, 250*time.Millisecond, func(_ context.Context, j model.Job) {
		if time.Since(last) > 10*time.Second {
			s.Logf("job %s: %s, %d chunks, %v since the tick", jobID, j.Status, j.ChunkCount, time.Since(start).Round(time.Second))
			last = time.Now()
		}
	})
	if err != nil {
		return r, err
	}
	// The commit that made the Job COMPLETED, by the emulator's clock (this machine's).
	r.Elapsed = done.Sub(start)
	r.Planned = job.PlannedAt.Sub(start)
	r.Chunks = job.ChunkCount
	cpu1 := sampleCPU(procs)
	r.CPU = cpu1.since(cpu0, r.Elapsed)
	if o.profile != "" {
		if err := profile(ctx, s.FuncURL, "stop", o.profile); err != nil {
			return r, err
		}
		r.Profile = o.profile
	}
	s.Logf("%s: Job COMPLETED in %v (%.0f records/s); letting the deliveries settle", o.mode, r.Elapsed.Round(time.Millisecond), r.RecordsPerSecond())
	if err := s.Quiesce(ctx); err != nil {
		return r, err
	}
	if r.Stats, err = fetchStats(ctx, s.FuncURL); err != nil {
		return r, err
	}
	if !r.Stats.FirstImport.IsZero() {
		r.FirstImport = r.Stats.FirstImport.Sub(start)
	}
	if r.PeakRSS, err = s.FunctionsRSS(); err != nil {
		return r, err
	}
	req := s.Fixture.Requests()
	r.SourceRequests, r.SourceSearches, r.SourceThrottled = req.Requests, req.Queries, req.Throttled
	r.SourcePages, r.SourceCounts = req.Pages, req.Counts
	for fn, c := range r.Stats.Counts {
		if c.Longest > r.Longest {
			r.Longest, r.LongestIn = c.Longest, fn
		}
	}
	tot := s.Eventarc.Stats().Total()
	r.Posts, r.Copies, r.FailedPosts = tot.Posts, tot.Copies, tot.Failed
	if err := countTargets(ctx, s.FS, &r); err != nil {
		return r, err
	}
	return r, nil
}

// Fields are the source fields the benchmark's sync setting imports.
var Fields = []string{"Name", "Email", "Phone", "Title"}

func fetchStats(ctx context.Context, base string) (Stats, error) {
	var st Stats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+PathPrefix+"/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("bench: stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("bench: stats: HTTP %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// profile starts ("start") or stops ("stop") a CPU profile of the functions process; stop writes
// it to path.
func profile(ctx context.Context, base, verb, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+PathPrefix+"/cpuprofile/"+verb, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: profile %s: %w", verb, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("bench: profile %s: HTTP %s: %s", verb, resp.Status, b)
	}
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// countTargets counts the target records the run left, with aggregation queries.
func countTargets(ctx context.Context, fs *firestore.Client, r *Run) error {
	kind, _ := model.Kind(model.TargetGenerated) // the bench's setting imports into the generated-ID target
	q := fs.Collection(kind.Records).Where("tenantId", "==", "acme")
	recs, err := countQuery(ctx, q)
	if err != nil {
		return err
	}
	keys, err := countQuery(ctx, fs.Collection(kind.Index).Query)
	if err != nil {
		return err
	}
	r.Imported, r.Extra = keys, recs-keys
	return nil
}

func countQuery(ctx context.Context, q firestore.Query) (int, error) {
	res, err := q.NewAggregationQuery().WithCount("n").Get(ctx)
	if err != nil {
		return 0, fmt.Errorf("bench: count: %w", err)
	}
	if v, ok := res["n"].(interface{ GetIntegerValue() int64 }); ok {
		return int(v.GetIntegerValue()), nil
	}
	return 0, fmt.Errorf("bench: count: unexpected result %T", res["n"])
}
