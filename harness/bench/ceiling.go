package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"cloud.google.com/go/firestore"
	"golang.org/x/sync/errgroup"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/target"
)

// Ceiling is one measurement of the raw write ceiling: a dataset's target documents written
// straight into Firestore with one batching strategy.
type Ceiling struct {
	Records  int
	Rep      int // repetition, from 1; 0 for the warm-up
	Strategy string
	Docs     int           // documents written (two per record: index entry and record)
	Elapsed  time.Duration // first write sent → last write acknowledged
	Writes   int64         // writes committed, counted by the interceptor
	RPCs     int64
	CPU      CPU // during the writes
	Err      string
}

// RecordsPerSecond is the ceiling in records.
func (c Ceiling) RecordsPerSecond() float64 {
	if c.Elapsed <= 0 || c.Err != "" {
		return 0
	}
	return float64(c.Records) / c.Elapsed.Seconds()
}

// DocsPerSecond is the ceiling in documents.
func (c Ceiling) DocsPerSecond() float64 {
	if c.Elapsed <= 0 || c.Err != "" {
		return 0
	}
	return float64(c.Docs) / c.Elapsed.Seconds()
}

// strategy writes docs with one of the client's batching APIs.
type strategy struct {
	name string
	max  int // most records it is tried on (0: any); BulkWriter is too slow on the emulator for more
	run  func(ctx context.Context, c *firestore.Client, docs []doc) error
	// reads: the second ceiling. Each batch first reads the records' index entries (what any
	// correct import must read for its version check), then writes with preconditions.
	reads bool
}

type doc struct {
	ref  *firestore.DocumentRef
	data any
}

// BulkWriterMax is the largest dataset the BulkWriter strategy is measured on: it does ~2,200
// writes/s on the emulator, and a larger dataset only takes longer.
const BulkWriterMax = 10_000

// warmUpStrategy warms the emulators up after the warm-up Job.
const warmUpStrategy = "WriteBatch of 500, 4 concurrent"

var strategies = []strategy{
	{"BulkWriter", BulkWriterMax, bulkWriter, false},
	{"WriteBatch of 500, sequential", 0, batches(500, 1, false), false},
	{"WriteBatch of 500, 4 concurrent", 0, batches(500, 4, false), false},
	{"WriteBatch of 500, 8 concurrent", 0, batches(500, 8, false), false},
	{ReadWritePrefix + "4 concurrent", 0, batches(500, 4, true), true},
	{ReadWritePrefix + "8 concurrent", 0, batches(500, 8, true), true},
}

// ReadWritePrefix names the second ceiling's strategies: read the index entries, then write.
const ReadWritePrefix = "read, then WriteBatch of 500 with preconditions, "

// readsFirst reports whether a strategy (by name) is one of the second ceiling's.
func readsFirst(name string) bool {
	i := slices.IndexFunc(strategies, func(s strategy) bool { return s.name == name })
	return i >= 0 && strategies[i].reads
}

func bulkWriter(ctx context.Context, c *firestore.Client, docs []doc) error {
	bw := c.BulkWriter(ctx)
	jobs := make([]*firestore.BulkWriterJob, 0, len(docs))
	for _, d := range docs {
		j, err := bw.Create(d.ref, d.data)
		if err != nil {
			bw.End()
			return err
		}
		jobs = append(jobs, j)
	}
	bw.End()
	for _, j := range jobs {
		if _, err := j.Results(); err != nil {
			return err
		}
	}
	return nil
}

// batches writes docs in WriteBatches of size, concurrent at once; with read, each batch first
// reads its index entries (every other document: docs come as index entry, record) in one call.
func batches(size, concurrent int, read bool) func(ctx context.Context, c *firestore.Client, docs []doc) error {
	return func(ctx context.Context, c *firestore.Client, docs []doc) error {
		g, ctx := errgroup.WithContext(ctx)
		g.SetLimit(concurrent)
		for i := 0; i < len(docs); i += size {
			part := docs[i:min(i+size, len(docs))]
			g.Go(func() error {
				if read {
					refs := make([]*firestore.DocumentRef, 0, len(part)/2)
					for j := 0; j < len(part); j += 2 {
						refs = append(refs, part[j].ref)
					}
					if _, err := c.GetAll(ctx, refs); err != nil {
						return err
					}
				}
				b := c.Batch()
				for _, d := range part {
					b.Create(d.ref, d.data)
				}
				_, err := b.Commit(ctx)
				return err
			})
		}
		return g.Wait()
	}
}

// measureCeiling writes the target documents of n records with every strategy (or only those
// named), each into a project of its own on e.
func measureCeiling(ctx context.Context, e *emu.Emulators, n, rep int, seed int64, updated float64, logf func(string, ...any), only ...string) ([]Ceiling, error) {
	recs := records(seed, n, updated)
	var out []Ceiling
	var errs []error
	for i, s := range strategies {
		if len(only) > 0 && !slices.Contains(only, s.name) {
			continue
		}
		if s.max > 0 && (n > s.max || rep > 1) {
			continue // slow: measured once
		}
		if ctx.Err() != nil {
			break
		}
		c, err := ceilingOnce(ctx, e, fmt.Sprintf("ceiling-%d-%d-%d", i, n, rep), rep, s, recs)
		if err != nil {
			c.Err = err.Error()
			errs = append(errs, fmt.Errorf("bench: ceiling %s, %d records: %w", s.name, n, err))
		}
		logf("ceiling: %-32s %7d records in %7v: %8.0f records/s (%.0f documents/s)", s.name, n,
			c.Elapsed.Round(time.Millisecond), c.RecordsPerSecond(), c.DocsPerSecond())
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

// records returns the newest version of each of a dataset's records, as a chunk holds them.
func records(seed int64, n int, updated float64) []model.ChunkRecord {
	now := time.Now().UTC().Truncate(time.Millisecond)
	rows := fixture.Generate(seed, n, now.Add(-24*time.Hour), now.Add(-2*time.Minute), fixture.GenOptions{UpdatedInWindow: updated})
	recs := make([]model.ChunkRecord, len(rows))
	for i, r := range rows {
		f := map[string]any{}
		for _, k := range Fields {
			f[k] = r.Fields[k]
		}
		recs[i] = model.ChunkRecord{ID: r.ID, Modstamp: r.Modstamp.UTC(), Fields: f}
	}
	return target.Newest(recs)
}

// ceilingOnce writes recs with s into project on the emulator.
func ceilingOnce(ctx context.Context, e *emu.Emulators, project string, rep int, s strategy, recs []model.ChunkRecord) (c Ceiling, err error) {
	c = Ceiling{Records: len(recs), Rep: rep, Strategy: s.name, Docs: 2 * len(recs)}
	b := sim.NewBackend()
	fs, err := sim.FirestoreClientAt(ctx, e.FirestoreHost, project, b)
	if err != nil {
		return c, err
	}
	defer fs.Close()
	docs := targetDocs(fs, recs)
	procs := []proc{{"firestore emulator", emulatorPID(e.FirestoreHost)}, {"bench (client)", os.Getpid()}}
	cpu0 := sampleCPU(procs)
	start := time.Now()
	err = s.run(ctx, fs, docs)
	c.Elapsed = time.Since(start)
	c.CPU = sampleCPU(procs).since(cpu0, c.Elapsed)
	ops := b.Ops()
	c.Writes, c.RPCs = ops.Writes, ops.RPCs
	if err == nil && c.Writes != int64(c.Docs) {
		err = fmt.Errorf("%d writes committed, want %d", c.Writes, c.Docs)
	}
	return c, err
}

// targetDocs returns the documents the generated-ID target creates for new records, with the same
// contents.
func targetDocs(fs *firestore.Client, recs []model.ChunkRecord) []doc {
	job := model.Job{ID: "ceiling", TenantID: "acme", SourceObject: "Contact"}
	at := time.Now().UTC()
	kind, _ := model.Kind(model.TargetGenerated)
	idx, gen := fs.Collection(kind.Index), fs.Collection(kind.Records)
	docs := make([]doc, 0, 2*len(recs))
	for i, r := range recs {
		rec := gen.NewDoc()
		docs = append(docs,
			doc{idx.Doc(model.EngagementKey(job.TenantID, job.SourceObject, r.ID)), map[string]any{"docId": rec.ID, "version": r.Modstamp}},
			doc{rec, model.Engagement{
				TenantID: job.TenantID, SourceObject: job.SourceObject, ExternalID: r.ID, Version: r.Modstamp,
				Fields: r.Fields, JobID: job.ID, Chunk: i / 500, ImportedAt: at,
			}})
	}
	return docs
}
