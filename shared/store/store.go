// Package store reads and writes oncesync's tenants, sync settings, Jobs and chunks in Firestore.
//
// Every write that must happen once is either a create-if-absent with a deterministic ID or a
// transaction that checks the state it moves from; nothing here writes the Job document once per
// chunk (Firestore throttles hot documents, and the emulator's lock timeout makes contended
// transactions take seconds).
//
// # Errors
//
// ErrNotFound for a missing tenant, setting or Job; ErrEmptyWindow when a tick would create a Job
// with nothing to import. Other errors are backend failures, wrapped with what was being done.
package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"cloud.google.com/go/firestore"
	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Sentinel errors.
var (
	ErrNotFound    = errors.New("store: not found")
	ErrEmptyWindow = errors.New("store: empty window")
)

// Store is oncesync's Firestore data access.
type Store struct {
	Client *firestore.Client
	Now    func() time.Time
}

// New returns a Store using now as its clock (time.Now when nil).
func New(c *firestore.Client, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{Client: c, Now: now}
}

// JobRef returns the Job's document.
func (s *Store) JobRef(id string) *firestore.DocumentRef {
	return s.Client.Collection(model.Jobs).Doc(id)
}

// ChunkRef returns a chunk's document.
func (s *Store) ChunkRef(jobID string, index int) *firestore.DocumentRef {
	return s.JobRef(jobID).Collection(model.Chunks).Doc(model.ChunkID(index))
}

func notFound(err error) bool { return status.Code(err) == codes.NotFound }

// Tenant returns a tenant.
func (s *Store) Tenant(ctx context.Context, id string) (model.Tenant, error) {
	var t model.Tenant
	if id == "" {
		return t, fmt.Errorf("store: tenant with empty ID: %w", ErrNotFound)
	}
	snap, err := s.Client.Collection(model.Tenants).Doc(id).Get(ctx)
	if notFound(err) {
		return t, fmt.Errorf("store: tenant %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return t, fmt.Errorf("store: tenant %q: %w", id, err)
	}
	if err := snap.DataTo(&t); err != nil {
		return t, fmt.Errorf("store: tenant %q: decode: %w", id, err)
	}
	t.ID = id
	return t, nil
}

// EnabledSettingIDs lists up to limit IDs of enabled sync settings after the ID after, in ID
// order: a keys-only query, so a page of a tick's listing reads no setting's fields.
func (s *Store) EnabledSettingIDs(ctx context.Context, after string, limit int) ([]string, error) {
	q := s.Client.Collection(model.SyncSettings).Where("enabled", "==", true).OrderBy(firestore.DocumentID, firestore.Asc).Select().Limit(limit)
	if after != "" {
		q = q.StartAfter(after)
	}
	docs, err := q.Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("store: enabled settings after %q: %w", after, err)
	}
	ids := make([]string, len(docs))
	for i, d := range docs {
		ids[i] = d.Ref.ID
	}
	return ids, nil
}

// Settings reads the sync settings of ids in one call; a setting that no longer exists is left
// out.
func (s *Store) Settings(ctx context.Context, ids []string) ([]model.SyncSetting, error) {
	return byIDs(ctx, s.Client, model.SyncSettings, ids, func(st *model.SyncSetting, id string) { st.ID = id })
}

// Tenants reads the tenants of ids in one call, by ID; a tenant that does not exist is absent.
func (s *Store) Tenants(ctx context.Context, ids []string) (map[string]model.Tenant, error) {
	ts, err := byIDs(ctx, s.Client, model.Tenants, ids, func(t *model.Tenant, id string) { t.ID = id })
	if err != nil {
		return nil, err
	}
	out := make(map[string]model.Tenant, len(ts))
	for _, t := range ts {
		out[t.ID] = t
	}
	return out, nil
}

// byIDs reads the documents of ids (empty IDs skipped) from one collection in one call, each
// decoded and given its ID by setID; a document that does not exist is left out.
func byIDs[T any](ctx context.Context, c *firestore.Client, coll string, ids []string, setID func(*T, string)) ([]T, error) {
	refs := make([]*firestore.DocumentRef, 0, len(ids))
	for _, id := range ids {
		if id != "" {
			refs = append(refs, c.Collection(coll).Doc(id))
		}
	}
	if len(refs) == 0 {
		return nil, nil
	}
	snaps, err := c.GetAll(ctx, refs)
	if err != nil {
		return nil, fmt.Errorf("store: %d documents of %s: %w", len(refs), coll, err)
	}
	out := make([]T, 0, len(snaps))
	for _, snap := range snaps {
		if !snap.Exists() {
			continue
		}
		var v T
		if err := snap.DataTo(&v); err != nil {
			return nil, fmt.Errorf("store: %s/%s: decode: %w", coll, snap.Ref.ID, err)
		}
		setID(&v, snap.Ref.ID)
		out = append(out, v)
	}
	return out, nil
}

// EnabledSettingsOf counts a tenant's enabled sync settings: each makes a Job per tick, and
// their expansions share the tenant's concurrent searches.
func (s *Store) EnabledSettingsOf(ctx context.Context, tenantID string) (int, error) {
	q := s.Client.Collection(model.SyncSettings).Where("tenantId", "==", tenantID).Where("enabled", "==", true)
	return count(ctx, q, "enabled settings of tenant "+tenantID)
}

// CreateJob creates, once, the Job that tick tickID makes for a setting, with the window
// [setting watermark, to), and advances the watermark to `to` in the same transaction. It returns
// the Job and whether this call created it; a redelivered tick gets the existing Job back.
// It returns ErrEmptyWindow when `to` is not after the watermark (a late or reordered tick), and
// ErrPaused while the setting's last Job is paused: it is not expanded yet and has paused (the
// source's budget, or its tenant disconnected). The watermark then stays, so the setting's next
// Job, once that one has moved on, covers the whole gap.
func (s *Store) CreateJob(ctx context.Context, settingID, tickID string, to time.Time, defaultChunkSize int) (model.Job, bool, error) {
	ctx, span := telemetry.Start(ctx, "create job", attribute.String("oncesync.setting", settingID))
	defer span.End()
	to = to.UTC().Truncate(time.Millisecond)
	job, created, err := s.createJob(ctx, model.JobID(settingID, tickID), settingID, func(tx *firestore.Transaction, st model.SyncSetting, job *model.Job) error {
		if !to.After(st.Watermark) {
			return fmt.Errorf("setting %q: tick end %v not after watermark %v: %w", settingID, to, st.Watermark, ErrEmptyWindow)
		}
		if st.LastJobID != "" {
			last, err := tx.Get(s.JobRef(st.LastJobID))
			if err != nil && !notFound(err) {
				return err
			}
			var lj model.Job
			if err == nil && last.DataTo(&lj) == nil && Paused(lj) {
				return fmt.Errorf("setting %q: its last Job %s is paused (%s): %w", settingID, st.LastJobID, lj.Pause, ErrPaused)
			}
		}
		job.TickID, job.WindowFrom, job.WindowTo = tickID, st.Watermark.UTC(), to
		job.ChunkSize = chunkSize(st, defaultChunkSize)
		return tx.Update(s.Client.Collection(model.SyncSettings).Doc(settingID), []firestore.Update{{Path: "watermark", Value: to}, {Path: "lastJobId", Value: job.ID}})
	})
	if err != nil {
		return model.Job{}, false, fmt.Errorf("store: create job for setting %q tick %q: %w", settingID, tickID, err)
	}
	return job, created, nil
}

// ErrPaused: the setting's last Job is paused, and gets no successor until it moves on.
var ErrPaused = errors.New("store: the setting's last Job is paused")

// Paused reports whether a Job waits in a pause: not expanded yet, and paused at least once (for
// the source's budget, or its tenant disconnected). A Job that resumed and still expands counts
// too, until its plan is written.
func Paused(j model.Job) bool { return j.Status == model.JobPending && j.Pauses > 0 }

// ErrBeyondWatermark: a resync's window ends after the setting's watermark, which the ticks have
// not imported yet.
var ErrBeyondWatermark = errors.New("store: window ends after the setting's watermark")

// CreateResyncJob creates, once per request, a Job that imports the window [from, to) of a
// setting again, without moving its watermark: the same request (setting, window and label) gets
// the existing Job back, with created false. The window must end by the watermark
// (ErrBeyondWatermark): what lies after it is the next tick's.
func (s *Store) CreateResyncJob(ctx context.Context, settingID string, from, to time.Time, label string, defaultChunkSize int) (model.Job, bool, error) {
	from, to = from.UTC().Truncate(time.Millisecond), to.UTC().Truncate(time.Millisecond)
	request := from.Format(time.RFC3339Nano) + ".." + to.Format(time.RFC3339Nano)
	if label != "" {
		request += " " + label
	}
	job, created, err := s.createJob(ctx, model.ResyncJobID(settingID, request), settingID, func(_ *firestore.Transaction, st model.SyncSetting, job *model.Job) error {
		if !to.After(from) {
			return fmt.Errorf("window %v → %v is empty: %w", from, to, ErrEmptyWindow)
		}
		if to.After(st.Watermark) {
			return fmt.Errorf("setting %q: window end %v after watermark %v: %w", settingID, to, st.Watermark, ErrBeyondWatermark)
		}
		job.Resync, job.WindowFrom, job.WindowTo = request, from, to
		job.ChunkSize = chunkSize(st, defaultChunkSize)
		return nil
	})
	if err != nil {
		return model.Job{}, false, fmt.Errorf("store: resync of setting %q: %w", settingID, err)
	}
	return job, created, nil
}

// createJob creates Job jobID of a setting in one transaction, unless it exists (then it returns
// it, created false): fill completes the PENDING Job drawn from the setting, and may refuse it or
// add writes to the transaction.
func (s *Store) createJob(ctx context.Context, jobID, settingID string, fill func(tx *firestore.Transaction, st model.SyncSetting, job *model.Job) error) (model.Job, bool, error) {
	var job model.Job
	var created bool
	err := s.Client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		created = false
		jobRef := s.JobRef(jobID)
		snaps, err := tx.GetAll([]*firestore.DocumentRef{jobRef, s.Client.Collection(model.SyncSettings).Doc(settingID)})
		if err != nil {
			return err
		}
		if snaps[0].Exists() {
			job = model.Job{}
			if err := snaps[0].DataTo(&job); err != nil {
				return fmt.Errorf("decode job: %w", err)
			}
			job.ID = jobID
			return nil
		}
		if !snaps[1].Exists() {
			return fmt.Errorf("setting %q: %w", settingID, ErrNotFound)
		}
		var st model.SyncSetting
		if err := snaps[1].DataTo(&st); err != nil {
			return fmt.Errorf("decode setting: %w", err)
		}
		job = model.Job{
			ID: jobID, TenantID: st.TenantID, SettingID: settingID, SourceObject: st.SourceObject, Fields: st.Fields, Target: st.Target,
			APIReserve: st.APIReserve, Status: model.JobPending, CreatedAt: s.Now().UTC(), Trace: telemetry.TraceIDOf(ctx),
		}
		if err := fill(tx, st, &job); err != nil {
			return err
		}
		if err := tx.Create(jobRef, job); err != nil {
			return err
		}
		created = true
		return nil
	})
	return job, created, err
}

// chunkSize is a setting's chunk size, or the deployment's default when it sets none.
func chunkSize(st model.SyncSetting, defaultSize int) int {
	if st.ChunkSize > 0 {
		return st.ChunkSize
	}
	return defaultSize
}

// Job returns a Job.
func (s *Store) Job(ctx context.Context, id string) (model.Job, error) {
	var j model.Job
	if id == "" {
		return j, fmt.Errorf("store: job with empty ID: %w", ErrNotFound)
	}
	snap, err := s.JobRef(id).Get(ctx)
	if notFound(err) {
		return j, fmt.Errorf("store: job %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return j, fmt.Errorf("store: job %q: %w", id, err)
	}
	if err := snap.DataTo(&j); err != nil {
		return j, fmt.Errorf("store: job %q: decode: %w", id, err)
	}
	j.ID = id
	return j, nil
}

// CountSearch records that the expansion held by owner starts a source search for a Job. It is
// idempotent per owner, so it is simply retried (a few times, with backoff) on any failure: a
// commit that failed after it was applied (an ambiguous failure) is then found already counted,
// and the counter stays exact instead of counting one search twice.
func (s *Store) CountSearch(ctx context.Context, jobID, owner string) error {
	var err error
	for attempt := range 5 {
		if err = s.countSearch(ctx, jobID, owner); err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(50<<attempt) * time.Millisecond):
		}
	}
	return err
}

func (s *Store) countSearch(ctx context.Context, jobID, owner string) error {
	err := s.Client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(s.JobRef(jobID))
		if err != nil {
			return err
		}
		var j model.Job
		if err := snap.DataTo(&j); err != nil {
			return err
		}
		if slices.Contains(j.SearchedBy, owner) {
			return nil
		}
		return tx.Update(s.JobRef(jobID), []firestore.Update{
			{Path: "searches", Value: j.Searches + 1},
			{Path: "searchedBy", Value: firestore.ArrayUnion(owner)},
		})
	})
	if err != nil {
		return fmt.Errorf("store: count search of job %q: %w", jobID, err)
	}
	return nil
}

// LastChunk returns the plan position of the last chunk written for one slice of a Job (without
// its records), or nil when the slice has no chunk yet. It reads one index entry.
func (s *Store) LastChunk(ctx context.Context, jobID string, slice int) (*model.Chunk, error) {
	q := s.sliceChunks(jobID, slice).Select("index", "lastModstamp", "lastId", "count").
		OrderBy("index", firestore.Desc).Limit(1)
	docs, err := q.Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("store: last chunk of job %q slice %d: %w", jobID, slice, err)
	}
	if len(docs) == 0 {
		return nil, nil
	}
	var c model.Chunk
	if err := docs[0].DataTo(&c); err != nil {
		return nil, fmt.Errorf("store: last chunk of job %q: decode: %w", jobID, err)
	}
	return &c, nil
}

// sliceChunks selects the chunks of one slice: a range of the index field (model.ChunkIndex), so
// no composite index is needed.
func (s *Store) sliceChunks(jobID string, slice int) firestore.Query {
	return s.JobRef(jobID).Collection(model.Chunks).
		Where("index", ">=", model.ChunkIndex(slice, 0)).Where("index", "<", model.ChunkIndex(slice+1, 0))
}

// Slices returns a Job's slices in order (none before the first expansion cut them).
func (s *Store) Slices(ctx context.Context, jobID string) ([]model.Slice, error) {
	docs, err := s.JobRef(jobID).Collection(model.Slices).OrderBy("index", firestore.Asc).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("store: slices of job %q: %w", jobID, err)
	}
	out := make([]model.Slice, 0, len(docs))
	for i, d := range docs {
		var sl model.Slice
		if err := d.DataTo(&sl); err != nil {
			return nil, fmt.Errorf("store: slice %s: decode: %w", d.Ref.Path, err)
		}
		if sl.Index != i {
			return nil, fmt.Errorf("store: slices of job %q: slice %d found at position %d", jobID, sl.Index, i)
		}
		out = append(out, sl)
	}
	return out, nil
}

// OpenSlice reports whether any slice of the Job is not PLANNED yet, reading at most one index
// entry.
func (s *Store) OpenSlice(ctx context.Context, jobID string) (bool, error) {
	docs, err := s.JobRef(jobID).Collection(model.Slices).Where("status", "==", model.SlicePending).
		Select().Limit(1).Documents(ctx).GetAll()
	if err != nil {
		return false, fmt.Errorf("store: open slice of job %q: %w", jobID, err)
	}
	return len(docs) > 0, nil
}

// CountDeadRows counts the Job's source rows dead-lettered as bad data.
func (s *Store) CountDeadRows(ctx context.Context, jobID string) (int, error) {
	q := s.Client.Collection(model.DeadLetters).Where("jobId", "==", jobID).Where("kind", "==", model.DeadRecord)
	return count(ctx, q, "dead rows of job "+jobID)
}

func count(ctx context.Context, q firestore.Query, what string) (int, error) {
	res, err := q.NewAggregationQuery().WithCount("n").Get(ctx)
	if err != nil {
		return 0, fmt.Errorf("store: count %s: %w", what, err)
	}
	return aggInt(res["n"])
}

// PendingChunks returns the indexes of the Job's chunks that are not DONE.
func (s *Store) PendingChunks(ctx context.Context, jobID string) ([]int, error) {
	it := s.JobRef(jobID).Collection(model.Chunks).Where("status", "==", model.ChunkPending).Select("index").Documents(ctx)
	defer it.Stop()
	var out []int
	for {
		d, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("store: pending chunks of job %q: %w", jobID, err)
		}
		var c model.Chunk
		if err := d.DataTo(&c); err != nil {
			return nil, fmt.Errorf("store: pending chunk %s: decode: %w", d.Ref.Path, err)
		}
		out = append(out, c.Index)
	}
}

// CompleteJob marks a PLANNED Job COMPLETED if all its chunks are DONE, with counters summed
// from the chunks. It returns whether this call completed it; exactly one call ever does.
func (s *Store) CompleteJob(ctx context.Context, jobID string) (bool, error) {
	chunks := s.JobRef(jobID).Collection(model.Chunks).Where("status", "==", model.ChunkDone)
	res, err := chunks.NewAggregationQuery().WithCount("n").WithSum("imported", "imported").WithSum("unchanged", "unchanged").Get(ctx)
	if err != nil {
		return false, fmt.Errorf("store: complete job %q: sum chunks: %w", jobID, err)
	}
	var n, imported, unchanged int
	for _, f := range []struct {
		k string
		v *int
	}{{"n", &n}, {"imported", &imported}, {"unchanged", &unchanged}} {
		if *f.v, err = aggInt(res[f.k]); err != nil {
			return false, fmt.Errorf("store: complete job %q: %w", jobID, err)
		}
	}
	// A read, then an update conditioned on the Job's update time as read — not a transaction:
	// of racing completers exactly one update applies and the others fail the precondition, and
	// none waits on another's lock. (Two completers racing in a read-write transaction hold read
	// locks on the Job that each other's commit needs; the emulator's pessimistic locking then
	// delays the Job's completion by its 2 s lock timeout.) Aborted is retried, as a
	// transaction would be.
	for attempt := 1; ; attempt++ {
		ok, err := s.completeOnce(ctx, jobID, n, imported, unchanged)
		if status.Code(err) == codes.Aborted && attempt < completeAttempts {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("store: complete job %q: %w", jobID, err)
		}
		return ok, nil
	}
}

// completeAttempts is how often CompleteJob tries, like a transaction's default.
const completeAttempts = 5

func (s *Store) completeOnce(ctx context.Context, jobID string, n, imported, unchanged int) (bool, error) {
	snap, err := s.JobRef(jobID).Get(ctx)
	if err != nil {
		return false, err
	}
	var j model.Job
	if err := snap.DataTo(&j); err != nil {
		return false, fmt.Errorf("decode: %w", err)
	}
	if j.Status != model.JobPlanned || n != j.ChunkCount {
		return false, nil
	}
	_, err = s.JobRef(jobID).Update(ctx, []firestore.Update{
		{Path: "status", Value: model.JobCompleted},
		{Path: "imported", Value: imported},
		{Path: "unchanged", Value: unchanged},
		{Path: "completedAt", Value: s.Now().UTC()},
	}, firestore.LastUpdateTime(snap.UpdateTime))
	if status.Code(err) == codes.FailedPrecondition {
		return false, nil // another call completed (or failed) the Job since we read it
	}
	return err == nil, err
}

// FailJob marks a Job FAILED with a reason, unless it already finished.
func (s *Store) FailJob(ctx context.Context, jobID, reason string) error {
	err := s.Client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(s.JobRef(jobID))
		if err != nil {
			return err
		}
		if st, _ := snap.DataAt("status"); st == string(model.JobCompleted) || st == string(model.JobFailed) {
			return nil
		}
		return tx.Update(s.JobRef(jobID), []firestore.Update{{Path: "status", Value: model.JobFailed}, {Path: "failure", Value: reason}})
	})
	if err != nil {
		return fmt.Errorf("store: fail job %q: %w", jobID, err)
	}
	return nil
}

// DisconnectTenant marks the tenant's connection disconnected, with the reason and the time: its
// Jobs pause (see expander) until an operator connects it again.
func (s *Store) DisconnectTenant(ctx context.Context, tenantID, reason string) error {
	_, err := s.Client.Collection(model.Tenants).Doc(tenantID).Update(ctx, []firestore.Update{
		{Path: "connection", Value: model.ConnectionState{State: model.Disconnected, Reason: reason, ChangedAt: s.Now().UTC()}},
	})
	if err != nil {
		return fmt.Errorf("store: disconnect tenant %q: %w", tenantID, err)
	}
	return nil
}

// PauseJob records that a search of the Job paused for the source's request budget: the count,
// when, and why (the audit shows it).
func (s *Store) PauseJob(ctx context.Context, jobID, reason string) error {
	_, err := s.JobRef(jobID).Update(ctx, []firestore.Update{
		{Path: "pauses", Value: firestore.Increment(1)}, {Path: "pausedAt", Value: s.Now().UTC()}, {Path: "pause", Value: reason},
	})
	if err != nil {
		return fmt.Errorf("store: pause job %q: %w", jobID, err)
	}
	return nil
}

// UnfinishedJobs lists up to limit PENDING or PLANNED Jobs created before `before`, in creation
// order, after the cursor (nil: from the oldest): one page of the recovery sweep. The next page
// starts after the last Job returned.
func (s *Store) UnfinishedJobs(ctx context.Context, before time.Time, after *model.JobCursor, limit int) ([]model.Job, error) {
	q := s.unfinished(before).OrderBy("createdAt", firestore.Asc).OrderBy(firestore.DocumentID, firestore.Asc).Limit(limit)
	if after != nil {
		q = q.StartAfter(after.CreatedAt, after.ID)
	}
	docs, err := q.Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("store: unfinished jobs: %w", err)
	}
	out := make([]model.Job, 0, len(docs))
	for _, d := range docs {
		var j model.Job
		if err := d.DataTo(&j); err != nil {
			return nil, fmt.Errorf("store: job %s: decode: %w", d.Ref.ID, err)
		}
		j.ID = d.Ref.ID
		out = append(out, j)
	}
	return out, nil
}

// CountUnfinished counts the PENDING or PLANNED Jobs created before `before` (one aggregation).
func (s *Store) CountUnfinished(ctx context.Context, before time.Time) (int, error) {
	return count(ctx, s.unfinished(before), "unfinished jobs")
}

func (s *Store) unfinished(before time.Time) firestore.Query {
	return s.Client.Collection(model.Jobs).Where("status", "in", []string{string(model.JobPending), string(model.JobPlanned)}).Where("createdAt", "<", before)
}

func aggInt(v any) (int, error) {
	switch x := v.(type) {
	case int64:
		return int(x), nil
	case int:
		return x, nil
	case float64:
		return int(x), nil
	case interface{ GetIntegerValue() int64 }:
		return int(x.GetIntegerValue()), nil
	case nil:
		return 0, nil
	}
	return 0, fmt.Errorf("store: unexpected aggregation result %T", v)
}

// PlanTotals returns the number of chunks written for one slice of a Job and the rows they hold.
func (s *Store) PlanTotals(ctx context.Context, jobID string, slice int) (chunks, rows int, err error) {
	q := s.sliceChunks(jobID, slice)
	res, err := q.NewAggregationQuery().WithCount("n").WithSum("count", "rows").Get(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("store: plan totals of job %q slice %d: %w", jobID, slice, err)
	}
	if chunks, err = aggInt(res["n"]); err != nil {
		return 0, 0, err
	}
	rows, err = aggInt(res["rows"])
	return chunks, rows, err
}

// OpenChunk reports whether any chunk of the Job written so far is not DONE. It reads at most one
// index entry, so it costs the same for a Job of any size.
func (s *Store) OpenChunk(ctx context.Context, jobID string) (bool, error) {
	docs, err := s.JobRef(jobID).Collection(model.Chunks).Where("status", "==", model.ChunkPending).
		Select().Limit(1).Documents(ctx).GetAll()
	if err != nil {
		return false, fmt.Errorf("store: open chunk of job %q: %w", jobID, err)
	}
	return len(docs) > 0, nil
}

// CompleteIfDone completes the Job if its plan is complete (PLANNED) and no chunk is open. It is
// what both the last chunk import and the end of the plan call, each after its own write, so
// whichever of the two finishes last completes the Job: a writer that reads the other's state
// after its own write has landed cannot miss both (and CompleteJob makes it happen once). Its
// cost does not grow with the Job: one read of the Job and one single-entry query.
func (s *Store) CompleteIfDone(ctx context.Context, jobID string) (done bool, err error) {
	ctx, span := telemetry.Start(ctx, "completion check")
	defer func() {
		span.SetAttributes(attribute.Bool("oncesync.job.completed", done))
		telemetry.End(span, err)
	}()
	job, err := s.Job(ctx, jobID)
	if err != nil || job.Status != model.JobPlanned {
		return false, err
	}
	open, err := s.OpenChunk(ctx, jobID)
	if err != nil || open {
		return false, err
	}
	done, err = s.CompleteJob(ctx, jobID)
	if done {
		telemetry.MetricsFrom(ctx).JobCompleted(ctx, job.CreatedAt, s.Now())
	}
	return done, err
}
