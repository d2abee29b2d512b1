package bench

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/stack"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/settings"
)

// Many tenants (issue #24): thousands of settings scheduled by one tick, and a small tenant's Job
// imported alone and beside another tenant's large one.

// Parts of the benchmark (Options.Only) measured here.
const (
	ModeTenants  = "tenants"  // tenant scale: Options.TenantSizes settings, one tick
	ModeFairness = "fairness" // a small tenant alone, beside a large Job, and beside it on one lane
)

// Fairness variants.
const (
	FairAlone   = "alone"            // the small tenant's Job by itself
	FairLarge   = "large alone"      // the large Job by itself, in the session of the beside run
	FairBeside  = "beside"           // started FairGap after a large Job's tick, with the lanes as deployed
	FairOneLane = "beside, one lane" // the same with ONCESYNC_BULK_AFTER=0: every chunk on one lane
)

// benchObjects are the source objects of a tenant's settings (setting k reads the k-th): each
// setting its own object, so a tenant's settings import distinct records.
var benchObjects = []string{"Contact", "Lead", "Account", "Opportunity", "Case", "Task", "Event", "Campaign", "Contract", "Order"}

// TenantRun is one tenant-scale run: Settings sync settings over Tenants tenants, each setting a
// window of RecordsPer records, scheduled by one tick on a fresh stack.
type TenantRun struct {
	Settings, Tenants, RecordsPer int
	Seeding                       time.Duration // tenants connected and settings added (not measured further)
	// From the tick: the first and the last Job created (their createdAt), the last Job
	// COMPLETED (its completedAt).
	FirstCreated, LastCreated, LastCompleted time.Duration
	Jobs, Completed                          int
	Longest                                  time.Duration // the longest delivery of any function
	LongestIn                                string
	SchedulerLongest                         time.Duration // the longest Scheduler delivery (a listing, a unit or a sweep page)
	SchedulerDeliveries                      int64
	Stats                                    Stats
	CPU                                      CPU
	Err                                      string
}

// PerJob returns the Firestore reads and writes per Job, every function's summed.
func (r TenantRun) PerJob() (reads, writes float64) {
	all := r.Stats.Sum()
	n := float64(max(r.Jobs, 1))
	return float64(all.Reads) / n, float64(all.Writes) / n
}

// FairRun is one fairness run.
type FairRun struct {
	Variant      string
	Small, Large int           // records of the small tenant's Job, and of the large one (0: none)
	Gap          time.Duration // the large Job's tick → the small one's
	SmallElapsed time.Duration // the small Job's tick → COMPLETED
	LargeElapsed time.Duration // the large Job's tick → COMPLETED (0: none)
	CPU          CPU
	Err          string
}

// seedTenants connects tenants to the stack's org (each through a connected app of its own, one
// key for all) and adds perTenant settings to each, until n settings; 8 at a time.
func seedTenants(ctx context.Context, s *stack.Stack, n, perTenant int, from time.Time) (int, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return 0, err
	}
	tenants := (n + perTenant - 1) / perTenant
	a := settings.Admin{FS: s.FS}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for t := range tenants {
		g.Go(func() error {
			id := fmt.Sprintf("t%05d", t)
			if err := a.AddTenant(gctx, model.Tenant{ID: id, Name: id, Enabled: true}); err != nil {
				return err
			}
			if err := s.ConnectWith(gctx, id, stack.DeploymentOrg, key); err != nil {
				return err
			}
			for k := 0; k < perTenant && t*perTenant+k < n; k++ {
				st := model.SyncSetting{
					ID: fmt.Sprintf("%s-s%d", id, k), TenantID: id, SourceObject: benchObjects[k%len(benchObjects)], Fields: Fields,
					Target: model.TargetGenerated, Enabled: true, Watermark: from,
				}
				if err := a.AddSetting(gctx, st); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return tenants, g.Wait()
}

// runTenants schedules n settings with one tick and waits for every Job to complete.
func runTenants(ctx context.Context, o runOptions, n, perTenant, recordsPer int) (r TenantRun, err error) {
	r.Settings, r.RecordsPer = n, recordsPer
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := os.MkdirAll(o.logDir, 0o755); err != nil {
		return r, err
	}
	s, err := stack.Start(ctx, stack.Options{
		Emulators: o.emu, Project: o.project, LogDir: o.logDir, Concurrency: o.concurrency, Binary: o.binary, Log: o.log,
		RunArgs: []string{"--bench"}, FuncPath: PathPrefix,
	})
	if err != nil {
		return r, err
	}
	defer s.Stop()
	now := time.Now().UTC().Truncate(time.Millisecond)
	from := now.Add(-24 * time.Hour)
	for i, obj := range benchObjects {
		s.Fixture.PutRecords(obj, fixture.Generate(o.seed+int64(i), recordsPer, from, now.Add(-config.Default().WindowLag-time.Minute), fixture.GenOptions{})...)
	}
	seeding := time.Now()
	if r.Tenants, err = seedTenants(ctx, s, n, perTenant, from); err != nil {
		return r, fmt.Errorf("bench: seed %d settings: %w", n, err)
	}
	r.Seeding = time.Since(seeding)
	procs := []proc{{"functions", s.FunctionsPID()}, {"firestore emulator", emulatorPID(s.Emu.FirestoreHost)},
		{"pubsub emulator", emulatorPID(s.Emu.PubSubHost)}, {"bench (source, Eventarc)", os.Getpid()}}
	cpu0 := sampleCPU(procs)
	start := time.Now()
	if _, err := s.Tick(ctx); err != nil {
		return r, err
	}
	s.Logf("tenants: tick published; waiting for %d Jobs", n)
	completed := s.FS.Collection(model.Jobs).Where("status", "==", string(model.JobCompleted))
	for {
		c, err := countQuery(ctx, completed)
		if err != nil {
			return r, err
		}
		if c >= n {
			break
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("bench: %d of %d Jobs completed: %w", c, n, ctx.Err())
		case <-time.After(time.Second):
		}
	}
	r.CPU = sampleCPU(procs).since(cpu0, time.Since(start))
	if err := s.Quiesce(ctx); err != nil {
		return r, err
	}
	if r.Stats, err = fetchStats(ctx, s.FuncURL); err != nil {
		return r, err
	}
	docs, err := s.FS.Collection(model.Jobs).Select("createdAt", "completedAt", "status").Documents(ctx).GetAll()
	if err != nil {
		return r, err
	}
	var first, last, done time.Time
	for _, d := range docs {
		var j struct {
			CreatedAt   time.Time `firestore:"createdAt"`
			CompletedAt time.Time `firestore:"completedAt"`
			Status      string    `firestore:"status"`
		}
		if err := d.DataTo(&j); err != nil {
			return r, err
		}
		r.Jobs++
		if j.Status == string(model.JobCompleted) {
			r.Completed++
		}
		if first.IsZero() || j.CreatedAt.Before(first) {
			first = j.CreatedAt
		}
		last = latest(last, j.CreatedAt)
		done = latest(done, j.CompletedAt)
	}
	r.FirstCreated, r.LastCreated, r.LastCompleted = first.Sub(start), last.Sub(start), done.Sub(start)
	for fn, c := range r.Stats.Counts {
		if c.Longest > r.Longest {
			r.Longest, r.LongestIn = c.Longest, fn
		}
	}
	sch := r.Stats.Sum(config.Scheduler+"/"+First, config.Scheduler+"/"+Repeat)
	r.SchedulerLongest, r.SchedulerDeliveries = sch.Longest, sch.Deliveries
	if r.Jobs != n || r.Completed != n {
		return r, fmt.Errorf("bench: %d settings made %d Jobs, %d completed", n, r.Jobs, r.Completed)
	}
	return r, nil
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// smallOrg is the small tenant's own org in the fairness runs.
const smallOrg = "00D00000000small"

// runFair imports a small tenant's Job of small records on its own org: alone, or FairGap after
// the tick of a large tenant's Job of large records (with the lanes as deployed, or on one lane).
func runFair(ctx context.Context, o runOptions, variant string, small, large int, gap time.Duration) (r FairRun, err error) {
	r.Variant, r.Small = variant, small
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := os.MkdirAll(o.logDir, 0o755); err != nil {
		return r, err
	}
	sopts := stack.Options{
		Emulators: o.emu, Project: o.project, LogDir: o.logDir, Concurrency: o.concurrency, Binary: o.binary, Log: o.log,
		RunArgs: []string{"--bench"}, FuncPath: PathPrefix,
	}
	if variant == FairOneLane {
		sopts.ExtraEnv = []string{config.EnvBulkAfter + "=0"}
	}
	s, err := stack.Start(ctx, sopts)
	if err != nil {
		return r, err
	}
	defer s.Stop()
	now := time.Now().UTC().Truncate(time.Millisecond)
	from, to := now.Add(-24*time.Hour), now.Add(-config.Default().WindowLag-time.Minute)

	// The small tenant, connected to its own org, its setting added only when its tick comes.
	org, err := s.AddOrg(smallOrg)
	if err != nil {
		return r, err
	}
	org.PutRecords("Contact", fixture.Generate(o.seed+7, small, from, to, fixture.GenOptions{})...)
	a := settings.Admin{FS: s.FS}
	if err := a.AddTenant(ctx, model.Tenant{ID: "small", Name: "small", Enabled: true}); err != nil {
		return r, err
	}
	if err := s.Connect(ctx, "small", smallOrg); err != nil {
		return r, err
	}
	smallSetting := model.SyncSetting{ID: "small-contacts", TenantID: "small", SourceObject: "Contact", Fields: Fields,
		Target: model.TargetGenerated, Enabled: true, Watermark: from}

	procs := []proc{{"functions", s.FunctionsPID()}, {"firestore emulator", emulatorPID(s.Emu.FirestoreHost)},
		{"pubsub emulator", emulatorPID(s.Emu.PubSubHost)}, {"bench (source, Eventarc)", os.Getpid()}}
	cpu0 := sampleCPU(procs)
	var largeJob string
	var largeStart time.Time
	if variant == FairLarge {
		r.Small = 0
	}
	if variant != FairAlone {
		r.Large = large
		bulk := model.SyncSetting{ID: "bulk-contacts", TenantID: "bulk", SourceObject: "Contact", Fields: Fields,
			Target: model.TargetGenerated, Enabled: true, Watermark: from}
		if err := s.Seed(ctx, bulk, fixture.Generate(o.seed, large, from, to, fixture.GenOptions{})); err != nil {
			return r, err
		}
		cpu0 = sampleCPU(procs)
		largeStart = time.Now()
		tick, err := s.Tick(ctx)
		if err != nil {
			return r, err
		}
		largeJob = model.JobID(bulk.ID, tick)
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(gap):
		}
	}
	if variant == FairLarge {
		_, ldone, err := s.WaitJob(ctx, largeJob, 250*time.Millisecond, nil)
		if err != nil {
			return r, err
		}
		r.LargeElapsed, r.Gap = ldone.Sub(largeStart), 0
		r.CPU = sampleCPU(procs).since(cpu0, r.LargeElapsed)
		return r, nil
	}
	if err := a.AddSetting(ctx, smallSetting); err != nil {
		return r, err
	}
	smallStart := time.Now()
	r.Gap = smallStart.Sub(largeStart)
	if largeJob == "" {
		r.Gap = 0
	}
	tick, err := s.Tick(ctx)
	if err != nil {
		return r, err
	}
	_, done, err := s.WaitJob(ctx, model.JobID(smallSetting.ID, tick), 100*time.Millisecond, nil)
	if err != nil {
		return r, err
	}
	r.SmallElapsed = done.Sub(smallStart)
	end := done
	if largeJob != "" {
		_, ldone, err := s.WaitJob(ctx, largeJob, 250*time.Millisecond, nil)
		if err != nil {
			return r, err
		}
		r.LargeElapsed, end = ldone.Sub(largeStart), ldone
	}
	r.CPU = sampleCPU(procs).since(cpu0, end.Sub(smallStart)+r.Gap)
	if n, err := countQuery(ctx, s.FS.Collection(model.EngagementsGen).Where("tenantId", "==", "small")); err != nil || n != small {
		return r, errors.Join(err, fmt.Errorf("bench: the small tenant has %d records imported, want %d", n, small))
	}
	return r, nil
}
