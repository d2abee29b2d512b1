// Package target imports a chunk's records into the product's "engagement" records, exactly once
// in effect.
//
// # Atomicity
//
// Committer.Commit runs one Firestore transaction that reads the chunk, returns at once if it is
// already DONE, writes every record through a Target, and sets the chunk DONE. The records and the
// DONE transition commit together or not at all, so neither a duplicate delivery nor a concurrent
// run nor a crash at any point can import a chunk twice or half of it.
//
// # Targets
//
// Upsert keeps one record per tenant + source object + external ID at a deterministic document ID.
// Generated mimics a product whose records get generated IDs (as in the incident): the record is
// created with an automatic ID, and a unique-constraint document engagementIndex/{key} maps the
// external ID to it. The index document is read and written in the same transaction, so a second
// import of the same external ID finds it and updates the record instead of creating another.
//
// Both keep versions monotonic: a source row older than (or as old as) the stored version changes
// nothing and counts as unchanged.
package target

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/model"
)

// ErrUnknownTarget is returned for a Job whose target kind has no implementation.
var ErrUnknownTarget = errors.New("target: unknown target kind")

// Stats counts what a write did.
type Stats struct {
	Imported  int // records created or updated
	Unchanged int // rows whose target already had this version or a newer one
}

// Target writes one chunk's rows inside the chunk's transaction.
type Target interface {
	Write(ctx context.Context, tx *firestore.Transaction, w Batch) (Stats, error)
}

// Batch is what a Target writes: deduplicated rows (one per external ID, the newest version) of
// one chunk of one Job.
type Batch struct {
	Job   model.Job
	Chunk int
	Rows  []model.ChunkRecord
	Now   time.Time
}

func (b Batch) engagement(r model.ChunkRecord) model.Engagement {
	return model.Engagement{
		TenantID: b.Job.TenantID, SourceObject: b.Job.SourceObject, ExternalID: r.ID,
		Version: r.Modstamp, Fields: r.Fields, JobID: b.Job.ID, Chunk: b.Chunk, ImportedAt: b.Now,
	}
}

func (b Batch) key(r model.ChunkRecord) string {
	return model.EngagementKey(b.Job.TenantID, b.Job.SourceObject, r.ID)
}

// Upsert writes engagements/{tenant~object~externalId}.
type Upsert struct{ Client *firestore.Client }

// Write implements Target.
func (u Upsert) Write(ctx context.Context, tx *firestore.Transaction, b Batch) (Stats, error) {
	coll := u.Client.Collection(model.Engagements)
	refs := make([]*firestore.DocumentRef, len(b.Rows))
	for i, r := range b.Rows {
		refs[i] = coll.Doc(b.key(r))
	}
	snaps, err := tx.GetAll(refs)
	if err != nil {
		return Stats{}, fmt.Errorf("target: read engagements: %w", err)
	}
	var st Stats
	for i, r := range b.Rows {
		if snaps[i].Exists() {
			v, err := snaps[i].DataAt("version")
			if err != nil {
				return Stats{}, fmt.Errorf("target: engagement %s: %w", refs[i].ID, err)
			}
			if t, ok := v.(time.Time); ok && !r.Modstamp.After(t) {
				st.Unchanged++
				continue
			}
		}
		if err := tx.Set(refs[i], b.engagement(r)); err != nil {
			return Stats{}, fmt.Errorf("target: write engagement %s: %w", refs[i].ID, err)
		}
		st.Imported++
	}
	return st, nil
}

// Generated writes engagementsGen/{auto-id}, found again through engagementIndex/{key}.
type Generated struct{ Client *firestore.Client }

type indexEntry struct {
	DocID   string    `firestore:"docId"`
	Version time.Time `firestore:"version"`
}

// Write implements Target.
func (g Generated) Write(ctx context.Context, tx *firestore.Transaction, b Batch) (Stats, error) {
	idx := g.Client.Collection(model.EngagementIndex)
	recs := g.Client.Collection(model.EngagementsGen)
	refs := make([]*firestore.DocumentRef, len(b.Rows))
	for i, r := range b.Rows {
		refs[i] = idx.Doc(b.key(r))
	}
	snaps, err := tx.GetAll(refs)
	if err != nil {
		return Stats{}, fmt.Errorf("target: read engagement index: %w", err)
	}
	var st Stats
	for i, r := range b.Rows {
		if !snaps[i].Exists() {
			doc := recs.NewDoc()
			if err := tx.Create(refs[i], indexEntry{DocID: doc.ID, Version: r.Modstamp}); err != nil {
				return Stats{}, fmt.Errorf("target: index %s: %w", refs[i].ID, err)
			}
			if err := tx.Create(doc, b.engagement(r)); err != nil {
				return Stats{}, fmt.Errorf("target: create engagement for %s: %w", refs[i].ID, err)
			}
			st.Imported++
			continue
		}
		var e indexEntry
		if err := snaps[i].DataTo(&e); err != nil {
			return Stats{}, fmt.Errorf("target: index %s: decode: %w", refs[i].ID, err)
		}
		if !r.Modstamp.After(e.Version) {
			st.Unchanged++
			continue
		}
		if err := tx.Update(refs[i], []firestore.Update{{Path: "version", Value: r.Modstamp}}); err != nil {
			return Stats{}, fmt.Errorf("target: index %s: %w", refs[i].ID, err)
		}
		if err := tx.Set(recs.Doc(e.DocID), b.engagement(r)); err != nil {
			return Stats{}, fmt.Errorf("target: update engagement %s: %w", e.DocID, err)
		}
		st.Imported++
	}
	return st, nil
}

// Result is the outcome of committing one chunk.
type Result struct {
	AlreadyDone bool // a previous delivery committed it: nothing was written
	Stats
	Rows int // rows in the chunk
}

// Committer commits chunks atomically with their DONE transition.
type Committer struct {
	Client  *firestore.Client
	Targets map[string]Target // by model.Target* kind
	Now     func() time.Time
}

// NewCommitter returns a Committer with the Upsert and Generated targets.
func NewCommitter(c *firestore.Client, now func() time.Time) *Committer {
	if now == nil {
		now = time.Now
	}
	return &Committer{Client: c, Now: now, Targets: map[string]Target{
		model.TargetUpsert:    Upsert{Client: c},
		model.TargetGenerated: Generated{Client: c},
	}}
}

// ErrNoChunk is returned when the chunk document does not exist.
var ErrNoChunk = errors.New("target: chunk not found")

// Commit imports chunk `index` of job in one transaction (see the package documentation).
func (c *Committer) Commit(ctx context.Context, job model.Job, index int) (Result, error) {
	t, ok := c.Targets[job.Target]
	if !ok {
		return Result{}, fmt.Errorf("target: job %s: %q: %w", job.ID, job.Target, ErrUnknownTarget)
	}
	ref := c.Client.Collection(model.Jobs).Doc(job.ID).Collection(model.Chunks).Doc(model.ChunkID(index))
	var res Result
	err := c.Client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		res = Result{}
		snap, err := tx.Get(ref)
		if status.Code(err) == codes.NotFound {
			return ErrNoChunk
		}
		if err != nil {
			return err
		}
		var ch model.Chunk
		if err := snap.DataTo(&ch); err != nil {
			return fmt.Errorf("decode chunk: %w", err)
		}
		if ch.Status == model.ChunkDone {
			res.AlreadyDone = true
			return nil
		}
		now := c.Now().UTC()
		rows := Newest(ch.Records)
		res.Rows = len(ch.Records)
		st, err := t.Write(ctx, tx, Batch{Job: job, Chunk: index, Rows: rows, Now: now})
		if err != nil {
			return err
		}
		st.Unchanged += len(ch.Records) - len(rows) // older copies of a row within the chunk
		res.Stats = st
		return tx.Update(ref, []firestore.Update{
			{Path: "status", Value: model.ChunkDone},
			{Path: "doneAt", Value: now},
			{Path: "imported", Value: st.Imported},
			{Path: "unchanged", Value: st.Unchanged},
		})
	})
	if err != nil {
		return Result{}, fmt.Errorf("target: commit chunk %d of job %s: %w", index, job.ID, err)
	}
	return res, nil
}

// Newest returns rows with one entry per ID, the one with the newest Modstamp (the later one on a
// tie), in ID order.
func Newest(rows []model.ChunkRecord) []model.ChunkRecord {
	best := make(map[string]int, len(rows))
	for i, r := range rows {
		if j, ok := best[r.ID]; !ok || !rows[j].Modstamp.After(r.Modstamp) {
			best[r.ID] = i
		}
	}
	out := make([]model.ChunkRecord, 0, len(best))
	for _, i := range best {
		out = append(out, rows[i])
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}
