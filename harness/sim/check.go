package sim

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/target"
)

// Dataset is what one sync setting's source holds: the checker's ground truth.
type Dataset struct {
	Setting model.SyncSetting // as created (its Watermark is the first window's start)
	Rows    []fixture.Row     // valid rows served for Setting.SourceObject
	Poison  int               // rows the generator made bad (each must be dead-lettered)
	// Purged are IDs hard-deleted from the source (then reconciled): their records must be
	// tombstones, whatever their last version says.
	Purged map[string]bool
	// Remapped is a field and value the source changed on every row without a new stamp (a
	// fixed mapping, fixture.Server.Remap) before a resync of Setting: every record not purged
	// must then hold it, which only a resync that rewrote what it had to can do.
	Remapped *Remap
}

// Remap is one field set to one value on every row of the source.
type Remap struct {
	Field string
	Value any
}

// Expect is what the checkers compare the final state with.
type Expect struct {
	Datasets []Dataset
	// MaxSearches returns how many source searches a Job may have run beyond one per slice: the
	// crashes injected during its expansions, and so on. Nil means none.
	MaxSearches func(jobID string) int
	// Searches returns how many source searches a Job really ran, as the harness observed them at
	// the source. Nil means the Job's searches counter.
	Searches func(jobID string) int
	// PoisonMessages is the number of messages the generator made poisonous (each must be
	// dead-lettered, and nothing else may be).
	PoisonMessages int
	// PoisonGivenUp of those reached Pub/Sub's dead-letter topic instead (their recording kept
	// failing until the last attempt): a Firestore dead letter is not required of them.
	PoisonGivenUp int
	// PoisonSettings is the number of sync settings the generator made unschedulable.
	PoisonSettings int
	// Abandoned excuses an idempotency key left IN_PROGRESS: one whose message was given up by
	// the infrastructure (dead-lettered after its last attempt) while its owner's lease ran, so
	// no delivery is left to finish or complete it. Nil excuses none. Excused keys are counted in
	// Report.Abandoned.
	Abandoned func(k idem.Doc) bool
}

// Report is what the checkers found. Violations is empty when every property holds.
type Report struct {
	Jobs, Completed, Chunks, Rows, Engagements int
	Slices                                     int
	Duplicates, Lost, Stale, Extra             int
	DeleteErrors                               int // deleted in the source but live in the target, or the reverse
	LateLost                                   int // of Lost, rows the source made visible only after their stamp
	PlanErrors, CounterErrors, SearchOveruse   int
	OpenLeases, DeadLetters, DeadRows          int
	Abandoned                                  int // open keys excused by Expect.Abandoned
	Outlived                                   int // publishes and writes made after their delivery returned
	NotRewritten                               int // records a resync had to rewrite (Dataset.Remapped) and did not
	Violations                                 []string
}

func (r *Report) violate(format string, args ...any) {
	if len(r.Violations) < 50 {
		r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
	}
}

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "jobs=%d completed=%d chunks=%d rows=%d engagements=%d | duplicates=%d lost=%d (late %d) stale=%d extra=%d delete-errors=%d | plan-errors=%d counter-errors=%d search-overuse=%d open-leases=%d | dead-letters=%d (rows %d)",
		r.Jobs, r.Completed, r.Chunks, r.Rows, r.Engagements, r.Duplicates, r.Lost, r.LateLost, r.Stale, r.Extra, r.DeleteErrors,
		r.PlanErrors, r.CounterErrors, r.SearchOveruse, r.OpenLeases, r.DeadLetters, r.DeadRows)
	for _, v := range r.Violations {
		b.WriteString("\n  violation: " + v)
	}
	return b.String()
}

// Check runs every checker after quiescence.
func (e *Env) Check(ctx context.Context, x Expect) (Report, error) {
	var r Report
	jobs, err := e.Jobs(ctx)
	if err != nil {
		return r, err
	}
	r.Jobs = len(jobs)
	bySetting := map[string][]model.Job{}
	for _, j := range jobs {
		bySetting[j.SettingID] = append(bySetting[j.SettingID], j)
		if err := e.checkJob(ctx, j, x, &r); err != nil {
			return r, err
		}
	}
	for _, ds := range x.Datasets {
		if err := e.checkRecords(ctx, ds, bySetting[ds.Setting.ID], &r); err != nil {
			return r, err
		}
	}
	if err := e.checkKeys(ctx, x, &r); err != nil {
		return r, err
	}
	if err := e.checkDeadLetters(ctx, x, &r); err != nil {
		return r, err
	}
	for _, late := range e.Afterlife.List() {
		r.Outlived++
		r.violate("%s: work outlived its delivery, which Cloud Functions does not run", late)
	}
	return r, nil
}

func (e *Env) checkJob(ctx context.Context, j model.Job, x Expect, r *Report) error {
	if j.Status == model.JobCompleted {
		r.Completed++
	} else {
		r.violate("job %s is %s, not COMPLETED", j.ID, j.Status)
	}
	max := j.SliceCount // one search per slice
	if x.MaxSearches != nil {
		max += x.MaxSearches(j.ID)
	}
	searches := j.Searches
	if x.Searches != nil {
		searches = x.Searches(j.ID)
	}
	if searches > max {
		r.SearchOveruse++
		r.violate("job %s ran %d source searches, at most %d allowed", j.ID, searches, max)
	}
	docs, err := e.FS.Collection(model.Jobs).Doc(j.ID).Collection(model.Chunks).Documents(ctx).GetAll()
	if err != nil {
		return fmt.Errorf("sim: chunks of %s: %w", j.ID, err)
	}
	r.Chunks += len(docs)
	r.Rows += j.RecordCount
	if len(docs) != j.ChunkCount {
		r.PlanErrors++
		r.violate("job %s: %d chunk documents, chunkCount %d", j.ID, len(docs), j.ChunkCount)
	}
	slices, err := e.slices(ctx, j, r)
	if err != nil {
		return err
	}
	rows, imported, unchanged := 0, 0, 0
	plan := make([]model.Chunk, 0, len(docs))
	for _, d := range docs {
		var c model.Chunk
		if err := d.DataTo(&c); err != nil {
			return err
		}
		plan = append(plan, c)
		if d.Ref.ID != model.ChunkID(c.Index) {
			r.PlanErrors++
			r.violate("job %s: chunk document %s holds index %d", j.ID, d.Ref.ID, c.Index)
		}
		if c.Count != len(c.Records) {
			r.PlanErrors++
			r.violate("job %s chunk %d: %d records, count %d", j.ID, c.Index, len(c.Records), c.Count)
		}
		if c.Status != model.ChunkDone {
			r.violate("job %s chunk %d is %s", j.ID, c.Index, c.Status)
		}
		rows += c.Count
		imported += c.Imported
		unchanged += c.Unchanged
	}
	sort.Slice(plan, func(a, b int) bool { return plan[a].Index < plan[b].Index })
	// Each slice's chunks are numbered from its first index on, without a gap.
	if want := model.PlanIndexes(j, slices); j.Status == model.JobCompleted && !equalIndexes(plan, want) {
		r.PlanErrors++
		r.violate("job %s: chunk indexes %v, the slices plan %v", j.ID, indexesOf(plan), want)
	}
	for _, v := range (model.ChunkRule{Size: j.ChunkSize, MaxBytes: e.Config.MaxChunkBytes}).CheckPlan(plan) {
		r.PlanErrors++
		r.violate("job %s: %s", j.ID, v)
	}
	if j.Status == model.JobCompleted && (rows != j.RecordCount || imported != j.Imported || unchanged != j.Unchanged || imported+unchanged != rows) {
		r.CounterErrors++
		r.violate("job %s counters: rows %d/%d, imported %d/%d, unchanged %d/%d", j.ID, rows, j.RecordCount, imported, j.Imported, unchanged, j.Unchanged)
	}
	return nil
}

// slices checks a Job's slices: they cover its window exactly, in order, without overlap, and
// each is PLANNED once the Job is.
func (e *Env) slices(ctx context.Context, j model.Job, r *Report) ([]model.Slice, error) {
	docs, err := e.FS.Collection(model.Jobs).Doc(j.ID).Collection(model.Slices).OrderBy("index", firestore.Asc).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("sim: slices of %s: %w", j.ID, err)
	}
	out := make([]model.Slice, 0, len(docs))
	for _, d := range docs {
		var sl model.Slice
		if err := d.DataTo(&sl); err != nil {
			return nil, err
		}
		out = append(out, sl)
	}
	r.Slices += len(out)
	bad := func(format string, args ...any) {
		r.PlanErrors++
		r.violate("job %s: "+format, append([]any{j.ID}, args...)...)
	}
	if len(out) != j.SliceCount || len(out) == 0 {
		bad("%d slice documents, sliceCount %d", len(out), j.SliceCount)
		return out, nil
	}
	for i, sl := range out {
		from := j.WindowFrom
		if i > 0 {
			from = out[i-1].To
		}
		switch {
		case sl.Index != i:
			bad("slice %d at position %d", sl.Index, i)
		case !sl.From.Equal(from) || sl.To.Before(sl.From):
			bad("slice %d is [%v, %v), it must start at %v, where the one before it ends", i, sl.From, sl.To, from)
		case j.Status == model.JobCompleted && sl.Status != model.SlicePlanned:
			bad("slice %d is %s in a COMPLETED Job", i, sl.Status)
		}
	}
	if last := out[len(out)-1]; !last.To.Equal(j.WindowTo) {
		bad("the last slice ends at %v, the window at %v", last.To, j.WindowTo)
	}
	return out, nil
}

func equalIndexes(plan []model.Chunk, want []int) bool {
	if len(plan) != len(want) {
		return false
	}
	for i, c := range plan {
		if c.Index != want[i] {
			return false
		}
	}
	return true
}

func indexesOf(plan []model.Chunk) []int {
	out := make([]int, len(plan))
	for i, c := range plan {
		out[i] = c.Index
	}
	return out
}

type found struct {
	count   int
	version time.Time
	deleted bool     // the newest version's tombstone flag
	docs    []string // the documents that hold it
	fields  map[string]any
}

// newest is a record's newest row in the checked windows.
type newest struct {
	version time.Time
	deleted bool
	late    bool // visible only after its stamp (fixture.Row.VisibleAt)
}

// checkRecords compares the target records of one setting with the rows inside its Jobs' windows:
// one record per external ID, at the newest version, deleted exactly when that version is a
// deletion.
func (e *Env) checkRecords(ctx context.Context, ds Dataset, jobs []model.Job, r *Report) error {
	st := ds.Setting
	end := st.Watermark
	for _, j := range jobs {
		if j.Status == model.JobCompleted && j.WindowTo.After(end) {
			end = j.WindowTo
		}
	}
	want := map[string]newest{}
	for _, row := range ds.Rows {
		if row.Modstamp.Before(st.Watermark) || !row.Modstamp.Before(end) {
			continue
		}
		if v, ok := want[row.ID]; !ok || row.Modstamp.After(v.version) {
			want[row.ID] = newest{version: row.Modstamp, deleted: row.Deleted || ds.Purged[row.ID], late: !row.VisibleAt.IsZero()}
		}
	}
	kind, _ := model.Kind(st.Target)
	coll := kind.Records
	docs, err := e.FS.Collection(coll).Where("tenantId", "==", st.TenantID).Where("sourceObject", "==", st.SourceObject).Documents(ctx).GetAll()
	if err != nil {
		return fmt.Errorf("sim: engagements of %s: %w", st.ID, err)
	}
	got := map[string]*found{}
	for _, d := range docs {
		var eng model.Engagement
		if err := d.DataTo(&eng); err != nil {
			return err
		}
		f := got[eng.ExternalID]
		if f == nil {
			f = &found{}
			got[eng.ExternalID] = f
		}
		f.count++
		f.docs = append(f.docs, d.Ref.ID)
		if eng.Version.After(f.version) || f.count == 1 {
			f.version, f.deleted, f.fields = eng.Version, eng.Deleted, eng.Fields
		}
	}
	r.Engagements += len(docs)
	ids := make([]string, 0, len(got))
	for id := range got {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	// Each record must be where its kind keeps it (target.Target.Kept), not stored under a foreign ID.
	t, err := target.For(e.FS, st.Target)
	if err != nil {
		return fmt.Errorf("sim: setting %s: %w", st.ID, err)
	}
	kept, _, err := t.Kept(ctx, st.TenantID, st.SourceObject, ids)
	if err != nil {
		return fmt.Errorf("sim: records kept for %s: %w", st.ID, err)
	}
	for _, id := range ids {
		if k := kept[id]; k == nil || !slices.Contains(got[id].docs, k.ID) {
			r.violate("setting %s: external ID %s is stored in %v, not where its %s target keeps it (%v)", st.ID, id, got[id].docs, st.Target, k)
		}
	}
	for _, id := range ids {
		f := got[id]
		if f.count > 1 {
			r.Duplicates += f.count - 1
			r.violate("setting %s (%s target): external ID %s imported %d times", st.ID, st.Target, id, f.count)
		}
		v, ok := want[id]
		switch {
		case !ok:
			r.Extra++
			r.violate("setting %s: external ID %s imported but not in any window", st.ID, id)
		case !f.version.Equal(v.version):
			r.Stale++
			r.violate("setting %s: external ID %s has version %v, newest in window is %v", st.ID, id, f.version, v.version)
		case v.deleted && !f.deleted:
			r.DeleteErrors++
			r.violate("setting %s: external ID %s was deleted in the source at %v, its target record is live", st.ID, id, v.version)
		case !v.deleted && f.deleted:
			r.DeleteErrors++
			r.violate("setting %s: external ID %s is live in the source at %v, its target record is a tombstone", st.ID, id, v.version)
		}
		if m := ds.Remapped; m != nil && ok && !ds.Purged[id] && fmt.Sprint(f.fields[m.Field]) != fmt.Sprint(m.Value) {
			r.NotRewritten++
			r.violate("setting %s: external ID %s has %s=%v, the source says %v since before its resync: the resync did not rewrite it",
				st.ID, id, m.Field, f.fields[m.Field], m.Value)
		}
	}
	for id, v := range want {
		if _, ok := got[id]; !ok {
			r.Lost++
			if v.late {
				r.LateLost++
				r.violate("setting %s: external ID %s in the window, visible only after its stamp (a late commit), was never imported", st.ID, id)
			} else {
				r.violate("setting %s: external ID %s in the window was never imported", st.ID, id)
			}
		}
	}
	return nil
}

func (e *Env) checkKeys(ctx context.Context, x Expect, r *Report) error {
	docs, err := e.FS.Collection(model.Keys).Where("state", "==", idem.InProgress).Documents(ctx).GetAll()
	if err != nil {
		return fmt.Errorf("sim: open keys: %w", err)
	}
	for _, d := range docs {
		var k idem.Doc
		if err := d.DataTo(&k); err != nil {
			return err
		}
		if x.Abandoned != nil && x.Abandoned(k) {
			r.Abandoned++
			continue
		}
		r.OpenLeases++
		r.violate("idempotency key %s still IN_PROGRESS (owner %s, attempts %d)", k.Key, k.Owner, k.Attempts)
	}
	return nil
}

func (e *Env) checkDeadLetters(ctx context.Context, x Expect, r *Report) error {
	docs, err := e.FS.Collection(model.DeadLetters).Documents(ctx).GetAll()
	if err != nil {
		return fmt.Errorf("sim: dead letters: %w", err)
	}
	poisonRows := 0
	for _, ds := range x.Datasets {
		poisonRows += ds.Poison
	}
	msgs, settings := 0, 0
	for _, d := range docs {
		var dl model.DeadLetter
		if err := d.DataTo(&dl); err != nil {
			return err
		}
		switch dl.Kind {
		case model.DeadRecord:
			r.DeadRows++
		case model.DeadMessage:
			msgs++
		case model.DeadSetting:
			settings++
		default:
			r.violate("unexpected dead letter %s: %s %s", d.Ref.ID, dl.Reason, dl.Error)
		}
	}
	r.DeadLetters = len(docs)
	if r.DeadRows != poisonRows {
		r.violate("%d bad source rows dead-lettered, generator made %d", r.DeadRows, poisonRows)
	}
	if settings != x.PoisonSettings {
		r.violate("%d sync settings dead-lettered, generator made %d unschedulable", settings, x.PoisonSettings)
	}
	if msgs > x.PoisonMessages || msgs < x.PoisonMessages-x.PoisonGivenUp {
		r.violate("%d messages dead-lettered, generator made %d poisonous (%d of them given up by Pub/Sub)", msgs, x.PoisonMessages, x.PoisonGivenUp)
	}
	return nil
}
