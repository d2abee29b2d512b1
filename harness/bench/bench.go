// Package bench is the benchmark behind `make bench`: end-to-end throughput and cost per record of
// the pipeline on the real emulators, side by side with the raw Firestore write ceiling and with
// the unguarded pipeline, in one run, written to docs/bench/REPORT.md with a chart.
//
// # What one run measures
//
//   - The ceiling: the documents the pipeline's target writes for each record (the
//     engagementIndex entry and the engagementsGen record), written straight into Firestore with
//     each batching the client offers (BulkWriter, WriteBatch sequentially and concurrently); the
//     best is the most the store takes on this machine.
//   - The pipeline: tick → Job COMPLETED through the local Eventarc, the functions framework and
//     the three functions in their own process, for each dataset size, with the default chunk
//     size; the same without the idempotency guard (Unguarded); and a duplicate-heavy pass where
//     every message is delivered twice, the copy 2 s after the first.
//
// Every pipeline run gets a fresh stack (emulators, fixture source, functions process), so its
// counters, its peak RSS and its emulator's size start from zero.
//
// # Counting
//
// The functions run in `oncesync run --bench` (see Serve): the production wiring with a Firestore
// client whose gRPC interceptor counts documents read, writes committed and RPCs, attributed to
// the entry point and to the delivery class (the first POST of a message ID, or a repeat). Source
// calls are counted by the fixture and, per delivery, by the source client's transport. Nothing
// is estimated.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/fixture"
)

// Options configure a benchmark.
type Options struct {
	Out           string          // report directory (default "docs/bench")
	Sizes         []int           // dataset sizes of the guarded and unguarded runs (default 10,000, 30,000 and 100,000)
	DuplicateSize int             // records of the duplicate-heavy pass (default the largest size)
	Reps          int             // repetitions of the ceiling, guarded and unguarded runs at sizes ≤ RepsUpTo (default 5)
	LargeReps     int             // repetitions at the largest size; the sizes in between run once (default 3)
	DuplicateReps int             // repetitions of the duplicate-heavy pass (default 1)
	RepsUpTo      int             // (default 10,000)
	Concurrency   int             // in-flight deliveries per function (default 8, as the demo)
	Updated       float64         // fraction of records also served with a newer version in every run (default 0)
	UpdatedShare  float64         // the updated pass's fraction, run beside each guarded run at the largest size (default 0.01)
	SlowSource    fixture.Latency // the slow-source pass's source (default 1 s per 2,000-row page, 4 queries at once)
	SlowSize      int             // records of the slow-source pass (default the largest size)
	Largest       int             // records of the largest-dataset pass (default 300,000; 0 after defaults: skipped)
	Seed          int64           // dataset seed (default 1)
	Binary        string          // the oncesync binary (default: this executable)
	Profile       bool            // record a CPU profile of the functions during the largest guarded run
	Log           io.Writer       `json:"-"` // progress (default os.Stderr)
	Timeout       time.Duration   // per pipeline run (default 8 minutes)
	Only          []string        // run only these parts: "ceiling", ModeGuarded, ModeUnguarded, ModeDuplicates
	WarmUp        int             // records imported, then written straight, before measuring (default 30,000; -1: none)
	LogDir        string          // keep every run's emulator and function logs here (default: a temporary directory, removed)
	// Many tenants: TenantSizes settings (default 100, 1,000 and 10,000), SettingsPerTenant to a
	// tenant (default 10), each setting a window of RecordsPerSetting records (default 10).
	TenantSizes       []int
	SettingsPerTenant int
	RecordsPerSetting int
	// Fairness: a tenant's Job of FairSmall records (default 1,000) alone, and FairGap (default 2 s)
	// after the tick of another tenant's Job of Largest records.
	FairSmall int
	FairGap   time.Duration
}

func (o *Options) defaults() error {
	if o.Out == "" {
		o.Out = "docs/bench"
	}
	if len(o.Sizes) == 0 {
		o.Sizes = []int{10_000, 30_000, 100_000}
	}
	sort.Ints(o.Sizes)
	if o.DuplicateSize == 0 {
		o.DuplicateSize = o.Sizes[len(o.Sizes)-1]
	}
	if o.UpdatedShare == 0 {
		o.UpdatedShare = 0.01
	}
	if o.SlowSource == (fixture.Latency{}) {
		o.SlowSource = fixture.Latency{PerRow: 500 * time.Microsecond, MaxConcurrent: 4}
	}
	if o.SlowSize == 0 {
		o.SlowSize = o.Sizes[len(o.Sizes)-1]
	}
	if o.Largest == 0 {
		o.Largest = 300_000
	}
	if o.LargeReps == 0 {
		o.LargeReps = 3
	}
	if o.Reps == 0 {
		o.Reps = 5
	}
	if o.DuplicateReps == 0 {
		o.DuplicateReps = 1
	}
	if o.RepsUpTo == 0 {
		o.RepsUpTo = 10_000
	}
	if o.Concurrency == 0 {
		o.Concurrency = 8
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if o.WarmUp == 0 {
		o.WarmUp = 30_000
	}
	if o.Timeout == 0 {
		o.Timeout = 8 * time.Minute
	}
	if len(o.TenantSizes) == 0 {
		o.TenantSizes = []int{100, 1_000, 10_000}
	}
	sort.Ints(o.TenantSizes)
	if o.SettingsPerTenant == 0 {
		o.SettingsPerTenant = 10
	}
	if o.RecordsPerSetting == 0 {
		o.RecordsPerSetting = 10
	}
	if o.FairSmall == 0 {
		o.FairSmall = 1_000
	}
	if o.FairGap == 0 {
		o.FairGap = 2 * time.Second
	}
	if o.Binary == "" {
		var err error
		if o.Binary, err = os.Executable(); err != nil {
			return err
		}
	}
	for _, n := range append(o.Sizes, o.DuplicateSize) {
		if n < 1 {
			return fmt.Errorf("bench: dataset size %d", n)
		}
	}
	return nil
}

func (o *Options) runs(part string) bool { return len(o.Only) == 0 || slices.Contains(o.Only, part) }

// Results is everything one benchmark measured.
type Results struct {
	Started, Finished time.Time
	Options           Options
	Machine           Machine
	WarmUp            []Run     // the warm-up Jobs, one per emulator session, on cold emulators
	WarmUpCeiling     []Ceiling // the warm-up writes that follow them
	Ceiling           []Ceiling // per size, repetition and strategy
	Runs              []Run     // every measured pipeline run, in the order run
	Tenants           []TenantRun
	Fair              []FairRun
	Sessions          int // emulator pairs started (each warmed up)
}

// SessionDocs is how many documents one emulator pair is given before a fresh one is started.
const SessionDocs = 1_500_000

// Bench runs the benchmark and writes the report and chart into o.Out. The results are returned
// even when a run fails, with the error.
func Bench(ctx context.Context, o Options) (*Results, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	res := &Results{Started: time.Now(), Options: o, Machine: DescribeMachine()}
	logs := o.LogDir
	if logs == "" {
		dir, err := os.MkdirTemp("", "oncesync-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		logs = dir
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Log, "[bench %6.1fs] %s\n", time.Since(res.Started).Seconds(), fmt.Sprintf(format, args...))
	}
	var errs []error
	// The emulators run in sessions: a fresh pair, warmed up first — a cold emulator JVM is
	// several times slower for its first ~100,000 writes, which would drown what we measure —
	// then as many measurements as fit in SessionDocs documents, each in its own project. The
	// emulator never frees a deleted document's memory, and slows to a crawl in garbage
	// collection past a few million.
	var e *emu.Emulators
	defer func() {
		if e != nil {
			e.Stop()
		}
	}()
	used, sessions := 0, 0
	run := func(mode string, n, rep int, profile bool) (Run, bool) {
		name := fmt.Sprintf("%s-%d-%d", mode, n, rep)
		ro := runOptions{
			rep: rep, emu: e, project: name, mode: mode, records: n, seed: o.Seed, updated: o.Updated, concurrency: o.Concurrency,
			binary: o.Binary, logDir: filepath.Join(logs, name), log: io.Discard, timeout: o.Timeout,
		}
		switch mode {
		case ModeUpdated:
			ro.updated = o.UpdatedShare
		case ModeSlowSource:
			ro.latency = o.SlowSource
		}
		if profile {
			ro.profile = filepath.Join(o.Out, "profiles", fmt.Sprintf("%s-%d.pprof", mode, n))
		}
		used += 2 * n
		r, err := runPipeline(ctx, ro)
		if err != nil {
			errs = append(errs, fmt.Errorf("bench: %s: %w", name, err))
			return r, false
		}
		all := r.Stats.Sum()
		logf("%-22s %7d records in %8v: %6.0f records/s, first import after %v, %.2f reads + %.2f writes per record, peak RSS %.0f MB, longest delivery %v (%s)",
			name, r.Records, r.Elapsed.Round(time.Millisecond), r.RecordsPerSecond(), r.FirstImport.Round(time.Millisecond),
			perRecord(all.Reads, r.Records), perRecord(all.Writes, r.Records), float64(r.PeakRSS)/1e6, r.Longest.Round(time.Millisecond), r.LongestIn)
		if !r.OK() {
			errs = append(errs, fmt.Errorf("bench: %s: %d of %d records imported, %d extra", name, r.Imported, r.Records, r.Extra))
		}
		return r, true
	}
	ceiling := func(n, rep int, only ...string) []Ceiling {
		c, err := measureCeiling(ctx, e, n, rep, o.Seed, o.Updated, logf, only...)
		for _, m := range c {
			used += m.Docs
		}
		if err != nil {
			errs = append(errs, err)
		}
		return c
	}
	// session makes sure the emulators can take docs more documents, starting a fresh, warmed-up
	// pair when they cannot.
	session := func(docs int) error {
		if e != nil && used+docs <= SessionDocs {
			return nil
		}
		if e != nil {
			e.Stop()
			e = nil
		}
		sessions++
		logf("session %d: starting the Firestore and Pub/Sub emulators", sessions)
		var err error
		if e, err = emu.Start(ctx, emu.Options{Firestore: true, PubSub: true, LogDir: filepath.Join(logs, fmt.Sprintf("emulators-%d", sessions))}); err != nil {
			return err
		}
		used = 0
		if o.WarmUp > 0 {
			logf("session %d: warming the emulators up: one Job of %d records, then %d records written straight", sessions, o.WarmUp, o.WarmUp)
			if r, ok := run("warmup", o.WarmUp, sessions, false); ok {
				res.WarmUp = append(res.WarmUp, r)
			}
			res.WarmUpCeiling = append(res.WarmUpCeiling, ceiling(o.WarmUp, 0, warmUpStrategy)...)
		}
		return nil
	}

	largest := o.Sizes[len(o.Sizes)-1]
	for _, n := range o.Sizes {
		reps := 1 // the sizes in between only draw the chart's curve
		switch {
		case n <= o.RepsUpTo:
			reps = o.Reps
		case n == largest:
			reps = o.LargeReps
		}
		for rep := 1; rep <= reps && ctx.Err() == nil; rep++ {
			// A repetition: the ceiling's strategies, then guarded and unguarded.
			if err := session(2 * n * (len(strategies) + 2)); err != nil {
				errs = append(errs, err)
				break
			}
			if o.runs("ceiling") {
				res.Ceiling = append(res.Ceiling, ceiling(n, rep)...)
			}
			// Guarded and unguarded alternate, so that drift of the machine hits both alike; at the
			// largest size the updated pass runs beside them.
			modes := []string{ModeGuarded, ModeUnguarded}
			if rep%2 == 0 {
				modes = []string{ModeUnguarded, ModeGuarded}
			}
			if n == largest {
				modes = append(modes, ModeUpdated)
			}
			for _, m := range modes {
				if o.runs(m) && ctx.Err() == nil {
					if r, ok := run(m, n, rep, o.Profile && n == largest && rep == 1); ok {
						res.Runs = append(res.Runs, r)
					}
				}
			}
		}
	}
	for _, pass := range []struct {
		mode string
		n    int
	}{{ModeSlowSource, o.SlowSize}, {ModeLargest, o.Largest}} {
		if !o.runs(pass.mode) || pass.n <= 0 || ctx.Err() != nil {
			continue
		}
		if err := session(2 * pass.n); err != nil {
			errs = append(errs, err)
			continue
		}
		if r, ok := run(pass.mode, pass.n, 1, false); ok {
			res.Runs = append(res.Runs, r)
		}
	}
	if o.runs(ModeDuplicates) {
		for rep := 1; rep <= o.DuplicateReps && ctx.Err() == nil; rep++ {
			if err := session(2 * o.DuplicateSize); err != nil {
				errs = append(errs, err)
				break
			}
			if r, ok := run(ModeDuplicates, o.DuplicateSize, rep, false); ok {
				res.Runs = append(res.Runs, r)
			}
		}
	}
	// Many tenants: each size on a fresh stack, in a session with room for it.
	if o.runs(ModeTenants) {
		for _, n := range o.TenantSizes {
			if ctx.Err() != nil {
				break
			}
			// A fresh emulator pair for each size: the emulator's queries scan every document it
			// holds, so other runs' data would slow this one's per-Job queries.
			if err := session(SessionDocs); err != nil {
				errs = append(errs, err)
				break
			}
			used += n * (2*o.RecordsPerSetting + 8)
			name := fmt.Sprintf("%s-%d", ModeTenants, n)
			ro := runOptions{emu: e, project: name, seed: o.Seed, concurrency: o.Concurrency, binary: o.Binary,
				logDir: filepath.Join(logs, name), log: io.Discard, timeout: max(o.Timeout, 45*time.Minute)}
			tr, err := runTenants(ctx, ro, n, o.SettingsPerTenant, o.RecordsPerSetting)
			if err != nil {
				tr.Err = err.Error()
				errs = append(errs, fmt.Errorf("bench: %s: %w", name, err))
			}
			reads, writes := tr.PerJob()
			logf("%-22s %6d settings over %d tenants (seeded in %v): first Job created %v after the tick, last %v, last COMPLETED %v; longest delivery %v (%s), longest Scheduler delivery %v of %d; %.1f reads + %.1f writes per Job",
				name, n, tr.Tenants, tr.Seeding.Round(time.Second), tr.FirstCreated.Round(time.Millisecond), tr.LastCreated.Round(time.Millisecond),
				tr.LastCompleted.Round(time.Millisecond), tr.Longest.Round(time.Millisecond), tr.LongestIn, tr.SchedulerLongest.Round(time.Millisecond),
				tr.SchedulerDeliveries, reads, writes)
			res.Tenants = append(res.Tenants, tr)
		}
	}
	// Fairness: the small tenant alone, then beside the large Job, with the lanes and on one lane.
	if o.runs(ModeFairness) && o.Largest > 0 {
		// The large Job alone and beside the small one in one session, side by side.
		for _, v := range []string{FairAlone, FairLarge, FairBeside, FairOneLane} {
			if ctx.Err() != nil {
				break
			}
			docs := 2 * o.FairSmall
			if v != FairAlone {
				docs += 2 * o.Largest
			}
			need := docs
			if v == FairLarge {
				need = 2 * docs // and the beside run after it
			}
			if err := session(need); err != nil {
				errs = append(errs, err)
				break
			}
			used += docs
			name := fmt.Sprintf("%s-%s", ModeFairness, strings.ReplaceAll(strings.ReplaceAll(v, ",", ""), " ", "-"))
			ro := runOptions{emu: e, project: name, seed: o.Seed, concurrency: o.Concurrency, binary: o.Binary,
				logDir: filepath.Join(logs, name), log: io.Discard, timeout: o.Timeout}
			fr, err := runFair(ctx, ro, v, o.FairSmall, o.Largest, o.FairGap)
			if err != nil {
				fr.Err = err.Error()
				errs = append(errs, fmt.Errorf("bench: %s: %w", name, err))
			}
			logf("%-22s the small tenant's %d records: tick → COMPLETED %v; the large Job's %d records: %v",
				name, fr.Small, fr.SmallElapsed.Round(time.Millisecond), fr.Large, fr.LargeElapsed.Round(time.Millisecond))
			res.Fair = append(res.Fair, fr)
		}
	}
	res.Sessions = sessions
	res.Finished = time.Now()
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	if err := WriteReport(res); err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

func perRecord(n int64, records int) float64 {
	if records == 0 {
		return 0
	}
	return float64(n) / float64(records)
}
