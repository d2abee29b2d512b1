// Package target imports a chunk's records into the product's "engagement" records, exactly once
// in effect, without locking anything another chunk import needs.
//
// # Atomicity without locks
//
// Committer.Commit reads the chunk and the target documents its rows will change outside any
// transaction, then commits one batch: every record write conditioned on the document as read
// (created only if absent, or updated only if unchanged since the read) and the chunk's DONE
// transition conditioned on the chunk as read (still PENDING). The batch applies whole or not at
// all, so neither a duplicate delivery nor a concurrent run nor a crash at any point can import a
// chunk twice or half of it. When another writer got there first (a concurrent import of a chunk
// that holds the same external ID, or a duplicate of this chunk), a precondition fails, nothing
// is written, and the commit is retried on fresh reads. Unlike a read-write transaction, no import
// holds a lock another waits for: the emulator's 2 s lock timeouts and Firestore's serialization
// of contending transactions do not arise, and imports of the same Job never wait on each other
// unless they really write the same record.
//
// # Targets
//
// Upsert keeps one record per tenant + source object + external ID at a deterministic document ID.
// Generated mimics a product whose records get generated IDs (as in the incident): the record is
// created with an automatic ID, and a unique-constraint document engagementIndex/{key} maps the
// external ID to it. The index document is created only if absent in the same batch, so a second
// import of the same external ID finds it and updates the record instead of creating another.
//
// Both keep versions monotonic: a source row older than (or as old as) the stored version changes
// nothing and counts as unchanged. A resync Job's rows as old as the stored version are written
// again (that is what a resync is for); older ones still change nothing.
//
// # Deletes
//
// A deleted row is a version like any other: it turns the record into a tombstone (deleted,
// deletedAt, deletedBy "source", the version that deleted it) under the same rules, so an older
// delete changes nothing and a newer live row (the record restored in the source) revives it. A
// delete of a record never imported creates its tombstone, so an older version that arrives later
// cannot bring it back.
package target

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"cloud.google.com/go/firestore"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// ErrUnknownTarget is returned for a Job whose target kind has no implementation.
var ErrUnknownTarget = errors.New("target: unknown target kind")

// Stats counts what a write did.
type Stats struct {
	Imported   int // records created or updated, tombstones included
	Unchanged  int // rows whose target already had this version or a newer one
	Tombstoned int // of Imported, records written as deleted
}

// count counts one written row.
func (st *Stats) count(r model.ChunkRecord) {
	st.Imported++
	if r.Deleted {
		st.Tombstoned++
	}
}

// Target is what a target kind does: the one place each kind's behaviour lives. The importer, the
// audit, reconcile and the harness's checkers call it, and never test a kind's name or
// collections. A new kind is its name and collections in model.TargetKinds, an implementation
// here, and one entry in kinds; the conformance tests (target_test.go) run over every kind.
type Target interface {
	// Stage stages one chunk's rows into a batch. It reads the documents the rows change outside
	// any transaction and conditions each write on the document as read, so the batch fails,
	// writing nothing, when another writer changed one of them since.
	Stage(ctx context.Context, b *firestore.WriteBatch, w Batch) (Stats, error)
	// Kept returns, for each external ID of the tenant's source object, where the kind keeps its
	// record: the one an import updates and the audit counts (which may not exist); absent when
	// the kind has no record for it (the generated-ID kind without an index entry). reads is how
	// many documents it read to tell.
	Kept(ctx context.Context, tenant, object string, ids []string) (kept map[string]*firestore.DocumentRef, reads int, err error)
}

// kinds builds each kind's Target, by name: the registration.
var kinds = map[string]func(c *firestore.Client, k model.TargetKind) Target{
	model.TargetUpsert:    func(c *firestore.Client, k model.TargetKind) Target { return Upsert{Client: c, Kind: k} },
	model.TargetGenerated: func(c *firestore.Client, k model.TargetKind) Target { return Generated{Client: c, Kind: k} },
}

// For returns the Target of the kind called name, on c.
func For(c *firestore.Client, name string) (Target, error) {
	k, ok := model.Kind(name)
	newT := kinds[name]
	if !ok || newT == nil {
		return nil, fmt.Errorf("target: %q: %w", name, ErrUnknownTarget)
	}
	return newT(c, k), nil
}

// Tombstone is the change that makes a stored record a tombstone, deleted at `at` by `by`
// (reconcile's model.DeletedByReconcile), its version kept: the same fields an imported deleted
// row's record has (engagement).
func Tombstone(by string, at time.Time) []firestore.Update {
	return []firestore.Update{{Path: "deleted", Value: true}, {Path: "deletedAt", Value: at}, {Path: "deletedBy", Value: by}}
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
	e := model.Engagement{
		TenantID: b.Job.TenantID, SourceObject: b.Job.SourceObject, ExternalID: r.ID,
		Version: r.Modstamp, Fields: r.Fields, JobID: b.Job.ID, Chunk: b.Chunk, ImportedAt: b.Now,
	}
	if r.Deleted {
		e.Deleted, e.DeletedAt, e.DeletedBy = true, b.Now, model.DeletedBySource // what Tombstone writes, as a whole record
	}
	return e
}

// updates is e as field updates: an Update (which, unlike Set, takes a precondition) that
// replaces every field of the record.
func updates(e model.Engagement) []firestore.Update {
	return []firestore.Update{
		{Path: "tenantId", Value: e.TenantID}, {Path: "sourceObject", Value: e.SourceObject},
		{Path: "externalId", Value: e.ExternalID}, {Path: "version", Value: e.Version},
		{Path: "fields", Value: e.Fields}, {Path: "jobId", Value: e.JobID},
		{Path: "chunk", Value: e.Chunk}, {Path: "importedAt", Value: e.ImportedAt},
		{Path: "deleted", Value: e.Deleted}, {Path: "deletedAt", Value: e.DeletedAt}, {Path: "deletedBy", Value: e.DeletedBy},
	}
}

// stale reports whether a row at version v leaves a stored version as it is: an older row never
// replaces a newer one; a tick's Job imports only newer rows, a resync's rewrites rows as new as
// the stored one too (a fixed mapping, a restored backup).
func (b Batch) stale(v, stored time.Time) bool {
	if b.Job.Resync != "" {
		return v.Before(stored)
	}
	return !v.After(stored)
}

func (b Batch) key(r model.ChunkRecord) string {
	return model.EngagementKey(b.Job.TenantID, b.Job.SourceObject, r.ID)
}

// Upsert writes {Kind.Records}/{tenant~object~externalId}.
type Upsert struct {
	Client *firestore.Client
	Kind   model.TargetKind
}

// Stage implements Target.
func (u Upsert) Stage(ctx context.Context, wb *firestore.WriteBatch, b Batch) (Stats, error) {
	coll := u.Client.Collection(u.Kind.Records)
	refs := make([]*firestore.DocumentRef, len(b.Rows))
	for i, r := range b.Rows {
		refs[i] = coll.Doc(b.key(r))
	}
	snaps, err := u.Client.GetAll(ctx, refs)
	if err != nil {
		return Stats{}, fmt.Errorf("target: read engagements: %w", err)
	}
	var st Stats
	for i, r := range b.Rows {
		if !snaps[i].Exists() {
			wb.Create(refs[i], b.engagement(r))
			st.count(r)
			continue
		}
		v, err := snaps[i].DataAt("version")
		if err != nil {
			return Stats{}, fmt.Errorf("target: engagement %s: %w", refs[i].ID, err)
		}
		if t, ok := v.(time.Time); ok && b.stale(r.Modstamp, t) {
			st.Unchanged++
			continue
		}
		wb.Update(refs[i], updates(b.engagement(r)), firestore.LastUpdateTime(snaps[i].UpdateTime))
		st.count(r)
	}
	return st, nil
}

// Kept implements Target: the record's ID is its key, so nothing is read.
func (u Upsert) Kept(_ context.Context, tenant, object string, ids []string) (map[string]*firestore.DocumentRef, int, error) {
	out := make(map[string]*firestore.DocumentRef, len(ids))
	for _, id := range ids {
		out[id] = u.Client.Collection(u.Kind.Records).Doc(model.EngagementKey(tenant, object, id))
	}
	return out, 0, nil
}

// Generated writes {Kind.Records}/{auto-id}, found again through {Kind.Index}/{key}.
type Generated struct {
	Client *firestore.Client
	Kind   model.TargetKind
}

type indexEntry struct {
	DocID   string    `firestore:"docId"`
	Version time.Time `firestore:"version"`
}

// Stage implements Target.
func (g Generated) Stage(ctx context.Context, wb *firestore.WriteBatch, b Batch) (Stats, error) {
	idx := g.Client.Collection(g.Kind.Index)
	recs := g.Client.Collection(g.Kind.Records)
	refs := make([]*firestore.DocumentRef, len(b.Rows))
	for i, r := range b.Rows {
		refs[i] = idx.Doc(b.key(r))
	}
	snaps, err := g.Client.GetAll(ctx, refs)
	if err != nil {
		return Stats{}, fmt.Errorf("target: read engagement index: %w", err)
	}
	var st Stats
	for i, r := range b.Rows {
		if !snaps[i].Exists() {
			doc := recs.NewDoc()
			wb.Create(refs[i], indexEntry{DocID: doc.ID, Version: r.Modstamp})
			wb.Create(doc, b.engagement(r))
			st.count(r)
			continue
		}
		var e indexEntry
		if err := snaps[i].DataTo(&e); err != nil {
			return Stats{}, fmt.Errorf("target: index %s: decode: %w", refs[i].ID, err)
		}
		if b.stale(r.Modstamp, e.Version) {
			st.Unchanged++
			continue
		}
		// The record itself is written unconditionally: the condition on its index entry
		// already orders every writer of this external ID.
		wb.Update(refs[i], []firestore.Update{{Path: "version", Value: r.Modstamp}}, firestore.LastUpdateTime(snaps[i].UpdateTime))
		wb.Set(recs.Doc(e.DocID), b.engagement(r))
		st.count(r)
	}
	return st, nil
}

// Kept implements Target: the record its index entry names.
func (g Generated) Kept(ctx context.Context, tenant, object string, ids []string) (map[string]*firestore.DocumentRef, int, error) {
	out := make(map[string]*firestore.DocumentRef, len(ids))
	refs := make([]*firestore.DocumentRef, len(ids))
	for i, id := range ids {
		refs[i] = g.Client.Collection(g.Kind.Index).Doc(model.EngagementKey(tenant, object, id))
	}
	var snaps []*firestore.DocumentSnapshot
	for i := 0; i < len(refs); i += keptBatch {
		part, err := g.Client.GetAll(ctx, refs[i:min(i+keptBatch, len(refs))])
		if err != nil {
			return nil, len(snaps), fmt.Errorf("target: read engagement index: %w", err)
		}
		snaps = append(snaps, part...)
	}
	for i, s := range snaps {
		if !s.Exists() {
			continue
		}
		var e indexEntry
		if err := s.DataTo(&e); err != nil || e.DocID == "" {
			return nil, len(snaps), fmt.Errorf("target: index %s: no record ID (%v)", refs[i].ID, err)
		}
		out[ids[i]] = g.Client.Collection(g.Kind.Records).Doc(e.DocID)
	}
	return out, len(snaps), nil
}

// keptBatch is how many index entries Kept reads a request.
const keptBatch = 300

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

// NewCommitter returns a Committer with the Target of every kind in model.TargetKinds.
func NewCommitter(c *firestore.Client, now func() time.Time) *Committer {
	if now == nil {
		now = time.Now
	}
	targets := map[string]Target{}
	for _, k := range model.TargetKinds {
		t, err := For(c, k.Name)
		if err != nil {
			panic(err) // a kind declared in model without a Target here: TestEveryKindIsRegistered fails first
		}
		targets[k.Name] = t
	}
	return &Committer{Client: c, Now: now, Targets: targets}
}

// ErrNoChunk is returned when the chunk document does not exist.
var ErrNoChunk = errors.New("target: chunk not found")

// Commit imports chunk `index` of job in one preconditioned batch (see the package documentation),
// retrying on fresh reads when another writer got there first.
func (c *Committer) Commit(ctx context.Context, job model.Job, index int) (Result, error) {
	t, ok := c.Targets[job.Target]
	if !ok {
		return Result{}, fmt.Errorf("target: job %s: %q: %w", job.ID, job.Target, ErrUnknownTarget)
	}
	ref := c.Client.Collection(model.Jobs).Doc(job.ID).Collection(model.Chunks).Doc(model.ChunkID(index))
	ctx, span := telemetry.Start(ctx, "import chunk", attribute.Int("oncesync.chunk", index), attribute.String("oncesync.target", job.Target))
	res, err := c.commit(ctx, t, ref, job, index)
	span.SetAttributes(attribute.Bool("oncesync.chunk.already_done", res.AlreadyDone), attribute.Int("oncesync.records.imported", res.Imported),
		attribute.Int("oncesync.records.unchanged", res.Unchanged), attribute.Int("oncesync.records.tombstoned", res.Tombstoned))
	telemetry.End(span, err)
	if err == nil && !res.AlreadyDone {
		m := telemetry.MetricsFrom(ctx)
		m.Records(ctx, job.Target, res.Imported, res.Unchanged, res.Tombstoned)
		m.ChunkImported(ctx)
	}
	return res, err
}

// commit is Commit's retry loop.
func (c *Committer) commit(ctx context.Context, t Target, ref *firestore.DocumentRef, job model.Job, index int) (Result, error) {
	for attempt := 0; ; attempt++ {
		res, err := c.commitOnce(ctx, t, ref, job, index)
		if err == nil || !conflict(err) || attempt+1 >= commitAttempts {
			if err != nil {
				return Result{}, fmt.Errorf("target: commit chunk %d of job %s (attempt %d): %w", index, job.ID, attempt+1, err)
			}
			return res, nil
		}
		if err := sleep(ctx, conflictBackoff(index, attempt)); err != nil {
			return Result{}, fmt.Errorf("target: commit chunk %d of job %s: %w", index, job.ID, err)
		}
	}
}

// commitAttempts bounds the retries of a commit that keeps meeting other writers; past it the
// delivery fails and is redelivered.
const commitAttempts = 10

// conflict reports whether a commit failed only because another writer changed what it read: a
// failed precondition, a create that met an existing document, a contended commit.
func conflict(err error) bool {
	switch status.Code(err) { // status.Code finds a wrapped status too
	case codes.FailedPrecondition, codes.AlreadyExists, codes.Aborted, codes.NotFound:
		return true
	}
	return false
}

// conflictBackoff spreads the retries of chunks that met each other (10 ms doubling, capped at
// 640 ms, offset by the chunk index so two colliding chunks do not retry in step).
func conflictBackoff(index, attempt int) time.Duration {
	base := 10 * time.Millisecond << min(attempt, 6)
	return base + time.Duration(index%10)*base/10
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Committer) commitOnce(ctx context.Context, t Target, ref *firestore.DocumentRef, job model.Job, index int) (Result, error) {
	snap, err := ref.Get(ctx)
	if status.Code(err) == codes.NotFound {
		return Result{}, ErrNoChunk
	}
	if err != nil {
		return Result{}, fmt.Errorf("read chunk: %w", err)
	}
	var ch model.Chunk
	if err := snap.DataTo(&ch); err != nil {
		return Result{}, fmt.Errorf("decode chunk: %w", err)
	}
	if ch.Status == model.ChunkDone {
		return Result{AlreadyDone: true}, nil
	}
	now := c.Now().UTC()
	rows := Newest(ch.Records)
	b := c.Client.Batch()
	st, err := t.Stage(ctx, b, Batch{Job: job, Chunk: index, Rows: rows, Now: now})
	if err != nil {
		return Result{}, err
	}
	st.Unchanged += len(ch.Records) - len(rows) // older copies of a row within the chunk
	b.Update(ref, doneUpdates(st, now), firestore.LastUpdateTime(snap.UpdateTime))
	if _, err := b.Commit(ctx); err != nil {
		return Result{}, err
	}
	return Result{Stats: st, Rows: len(ch.Records)}, nil
}

// doneUpdates are the fields of a chunk's DONE transition.
func doneUpdates(st Stats, now time.Time) []firestore.Update {
	return []firestore.Update{
		{Path: "status", Value: model.ChunkDone},
		{Path: "doneAt", Value: now},
		{Path: "imported", Value: st.Imported},
		{Path: "unchanged", Value: st.Unchanged},
		{Path: "tombstoned", Value: st.Tombstoned},
	}
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
