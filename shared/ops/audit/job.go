package audit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/firestore"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/target"
)

// JobReport is the audit of one Job. Findings come first; the report is clean without any.
type JobReport struct {
	Findings []Finding      `json:"findings"`
	Omitted  map[string]int `json:"omitted,omitempty"` // findings not listed, by kind (MaxFindings)
	Job      model.Job      `json:"job"`
	Plan     Plan           `json:"plan"`
	Target   TargetReport   `json:"target"`
	// Deliveries per step: tick (shared by every Job of the tick), expand, chunk.
	Deliveries  []StepReport        `json:"deliveries"`
	Timeline    []Event             `json:"timeline"`
	Keys        []KeyReport         `json:"keys"` // the tick and expand keys; chunk keys are in Chunks
	Chunks      []ChunkReport       `json:"chunks"`
	DeadLetters []DeadLetterSummary `json:"deadLetters"`
	AuditedAt   time.Time           `json:"auditedAt"`
	Reads       int64               `json:"reads"` // documents read by the audit
}

// Clean reports whether the audit found nothing.
func (r JobReport) Clean() bool { return len(r.Findings) == 0 && len(r.Omitted) == 0 }

// Plan compares the Job's chunk plan with what exists.
type Plan struct {
	ChunkSize   int `json:"chunkSize"`
	Records     int `json:"records"`     // valid rows the search returned (Job.recordCount)
	Invalid     int `json:"invalid"`     // rows dead-lettered as bad data
	Expected    int `json:"expected"`    // ceil(records / chunkSize), summed over the slices
	Slices      int `json:"slices"`      // parts of the window searched apart (0: not cut yet)
	ChunkCount  int `json:"chunkCount"`  // what the expander planned
	Found       int `json:"found"`       // chunk documents
	Rows        int `json:"rows"`        // rows held by the planned chunks
	Done        int `json:"done"`        // planned chunks DONE
	ShortChunks int `json:"shortChunks"` // chunks cut short by the byte limit (model.CutBytes)
	Searches    int `json:"searches"`    // source searches started
	Imported    int `json:"imported"`    // sums over the planned chunks
	Unchanged   int `json:"unchanged"`
}

// TargetReport sums the target-record checks of a Job's DONE chunks.
type TargetReport struct {
	Checked    bool   `json:"checked"` // false without CheckRecords
	Collection string `json:"collection"`
	Chunks     int    `json:"chunks"`     // DONE chunks checked
	Rows       int    `json:"rows"`       // external IDs checked (one per ID per chunk)
	Duplicated int    `json:"duplicated"` // external IDs with more than one target record
	Extra      int    `json:"extra"`      // target records beyond one per external ID
	Missing    int    `json:"missing"`
	Stale      int    `json:"stale"`
}

func (t *TargetReport) add(o TargetReport) {
	t.Chunks += o.Chunks
	t.Rows += o.Rows
	t.Duplicated += o.Duplicated
	t.Extra += o.Extra
	t.Missing += o.Missing
	t.Stale += o.Stale
}

// ChunkReport is one chunk document and the deliveries of its key.
type ChunkReport struct {
	Index     int               `json:"index"`
	DocID     string            `json:"docId"`
	Status    model.ChunkStatus `json:"status"`
	Count     int               `json:"count"`
	CutBy     string            `json:"cutBy,omitempty"` // model.CutRows, CutBytes or CutEnd
	Imported  int               `json:"imported"`
	Unchanged int               `json:"unchanged"`
	PlannedAt time.Time         `json:"plannedAt,omitzero"`
	DoneAt    time.Time         `json:"doneAt,omitzero"`
	Planned   bool              `json:"planned"` // inside the Job's plan (index < chunkCount)
	Target    *TargetReport     `json:"target,omitempty"`
	Key       KeyReport         `json:"key"`
}

// Event is one line of a Job's timeline.
type Event struct {
	At   time.Time `json:"at"`
	What string    `json:"what"`
	// Trace is the trace that holds what happened (Cloud Trace, or the demo's trace page): the
	// tick's trace for the Job's own work, the delivery's for a key, the duplicate's for a
	// duplicate; empty when unknown (a key deleted by its TTL, a Job made by command).
	Trace string `json:"trace,omitempty"`
}

// chunkFields are the chunk fields an audit reads; records only when it checks them.
var chunkFields = []string{"index", "jobId", "status", "count", "cutBy", "plannedAt", "doneAt", "imported", "unchanged"}

// Job audits one Job. It returns ErrNotFound when the Job does not exist.
func (a *Auditor) Job(ctx context.Context, id string) (JobReport, error) {
	var rd reads
	fs := newFindings(a.MaxFindings)
	rep, err := a.job(ctx, id, &rd, fs)
	if err != nil {
		return JobReport{}, err
	}
	rep.Findings, rep.Omitted = fs.sorted()
	rep.Reads = rd.n.Load()
	return rep, nil
}

func (a *Auditor) readJob(ctx context.Context, rd *reads, id string) (model.Job, error) {
	var j model.Job
	if id == "" {
		return j, fmt.Errorf("audit: job with empty ID: %w", ErrNotFound)
	}
	snap, err := a.fs.Collection(model.Jobs).Doc(id).Get(ctx)
	rd.docs(1)
	if status.Code(err) == codes.NotFound {
		return j, fmt.Errorf("audit: job %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return j, ctxErr(ctx, fmt.Errorf("audit: job %q: %w", id, err))
	}
	if err := snap.DataTo(&j); err != nil {
		return j, fmt.Errorf("audit: job %q: decode: %w", id, err)
	}
	j.ID = id
	return j, nil
}

func (a *Auditor) job(ctx context.Context, id string, rd *reads, fs *findings) (JobReport, error) {
	job, err := a.readJob(ctx, rd, id)
	if err != nil {
		return JobReport{}, err
	}
	now := a.now()
	rep := JobReport{Job: job, AuditedAt: now, Chunks: []ChunkReport{}}
	planned := job.Status == model.JobPlanned || job.Status == model.JobCompleted
	rep.Plan = Plan{ChunkSize: job.ChunkSize, Records: job.RecordCount, Invalid: job.InvalidCount, ChunkCount: job.ChunkCount, Searches: job.Searches}
	slices, err := a.slices(ctx, rd, job)
	if err != nil {
		return JobReport{}, err
	}
	rep.Plan.Slices = len(slices)
	if job.ChunkSize > 0 {
		rep.Plan.Expected = (job.RecordCount + job.ChunkSize - 1) / job.ChunkSize
		if len(slices) > 0 {
			rep.Plan.Expected = 0 // each slice's search ends with a chunk of its own
			for _, sl := range slices {
				rep.Plan.Expected += (sl.Rows + job.ChunkSize - 1) / job.ChunkSize
			}
		}
	}
	planIndexes := model.PlanIndexes(job, slices)
	inPlan := make(map[int]bool, len(planIndexes))
	for _, i := range planIndexes {
		inPlan[i] = true
	}
	coll := targetCollection(job.Target)
	rep.Target = TargetReport{Checked: a.CheckRecords && coll != "", Collection: coll}

	chunks, err := a.chunks(ctx, rd, fs, job, planned, inPlan, &rep.Target)
	if err != nil {
		return JobReport{}, err
	}

	// Keys: the tick's, the expansion's, and one per chunk (planned, or found).
	var keys []idem.Key
	if job.TickID != "" {
		keys = append(keys, idem.TickKey(job.TickID))
	}
	for s := range max(len(slices), 1) {
		keys = append(keys, idem.SliceKey(job.ID, s))
	}
	fixed := len(keys)
	indexes := make([]int, 0, max(job.ChunkCount, len(chunks)))
	if planned {
		indexes = append(indexes, planIndexes...)
	}
	for _, c := range chunks {
		if !planned || !inPlan[c.Index] {
			indexes = append(indexes, c.Index)
		}
	}
	for _, i := range indexes {
		keys = append(keys, chunkKey(job.ID, i))
	}
	krs, err := a.keys(ctx, rd, keys)
	if err != nil {
		return JobReport{}, err
	}
	rep.Keys = krs[:fixed]
	byIndex := map[int]KeyReport{}
	for n, i := range indexes {
		k := krs[fixed+n]
		k.Chunk = intp(i)
		byIndex[i] = k
	}
	for i := range chunks {
		chunks[i].Key = byIndex[chunks[i].Index]
	}
	steps := map[string]*StepReport{StepTick: {Step: StepTick}, StepExpand: {Step: StepExpand}, StepChunk: {Step: StepChunk}}
	for _, k := range krs[:fixed] {
		steps[k.Step].add(k)
	}
	for _, i := range indexes {
		steps[StepChunk].add(byIndex[i])
	}
	for _, s := range []string{StepTick, StepExpand, StepChunk} {
		rep.Deliveries = append(rep.Deliveries, *steps[s])
	}
	for _, k := range krs {
		if f := leaseFinding(k, job.ID); f != nil {
			fs.add(*f)
		}
	}

	a.planFindings(fs, job, chunks, byIndex, planned, planIndexes, &rep.Plan)
	a.jobFindings(fs, job, chunks, krs[fixed-max(len(slices), 1):fixed], now)

	dls, err := a.deadLetters(ctx, rd, DeadLetterFilter{Job: job.ID})
	if err != nil {
		return JobReport{}, err
	}
	resolve(dls, job.Status)
	rep.DeadLetters = dls
	for _, d := range dls {
		if f := deadLetterFinding(d); f != nil {
			fs.add(*f)
		}
	}
	rep.Chunks = chunks
	rep.Timeline = timeline(job, rep.Keys, chunks, dls)
	return rep, nil
}

func targetCollection(kind string) string {
	k, _ := model.Kind(kind)
	return k.Records
}

// slices reads the Job's slices (none for a Job not yet cut, or cut before slices existed).
func (a *Auditor) slices(ctx context.Context, rd *reads, job model.Job) ([]model.Slice, error) {
	if job.SliceCount == 0 {
		return nil, nil
	}
	docs, err := a.fs.Collection(model.Jobs).Doc(job.ID).Collection(model.Slices).OrderBy("index", firestore.Asc).Documents(ctx).GetAll()
	rd.query(len(docs))
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("audit: slices of job %s: %w", job.ID, err))
	}
	out := make([]model.Slice, 0, len(docs))
	for _, d := range docs {
		var sl model.Slice
		if err := d.DataTo(&sl); err != nil {
			return nil, fmt.Errorf("audit: decode %s: %w", d.Ref.Path, err)
		}
		out = append(out, sl)
	}
	return out, nil
}

// chunks reads the Job's chunk documents in plan order, a page at a time, checking the target
// records of each DONE chunk of the plan on up to Parallel goroutines. Each page is read in full
// before its chunks are checked: a query stream left open while other queries run can stall (the
// emulator blocks on it, and production ends long streams).
func (a *Auditor) chunks(ctx context.Context, rd *reads, fs *findings, job model.Job, planned bool, inPlan map[int]bool, tr *TargetReport) ([]ChunkReport, error) {
	fields := chunkFields
	page := metadataPage
	if tr.Checked {
		fields = append(slices.Clone(fields), "records")
		page = a.parallel() // at most two pages of chunks in memory: one being checked, one read
	}
	var w *writtenRecords
	if tr.Checked {
		var err error
		if w, err = a.written(ctx, rd, job); err != nil {
			return nil, ctxErr(ctx, err)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(a.parallel())
	var mu sync.Mutex
	var out []*ChunkReport
	dups := &seen{m: map[string]bool{}}
	q := a.fs.Collection(model.Jobs).Doc(job.ID).Collection(model.Chunks).Select(fields...).OrderBy(firestore.DocumentID, firestore.Asc).Limit(page)
	var last *firestore.DocumentSnapshot
	err := func() error {
		for {
			pq := q
			if last != nil {
				pq = q.StartAfter(last)
			}
			docs, err := pq.Documents(gctx).GetAll()
			if err != nil {
				return fmt.Errorf("audit: chunks of job %s: %w", job.ID, err)
			}
			rd.query(len(docs))
			for _, snap := range docs {
				var c model.Chunk
				if err := snap.DataTo(&c); err != nil {
					return fmt.Errorf("audit: decode %s: %w", snap.Ref.Path, err)
				}
				cr := &ChunkReport{
					Index: c.Index, DocID: snap.Ref.ID, Status: c.Status, Count: c.Count, CutBy: c.CutBy, Imported: c.Imported, Unchanged: c.Unchanged,
					PlannedAt: c.PlannedAt, DoneAt: c.DoneAt,
					Planned: snap.Ref.ID == model.ChunkID(c.Index) && (!planned || inPlan[c.Index]),
				}
				mu.Lock()
				out = append(out, cr)
				mu.Unlock()
				if !tr.Checked || !cr.Planned || c.Status != model.ChunkDone {
					continue
				}
				if c.Count != len(c.Records) {
					fs.add(Finding{Severity: Error, Kind: PlanMismatch, Job: job.ID, Chunk: intp(c.Index), Docs: []string{chunkPath(job.ID, snap.Ref.ID)},
						Detail: fmt.Sprintf("chunk %d says it holds %d rows but holds %d", c.Index, c.Count, len(c.Records))})
				}
				g.Go(func() error {
					res, err := a.checkRecords(gctx, rd, fs, dups, w, job, c)
					if err != nil {
						return err
					}
					mu.Lock()
					cr.Target = &res
					tr.add(res)
					mu.Unlock()
					return nil
				})
			}
			if len(docs) < page {
				return nil
			}
			last = docs[len(docs)-1]
		}
	}()
	if werr := g.Wait(); err == nil {
		err = werr
	}
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	res := make([]ChunkReport, len(out))
	for i, c := range out {
		res[i] = *c
	}
	return res, nil
}

// metadataPage is how many chunk documents a page holds without their records.
const metadataPage = 300

func chunkPath(jobID, docID string) string {
	return model.Jobs + "/" + jobID + "/" + model.Chunks + "/" + docID
}

// seen is a set shared by concurrent checks.
type seen struct {
	mu sync.Mutex
	m  map[string]bool
}

// first reports whether k is new, and records it.
func (s *seen) first(k string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[k] {
		return false
	}
	s.m[k] = true
	return true
}

// targetDoc is the part of a target record the audit reads.
type targetDoc struct {
	path       string
	id         string
	ExternalID string    `firestore:"externalId"`
	Version    time.Time `firestore:"version"`
	JobID      string    `firestore:"jobId"`
	Chunk      int       `firestore:"chunk"`
	ImportedAt time.Time `firestore:"importedAt"`
}

var targetFields = []string{"externalId", "version", "jobId", "chunk", "importedAt"}

func (t targetDoc) String() string {
	return fmt.Sprintf("%s (job %s chunk %d, imported %s)", t.path, t.JobID, t.Chunk, ts(t.ImportedAt))
}

// checkRecords checks the target records of one DONE chunk:
//
//   - every row has its record — the one the pipeline keeps for the external ID: the upsert
//     target's deterministic document, or the generated-ID target's indexed one — at the row's
//     version or newer (else missing_record, stale_record);
//   - every record the chunk wrote (jobId and chunk equal to this chunk's) is that record (else
//     it is an extra copy: duplicate_record).
//
// Cost: the chunk's records (see writtenRecords), one read per row of the index (generated-ID
// target), and one read per row whose record a later Job rewrote. Every lookup is by document ID
// or by equality, so it is as cheap on the emulator (which scans a collection per query, and once
// per value of an "in" filter) as in production.
func (a *Auditor) checkRecords(ctx context.Context, rd *reads, fs *findings, dups *seen, w *writtenRecords, job model.Job, c model.Chunk) (TargetReport, error) {
	name := targetCollection(job.Target)
	coll := a.fs.Collection(name)
	rows := target.Newest(c.Records)
	res := TargetReport{Chunks: 1, Rows: len(rows)}
	fail := func(err error) (TargetReport, error) {
		return res, fmt.Errorf("audit: target records of job %s chunk %d: %w", job.ID, c.Index, err)
	}
	written, err := w.chunk(ctx, rd, c.Index)
	if err != nil {
		return fail(err)
	}
	ids := make([]string, 0, len(rows)+len(written))
	inChunk := make(map[string]bool, len(rows))
	for _, r := range rows {
		ids = append(ids, r.ID)
		inChunk[r.ID] = true
	}
	for id := range written {
		if !inChunk[id] {
			ids = append(ids, id) // a record of this chunk for a row it does not hold
		}
	}
	canon, err := a.canonical(ctx, rd, job, ids)
	if err != nil {
		return fail(err)
	}

	// The kept record of each row: written by this chunk, or else read by ID.
	kept := map[string]*targetDoc{}
	var lookup []*firestore.DocumentRef
	for _, r := range rows {
		for i, t := range written[r.ID] {
			if t.id == canon[r.ID] {
				kept[r.ID] = &written[r.ID][i]
			}
		}
		if kept[r.ID] == nil && canon[r.ID] != "" {
			lookup = append(lookup, coll.Doc(canon[r.ID]))
		}
	}
	if len(lookup) > 0 {
		snaps, err := a.getAll(ctx, rd, lookup)
		if err != nil {
			return fail(err)
		}
		for _, d := range snaps {
			if !d.Exists() {
				continue
			}
			var t targetDoc
			if err := d.DataTo(&t); err != nil {
				return fail(fmt.Errorf("decode %s: %w", d.Ref.Path, err))
			}
			t.path, t.id = name+"/"+d.Ref.ID, d.Ref.ID
			kept[t.ExternalID] = &t
		}
	}
	for _, r := range rows {
		k := kept[r.ID]
		switch {
		case k == nil:
			res.Missing++
			where := name + "/" + canon[r.ID]
			if canon[r.ID] == "" {
				where = job.Target + " target: no record kept for " + model.EngagementKey(job.TenantID, job.SourceObject, r.ID)
			}
			fs.add(Finding{Severity: Error, Kind: MissingRecord, Job: job.ID, Chunk: intp(c.Index), ExternalID: r.ID, Docs: []string{where},
				Detail: fmt.Sprintf("row %s (version %s) of DONE chunk %d has no %s record (%s not found)", r.ID, ts(r.Modstamp), c.Index, name, where)})
		case k.Version.Before(r.Modstamp):
			res.Stale++
			fs.add(Finding{Severity: Error, Kind: StaleRecord, Job: job.ID, Chunk: intp(c.Index), ExternalID: r.ID, Docs: []string{k.path},
				Detail: fmt.Sprintf("row %s of DONE chunk %d has version %s; its record %s has %s", r.ID, c.Index, ts(r.Modstamp), k.path, ts(k.Version))})
		}
	}

	// Every record this chunk wrote that is not the kept one is an extra copy.
	for _, id := range ids {
		var extra []targetDoc
		for _, t := range written[id] {
			if t.id != canon[id] {
				extra = append(extra, t)
			}
		}
		if len(extra) == 0 {
			continue
		}
		res.Duplicated++
		res.Extra += len(extra)
		if !dups.first(name + "|" + id) {
			continue
		}
		all := make([]string, 0, len(extra)+1)
		paths := make([]string, 0, len(extra)+1)
		if k := kept[id]; k != nil {
			all = append(all, k.String()+", the one kept")
			paths = append(paths, k.path)
		} else if canon[id] != "" {
			all = append(all, name+"/"+canon[id]+" (the one kept, not found)")
		}
		for _, t := range extra {
			all = append(all, t.String())
			paths = append(paths, t.path)
		}
		fs.add(Finding{Severity: Error, Kind: DuplicateRecord, Job: job.ID, Chunk: intp(c.Index), ExternalID: id, Docs: paths,
			Detail: fmt.Sprintf("external ID %s has %d target records: %s", id, len(extra)+1, strings.Join(all, "; "))})
	}
	return res, nil
}

// preloadRows is the largest Job whose written records are read with one query and held in
// memory (about 250 bytes each); bigger Jobs query them chunk by chunk.
const preloadRows = 100_000

func (a *Auditor) preloadRows() int {
	if a.preload != 0 {
		return a.preload
	}
	return preloadRows
}

// writtenRecords are the target records a Job wrote (jobId = the Job's), by chunk and external
// ID. A small Job's are read at once, with one query: the emulator scans the whole collection for
// every query, so one query per chunk would cost a scan per chunk. A big Job's are read chunk by
// chunk, so memory stays bounded.
type writtenRecords struct {
	coll    *firestore.CollectionRef
	job     string
	byChunk map[int]map[string][]targetDoc // nil: query per chunk
}

func (a *Auditor) written(ctx context.Context, rd *reads, job model.Job) (*writtenRecords, error) {
	w := &writtenRecords{coll: a.fs.Collection(targetCollection(job.Target)), job: job.ID}
	if job.RecordCount > a.preloadRows() {
		return w, nil
	}
	docs, err := w.read(ctx, rd, w.coll.Where("jobId", "==", job.ID))
	if err != nil {
		return nil, fmt.Errorf("audit: target records of job %s: %w", job.ID, err)
	}
	w.byChunk = map[int]map[string][]targetDoc{}
	for _, t := range docs {
		m := w.byChunk[t.Chunk]
		if m == nil {
			m = map[string][]targetDoc{}
			w.byChunk[t.Chunk] = m
		}
		m[t.ExternalID] = append(m[t.ExternalID], t)
	}
	return w, nil
}

// chunk returns the records chunk i wrote, by external ID.
func (w *writtenRecords) chunk(ctx context.Context, rd *reads, i int) (map[string][]targetDoc, error) {
	if w.byChunk != nil {
		return w.byChunk[i], nil
	}
	docs, err := w.read(ctx, rd, w.coll.Where("jobId", "==", w.job).Where("chunk", "==", i))
	if err != nil {
		return nil, err
	}
	out := map[string][]targetDoc{}
	for _, t := range docs {
		out[t.ExternalID] = append(out[t.ExternalID], t)
	}
	return out, nil
}

func (w *writtenRecords) read(ctx context.Context, rd *reads, q firestore.Query) ([]targetDoc, error) {
	snaps, err := q.Select(targetFields...).Documents(ctx).GetAll()
	if err != nil {
		return nil, err
	}
	rd.query(len(snaps))
	out := make([]targetDoc, len(snaps))
	for i, d := range snaps {
		if err := d.DataTo(&out[i]); err != nil {
			return nil, fmt.Errorf("decode %s: %w", d.Ref.Path, err)
		}
		out[i].path, out[i].id = w.coll.ID+"/"+d.Ref.ID, d.Ref.ID
	}
	return out, nil
}

// canonical returns, per external ID, the document ID of the target record the pipeline keeps, as
// the Job's target kind says (target.Target.Kept; "" when it keeps none).
func (a *Auditor) canonical(ctx context.Context, rd *reads, job model.Job, ids []string) (map[string]string, error) {
	t, err := target.For(a.fs, job.Target)
	if err != nil {
		return nil, err
	}
	kept, n, err := t.Kept(ctx, job.TenantID, job.SourceObject, ids)
	rd.docs(n)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ids))
	for _, id := range ids {
		out[id] = ""
		if ref := kept[id]; ref != nil {
			out[id] = ref.ID
		}
	}
	return out, nil
}

// planFindings compares the plan with the chunk documents.
func (a *Auditor) planFindings(fs *findings, job model.Job, chunks []ChunkReport, keys map[int]KeyReport, planned bool, planIndexes []int, p *Plan) {
	p.Found = len(chunks)
	have := map[int]bool{}
	for _, c := range chunks {
		if !c.Planned {
			if planned || c.DocID != model.ChunkID(c.Index) {
				fs.add(Finding{Severity: Error, Kind: ExtraChunk, Job: job.ID, Chunk: intp(c.Index), Docs: []string{chunkPath(job.ID, c.DocID)},
					Detail: fmt.Sprintf("chunk document %s (index %d, %s, %d rows, %d deliveries) is outside the plan of %d chunks", c.DocID, c.Index, c.Status, c.Count, c.Key.Deliveries, job.ChunkCount)})
			}
			continue
		}
		have[c.Index] = true
		p.Rows += c.Count
		p.Imported += c.Imported
		p.Unchanged += c.Unchanged
		if c.Status == model.ChunkDone {
			p.Done++
		}
	}
	var plan []model.Chunk // the planned chunks, in index order, for the cut rule
	for _, c := range chunks {
		if c.Planned {
			plan = append(plan, model.Chunk{Index: c.Index, Count: c.Count, CutBy: c.CutBy})
			if c.CutBy == model.CutBytes {
				p.ShortChunks++
			}
		}
	}
	if !planned {
		return
	}
	slices.SortFunc(plan, func(a, b model.Chunk) int { return a.Index - b.Index })
	if job.ChunkSize > 0 {
		// The byte limit is the deployment's (ONCESYNC_MAX_CHUNK_BYTES), not the Job's: the audit
		// checks the cuts it can see without it.
		for _, v := range (model.ChunkRule{Size: job.ChunkSize}).CheckPlan(plan) {
			fs.add(Finding{Severity: Error, Kind: PlanMismatch, Job: job.ID, Detail: "the plan breaks the chunk rule: " + v})
		}
	}
	if len(planIndexes) != job.ChunkCount {
		fs.add(Finding{Severity: Error, Kind: PlanMismatch, Job: job.ID,
			Detail: fmt.Sprintf("the slices plan %d chunks; the Job says %d", len(planIndexes), job.ChunkCount)})
	}
	for _, i := range planIndexes {
		if !have[i] {
			fs.add(Finding{Severity: Error, Kind: MissingChunk, Job: job.ID, Chunk: intp(i), Docs: []string{chunkPath(job.ID, model.ChunkID(i))},
				Detail: fmt.Sprintf("chunk %d of %d planned has no document (its key: %s)", i, job.ChunkCount, keyState(keys[i]))})
		}
	}
	switch {
	case p.Rows != job.RecordCount:
		fs.add(Finding{Severity: Error, Kind: PlanMismatch, Job: job.ID,
			Detail: fmt.Sprintf("the planned chunks hold %d rows; the Job says the search returned %d", p.Rows, job.RecordCount)})
	case job.ChunkCount < p.Expected:
		fs.add(Finding{Severity: Error, Kind: PlanMismatch, Job: job.ID,
			Detail: fmt.Sprintf("%d rows in chunks of %d need %d chunks; the plan has %d", job.RecordCount, job.ChunkSize, p.Expected, job.ChunkCount)})
	}
	if job.Status != model.JobCompleted {
		return
	}
	for _, c := range chunks {
		if c.Planned && c.Status != model.ChunkDone {
			fs.add(Finding{Severity: Error, Kind: ChunkNotDone, Job: job.ID, Chunk: intp(c.Index), Docs: []string{chunkPath(job.ID, c.DocID)},
				Detail: fmt.Sprintf("the Job is COMPLETED but chunk %d is %s", c.Index, c.Status)})
		}
	}
	if p.Imported != job.Imported || p.Unchanged != job.Unchanged || p.Imported+p.Unchanged != p.Rows {
		fs.add(Finding{Severity: Error, Kind: CounterMismatch, Job: job.ID,
			Detail: fmt.Sprintf("chunks: %d rows = %d imported + %d unchanged; Job: imported %d, unchanged %d", p.Rows, p.Imported, p.Unchanged, job.Imported, job.Unchanged)})
	}
}

func keyState(k KeyReport) string {
	switch {
	case !k.Found:
		return "not found"
	case k.Expired:
		return "IN_PROGRESS, lease expired " + ts(k.LeaseUntil)
	}
	return fmt.Sprintf("%s, %d claims, %d duplicates", k.State, k.Claims, k.Duplicates)
}

// jobFindings judges the Job's state and its searches.
// expandKeys are the keys of the Job's slices in order; slice 0's is the Job's first expansion.
func (a *Auditor) jobFindings(fs *findings, job model.Job, chunks []ChunkReport, expandKeys []KeyReport, now time.Time) {
	expand := expandKeys[0]
	switch job.Status {
	case model.JobFailed:
		fs.add(Finding{Severity: Warning, Kind: JobFailed, Job: job.ID, Docs: []string{model.Jobs + "/" + job.ID},
			Detail: fmt.Sprintf("the Job FAILED: %s; its window %s → %s was not imported: fix the cause, then oncesync-ops deadletters replay --job %s",
				job.Failure, ts(job.WindowFrom), ts(job.WindowTo), job.ID)})
	case model.JobPending, model.JobPlanned:
		age := now.Sub(job.CreatedAt)
		if age <= a.stuckAfter() {
			break
		}
		var pending []string
		for _, c := range chunks {
			if c.Planned && c.Status != model.ChunkDone {
				pending = append(pending, fmt.Sprint(c.Index))
			}
		}
		detail := fmt.Sprintf("the Job is still %s %s after its creation (stuck after %s)", job.Status, age.Round(time.Second), a.stuckAfter())
		if job.Status == model.JobPending {
			detail += "; expansion key: " + keyState(expand)
			if expand.State == idem.Done {
				detail += " — closed by a delivery that was dead-lettered, so the recovery sweep's re-publishes are acked as duplicates: fix the cause, then oncesync-ops deadletters replay --job " + job.ID
			}
		} else {
			detail += fmt.Sprintf("; %d chunks not DONE: %s", len(pending), abbreviate(pending, 20))
		}
		fs.add(Finding{Severity: Warning, Kind: JobStuck, Job: job.ID, Docs: []string{model.Jobs + "/" + job.ID}, Detail: detail})
	}
	// One search per slice; each expansion that took a crashed owner's lease over resumes its
	// slice's search, and so does each reopen of a FAILED Job by a replay; nothing else may.
	allowed, takeovers, gone := len(expandKeys)+job.Reopens, 0, false
	for _, k := range expandKeys {
		takeovers += k.Takeovers
		gone = gone || !k.Found
	}
	allowed += takeovers
	if job.Searches > allowed {
		why := fmt.Sprintf("%d slices, %d takeovers of their keys, %d reopens", len(expandKeys), takeovers, job.Reopens)
		if gone {
			why = "an expansion key is gone (TTL), so takeovers are unknown"
		}
		fs.add(Finding{Severity: Warning, Kind: ExtraSearch, Job: job.ID, Key: expand.Key,
			Detail: fmt.Sprintf("%d source searches ran for the Job; at most %d expected (%s)", job.Searches, allowed, why)})
	}
}

func abbreviate(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(" … (%d more)", len(items)-n)
}

// timeline orders what is known of the Job's life.
func timeline(job model.Job, keys []KeyReport, chunks []ChunkReport, dls []DeadLetterSummary) []Event {
	var ev []Event
	trace := job.Trace // each line's trace: the Job's own unless a key says otherwise
	add := func(at time.Time, format string, args ...any) {
		if !at.IsZero() {
			ev = append(ev, Event{At: at.UTC(), What: fmt.Sprintf(format, args...), Trace: trace})
		}
	}
	// in records what a key's line says in the trace of that key's delivery (tr, when known).
	in := func(tr string, f func()) {
		saved := trace
		if tr != "" {
			trace = tr
		}
		f()
		trace = saved
	}
	if job.Resync != "" {
		add(job.CreatedAt, "resync Job created by request %q: window %s → %s imported again (watermark untouched), %s → %s target", job.Resync,
			ts(job.WindowFrom), ts(job.WindowTo), job.SourceObject, job.Target)
	} else {
		add(job.CreatedAt, "Job created by tick %s: window %s → %s, %s → %s target", job.TickID, ts(job.WindowFrom), ts(job.WindowTo), job.SourceObject, job.Target)
	}
	add(job.ReopenedAt, "FAILED Job reopened by a replay of its dead letter (%d reopen%s in all)", job.Reopens, pluralS(job.Reopens))
	add(job.PausedAt, "search paused for the source's API budget (%d pause%s in all; the last: %s); the recovery sweep resumes it", job.Pauses, pluralS(job.Pauses), job.Pause)
	for _, k := range keys {
		if !k.Found && k.Duplicates == 0 {
			continue
		}
		switch k.Step {
		case StepTick:
			if k.Duplicates > 0 {
				in(k.DuplicateTrace, func() {
					add(k.LastDuplicateAt, "tick: %s, message %s", dupPhrase(k.Duplicates, k.WhileInProgress), k.LastDupMessage)
				})
			}
		case StepExpand:
			in(k.Trace, func() {
				add(k.CreatedAt, "expand: key claimed by message %s", k.MessageID)
				if k.Takeovers > 0 {
					add(k.UpdatedAt, "expand: lease taken over %d times (the last write since)", k.Takeovers)
				}
				add(k.DoneAt, "expand: key DONE")
			})
			if k.Duplicates > 0 {
				in(k.DuplicateTrace, func() {
					add(k.LastDuplicateAt, "expand: %s, message %s", dupPhrase(k.Duplicates, k.WhileInProgress), k.LastDupMessage)
				})
			}
		}
	}
	var first, lastPlanned, firstDone, lastDone time.Time
	done, dups, dupsIP, takeovers := 0, 0, 0, 0
	var lastDup time.Time
	var lastDupTrace string
	for _, c := range chunks {
		first = minTime(first, c.PlannedAt)
		lastPlanned = maxTime(lastPlanned, c.PlannedAt)
		if c.Status == model.ChunkDone {
			done++
			firstDone = minTime(firstDone, c.DoneAt)
			lastDone = maxTime(lastDone, c.DoneAt)
		}
		dups += c.Key.Duplicates
		dupsIP += c.Key.WhileInProgress
		takeovers += c.Key.Takeovers
		if c.Key.LastDuplicateAt.After(lastDup) {
			lastDupTrace = c.Key.DuplicateTrace
		}
		lastDup = maxTime(lastDup, c.Key.LastDuplicateAt)
	}
	add(first, "first chunk written")
	if job.ChunkCount > 0 || job.Status == model.JobPlanned || job.Status == model.JobCompleted {
		add(job.PlannedAt, "plan complete: %d chunks, %d rows, %d invalid, %d source search%s", job.ChunkCount, job.RecordCount, job.InvalidCount, job.Searches, pluralES(job.Searches))
	}
	add(firstDone, "first chunk DONE")
	if dups > 0 {
		in(lastDupTrace, func() { add(lastDup, "chunks: %s (the last one's trace)", dupPhrase(dups, dupsIP)) })
	}
	if takeovers > 0 {
		add(lastDone, "chunks: %d leases taken over in all", takeovers)
	}
	if done > 1 {
		add(lastDone, "last chunk DONE (%d of %d)", done, job.ChunkCount)
	}
	for _, d := range dls {
		if d.Kind == model.DeadRecord {
			continue
		}
		add(d.FirstAt, "dead letter %s: %s %s (%s), %d attempts", d.ID, d.Function, d.Reason, d.Error, d.Attempts)
		add(d.ReplayedAt, "dead letter %s replayed (%d replays, message %s)", d.ID, d.Replays, d.ReplayMessageID)
	}
	if rows := countRows(dls); rows > 0 {
		add(job.PlannedAt, "%d source rows dead-lettered as bad data", rows)
	}
	if job.Status == model.JobCompleted {
		add(job.CompletedAt, "Job COMPLETED: %d imported, %d unchanged", job.Imported, job.Unchanged)
	}
	if job.Status == model.JobFailed {
		add(maxTime(job.PlannedAt, job.CreatedAt), "Job FAILED: %s", job.Failure)
	}
	slices.SortStableFunc(ev, func(a, b Event) int { return a.At.Compare(b.At) })
	if ev == nil {
		ev = []Event{}
	}
	return ev
}

// dupPhrase describes n suppressed duplicates, inProgress of them sent back for redelivery.
func dupPhrase(n, inProgress int) string {
	what := "duplicate delivery suppressed"
	if n > 1 {
		what = fmt.Sprintf("the last of %d duplicate deliveries suppressed", n)
	}
	switch {
	case inProgress == n && n == 1:
		return what + " (sent back: the work was in progress)"
	case inProgress > 0:
		return what + fmt.Sprintf(" (%d sent back: the work was in progress)", inProgress)
	}
	return what + " (acked: the work was done)"
}

func countRows(dls []DeadLetterSummary) int {
	n := 0
	for _, d := range dls {
		if d.Kind == model.DeadRecord {
			n++
		}
	}
	return n
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// ts formats a time for reports.
func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}
