package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"pgregory.net/rapid"

	"github.com/google/uuid"
	"github.com/oncesync/oncesync/functions/app"
	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/functions/importer"
	"github.com/oncesync/oncesync/functions/scheduler"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/settings"
	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/target"
)

// The mutations: the pipeline with a guard removed. Each must make a property fail.
var (
	// MutantClaim is "every claim succeeds": a claim that finds the key DONE or IN_PROGRESS
	// proceeds anyway with a lease of its own, fenced commits are not fenced, and completing
	// such a lease marks the key DONE.
	MutantClaim = Mutation{Name: "every claim succeeds", Keys: func(h *Harness, k app.Keys) app.Keys { return claimAlways{Keys: k, h: h} }}
	// MutantSplit is "chunk commit not atomic": the chunk's status is read outside any
	// transaction, its records are written in one batch commit (which cannot read, so without
	// the generated-ID index lookup and the version check), and DONE in a second commit. It
	// exposes the step between the two commits.
	MutantSplit = Mutation{
		Name:      "chunk commit not atomic",
		Committer: func(h *Harness, _ importer.Committer) importer.Committer { return splitCommitter{h: h} },
		Steps:     pipelineSteps.with(config.Importer, StepRecordsCommitted, StepRecordsCommitted),
	}
	// MutantDoneApart is "chunk DONE committed apart": the records are written as the real
	// Committer writes them (one preconditioned batch, through the target, with the generated-ID
	// index and the version check), but the chunk's status is read before and outside that
	// transaction and DONE is committed after it, separately.
	MutantDoneApart = Mutation{
		Name: "chunk DONE committed apart from its records",
		Committer: func(h *Harness, c importer.Committer) importer.Committer {
			return doneApartCommitter{h: h, real: c.(*target.Committer)}
		},
		Steps: pipelineSteps.with(config.Importer, StepRecordsCommitted, StepRecordsCommitted),
	}
	// MutantNoRepublish is "a takeover re-publishes nothing" (streaming publication): an expansion
	// that takes over a crashed one's key does not publish the chunks its predecessor wrote, so a
	// chunk written just before the crash has no message.
	MutantNoRepublish = Mutation{
		Name:          "a takeover re-publishes no written chunk",
		ExpanderStore: func(_ *Harness, s expander.Store) expander.Store { return noPending{s} },
	}
	// MutantNoContinuation is "a hand-off publishes no continuation": the expansion releases its
	// key at the time budget, and the rest of the window waits for nobody.
	MutantNoContinuation = Mutation{
		Name:      "a hand-off publishes no continuation",
		Publisher: func(_ *Harness, p app.Publisher) app.Publisher { return dropContinuations{p} },
	}
	// MutantNoImporterCompletion is "the last import does not complete the Job" (the completion
	// rule's other half): only an expansion that finishes after every chunk is DONE completes it.
	MutantNoImporterCompletion = Mutation{
		Name:          "the last chunk's import does not complete the Job",
		ImporterStore: func(_ *Harness, s importer.Store) importer.Store { return noCompletion{s} },
	}
	// MutantLiveTakeover is "a duplicate takes over a live lease" (the incident's own symptom: the
	// source searched twice): an expansion's claim that finds the key IN_PROGRESS under a lease
	// that has not run out takes it over anyway, as if it had expired. Fencing still holds (the
	// first owner's writes are refused), so only the search allowance, computed from the
	// schedule, can tell.
	MutantLiveTakeover = Mutation{Name: "a duplicate takes over a live lease", Keys: func(h *Harness, k app.Keys) app.Keys { return takeLive{Keys: k, h: h} }}
	// MutantNoFence is "fenced writes not fenced" (the model's NOFENCE): a plan write commits
	// whether or not its lease is still held, so an expansion that outlived its lease (a zombie)
	// writes chunks after the new owner took over.
	MutantNoFence = Mutation{Name: "fenced writes not fenced", Keys: func(h *Harness, k app.Keys) app.Keys { return noFence{Keys: k, h: h} }}
	// MutantCompleteEarly is "the key completed before the work" (the model's COMPLETE_EARLY): a
	// claim marks its key DONE at once, so the holder's fenced writes fail, and its redelivery, or
	// a duplicate arriving while the work runs, acks as done what was not (the incident's planned
	// "started" flag, without a lease).
	MutantCompleteEarly = Mutation{Name: "the key completed before the work", Keys: func(h *Harness, k app.Keys) app.Keys { return completeEarly{Keys: k, h: h} }}
	// MutantResyncPerSend is "a resync's Job is keyed by its sending": every time a resync request
	// is sent, it names itself anew (as a request ID taken from the clock would), so an operator's
	// retry imports the window a second time.
	MutantResyncPerSend = Mutation{
		Name: "a resync request sent again makes another Job",
		Resync: func(r settings.Resync, send int) settings.Resync {
			if send > 0 {
				r.Label = fmt.Sprintf("sent %d", send+1)
			}
			return r
		},
	}
	// MutantDeleteImportedLive is "a delete is imported as an update": the importer writes a
	// deleted row as a live version, so the record deleted in the source lives on in the target.
	MutantDeleteImportedLive = Mutation{
		Name: "a deleted row is imported as a live version",
		Committer: func(_ *Harness, c importer.Committer) importer.Committer {
			real := c.(*target.Committer)
			mut := *real
			mut.Targets = map[string]target.Target{}
			for k, t := range real.Targets {
				mut.Targets[k] = undeleting{t}
			}
			return &mut
		},
	}
	// MutantNoWindowLag is "a Job's window ends at its tick": with no lag, a record whose
	// transaction commits after the tick but is stamped before it falls in a window that was
	// searched before it was visible, and no later window holds it.
	MutantNoWindowLag = Mutation{Name: "a Job's window ends at its tick (no lag)", Config: func(c *config.Config) { c.WindowLag = 0 }}
	// MutantBudgetIgnored is "the expander does not read the API budget": searches run on past the
	// reserve, spending the requests the customer's other integrations need.
	MutantBudgetIgnored = Mutation{Name: "the API budget is not read", Source: func(s expander.Source) expander.Source { return blindSource{s} }}
	// MutantPauseFails is "a budget pause fails the Job": the pause is treated as a permanent
	// failure, so the message is dead-lettered and the Job waits for an operator.
	MutantPauseFails = Mutation{
		Name:          "a budget pause is a permanent failure",
		ExpanderStore: func(_ *Harness, s expander.Store) expander.Store { return pauseFails{s} },
	}
	// MutantReconcileFirstPage is "reconcile reads one page of the source": the IDs on later pages
	// look missing, so live records are tombstoned.
	MutantReconcileFirstPage = Mutation{Name: "reconcile reads only the source's first page", Reconcile: func(s source.Source) source.Source { return firstPage{s} }}
	// MutantSecondJob is "a redelivered tick creates its Job again" (the incident's first
	// suspect): when the tick's Job exists already, another one is created for the same window.
	MutantSecondJob = Mutation{
		Name:           "a redelivered tick creates a second Job",
		SchedulerStore: func(h *Harness, s scheduler.Store) scheduler.Store { return secondJob{Store: s, h: h} },
	}
	// MutantSlicesOverlap is "slices overlap" (the slices' half of stable plans): each slice but
	// the last ends halfway into the next, so the rows there are planned, and searched, twice.
	MutantSlicesOverlap = Mutation{
		Name:          "slices of a window overlap",
		ExpanderStore: func(_ *Harness, s expander.Store) expander.Store { return overlapping{s} },
	}
	// MutantBrokenChain is "a finished slice starts no other": the expand messages of slices past
	// the first SearchSlots vanish (the chain's, and the sweep's), so a Job with more slices than
	// it searches at once never finishes its plan.
	MutantBrokenChain = Mutation{
		Name:      "a finished slice starts no other",
		Publisher: func(h *Harness, p app.Publisher) app.Publisher { return dropChained{Publisher: p, h: h} },
	}
	// MutantOutlivesDelivery is "chunk messages published in the background": each chunk
	// publish is started and not waited for, so it runs after the delivery has answered — which
	// Cloud Functions does not run (CPU throttled, instance gone). The simulator cancels a
	// delivery when it returns and refuses what comes after; before it did, nothing could tell.
	MutantOutlivesDelivery = Mutation{
		Name:      "chunk messages published after the delivery returned",
		Publisher: func(_ *Harness, p app.Publisher) app.Publisher { return background{p} },
	}
	// MutantResyncNoRewrite is "a resync imports like a tick": a resync Job's rows as new as the
	// stored version are left as they are, so a fixed mapping never reaches the target. Versions
	// and deleted flags are unchanged, so only the resync's own checker can tell.
	MutantResyncNoRewrite = Mutation{
		Name: "a resync does not rewrite rows as new as the stored ones",
		Committer: func(_ *Harness, c importer.Committer) importer.Committer {
			return asTick{c}
		},
	}
	// MutantBoth is both: the pipeline before the fix, as far as wrappers can rebuild it.
	MutantBoth = Mutation{
		Name:      "every claim succeeds + chunk commit not atomic",
		Keys:      MutantClaim.Keys,
		Committer: MutantSplit.Committer,
		Steps:     MutantSplit.Steps,
	}
)

// noFence is MutantNoFence's Keys: CommitFenced commits the staged writes alone, without the
// key's precondition (nor its heartbeat).
type noFence struct {
	app.Keys
	h *Harness
}

func (k noFence) CommitFenced(ctx context.Context, _ *idem.Lease, stage func(b *firestore.WriteBatch)) error {
	b := k.h.Env.FS.Batch()
	stage(b)
	if _, err := b.Commit(ctx); err != nil {
		return fmt.Errorf("mutant: unfenced commit: %w", err)
	}
	return nil
}

// completeEarly is MutantCompleteEarly's Keys: a won claim writes the key DONE behind the lease's
// back (as the model's COMPLETE_EARLY does, after which the holder's fenced writes fail).
type completeEarly struct {
	app.Keys
	h *Harness
}

func (k completeEarly) Claim(ctx context.Context, key idem.Key, owner string, labels map[string]string) (*idem.Lease, error) {
	l, err := k.Keys.Claim(ctx, key, owner, labels)
	if err != nil {
		return l, err
	}
	if _, err := k.h.Env.FS.Collection(model.Keys).Doc(key.DocID()).Update(ctx, []firestore.Update{{Path: "state", Value: idem.Done}}); err != nil {
		return nil, fmt.Errorf("mutant: complete at the claim: %w", err)
	}
	return l, nil
}

// takeLive is MutantLiveTakeover's Keys: an expand key IN_PROGRESS under someone else's live lease
// is rewritten to the claimant, whose Claim then finds it as its own.
type takeLive struct {
	app.Keys
	h *Harness
}

func (k takeLive) Claim(ctx context.Context, key idem.Key, owner string, labels map[string]string) (*idem.Lease, error) {
	l, err := k.Keys.Claim(ctx, key, owner, labels)
	if key.Scope != idem.ExpandKey("").Scope || !errors.Is(err, idem.ErrInProgress) {
		return l, err
	}
	e := k.h.Env
	if _, uerr := e.FS.Collection(model.Keys).Doc(key.DocID()).Update(ctx, []firestore.Update{
		{Path: "owner", Value: owner}, {Path: "leaseUntil", Value: e.Clock.Now().Add(e.Config.Lease)},
		{Path: "attempts", Value: firestore.Increment(1)},
	}); uerr != nil {
		return l, err
	}
	return k.Keys.Claim(ctx, key, owner, labels)
}

// secondJob is MutantSecondJob's scheduler store.
type secondJob struct {
	scheduler.Store
	h *Harness
}

func (s secondJob) CreateJob(ctx context.Context, settingID, tickID string, to time.Time, chunkSize int) (model.Job, bool, error) {
	job, created, err := s.Store.CreateJob(ctx, settingID, tickID, to, chunkSize)
	if err != nil || created || job.Status != model.JobPending {
		return job, created, err
	}
	again := job
	again.ID = job.ID + "-again-" + uuid.NewString()[:8] // unique: two units may repeat one Job at once
	if _, err := s.h.Env.FS.Collection(model.Jobs).Doc(again.ID).Create(ctx, again); err != nil {
		return job, created, err
	}
	return again, true, nil
}

// noPending is MutantNoRepublish's expander store: no chunk is ever pending for a takeover.
type noPending struct{ expander.Store }

func (noPending) PendingChunks(context.Context, string) ([]int, error) { return nil, nil }

// dropContinuations is MutantNoContinuation's publisher: continuation messages vanish.
type dropContinuations struct{ app.Publisher }

func (d dropContinuations) Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	return publishKept(ctx, d.Publisher, topic, msgs, func(m bus.Message) (bool, error) { return m.Attributes["continuation"] == "", nil })
}

// publishKept publishes the messages keep keeps, and answers as if all were published: the
// mutant publishers' way of losing messages.
func publishKept(ctx context.Context, p app.Publisher, topic string, msgs []bus.Message, keep func(bus.Message) (bool, error)) ([]string, error) {
	var kept []bus.Message
	for _, m := range msgs {
		ok, err := keep(m)
		if err != nil {
			return nil, err
		}
		if ok {
			kept = append(kept, m)
		}
	}
	ids := make([]string, len(msgs))
	if len(kept) == 0 {
		return ids, nil
	}
	return p.Publish(ctx, topic, kept...)
}

// asTick is MutantResyncNoRewrite's committer: every Job is imported as a tick's.
type asTick struct{ importer.Committer }

func (a asTick) Commit(ctx context.Context, job model.Job, index int) (target.Result, error) {
	job.Resync = ""
	return a.Committer.Commit(ctx, job, index)
}

// background is MutantOutlivesDelivery's publisher: a chunk message is published once its
// delivery's context ends (the handler has answered), and the call returns at once.
type background struct{ app.Publisher }

func (b background) Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	if sim.Route(topic) != config.Importer && sim.Route(topic) != config.ImporterBulk {
		return b.Publisher.Publish(ctx, topic, msgs...)
	}
	go func() {
		<-sim.Returned(ctx)
		_, _ = b.Publisher.Publish(ctx, topic, msgs...) // what a fire-and-forget publish does: late
	}()
	return make([]string, len(msgs)), nil
}

// overlapping is MutantSlicesOverlap's expander store.
type overlapping struct{ expander.Store }

func (o overlapping) CutSlices(ctx context.Context, l *idem.Lease, job model.Job, slices []model.Slice, slots int) (model.Job, error) {
	for i := range len(slices) - 1 {
		next := slices[i+1]
		slices[i].To = next.From.Add(next.To.Sub(next.From) / 2)
	}
	return o.Store.CutSlices(ctx, l, job, slices, slots)
}

// dropChained is MutantBrokenChain's publisher.
type dropChained struct {
	app.Publisher
	h *Harness
}

func (d dropChained) Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	return publishKept(ctx, d.Publisher, topic, msgs, func(m bus.Message) (bool, error) {
		var em model.ExpandMessage
		if topic != sim.TopicExpand || m.Attributes["continuation"] != "" || json.Unmarshal(m.Data, &em) != nil || em.Slice == 0 {
			return true, nil
		}
		snap, err := d.h.Env.FS.Collection(model.Jobs).Doc(em.JobID).Get(ctx)
		if err != nil {
			return false, fmt.Errorf("mutant: job %s: %w", em.JobID, err)
		}
		slots, _ := snap.DataAt("searchSlots")
		return slots == nil || int64(em.Slice) < slots.(int64), nil
	})
}

// noCompletion is MutantNoImporterCompletion's importer store.
type noCompletion struct{ importer.Store }

func (noCompletion) CompleteIfDone(context.Context, string) (bool, error) { return false, nil }

// StepRecordsCommitted is MutantSplit's step between its two commits.
const StepRecordsCommitted = "mutant.records_committed"

const fakeOwner = "mutant-claim:"

// claimAlways is MutantClaim's Keys.
type claimAlways struct {
	app.Keys
	h *Harness
}

func (k claimAlways) Claim(ctx context.Context, key idem.Key, owner string, labels map[string]string) (*idem.Lease, error) {
	l, err := k.Keys.Claim(ctx, key, owner, labels)
	if errors.Is(err, idem.ErrDone) || errors.Is(err, idem.ErrInProgress) {
		return &idem.Lease{Key: key, Owner: fakeOwner + owner, Attempt: 1}, nil
	}
	return l, err
}

func (k claimAlways) CommitFenced(ctx context.Context, _ *idem.Lease, stage func(b *firestore.WriteBatch)) error {
	b := k.h.Env.FS.Batch()
	stage(b)
	_, err := b.Commit(ctx)
	return err
}

func (k claimAlways) Complete(ctx context.Context, l *idem.Lease) error {
	if strings.HasPrefix(l.Owner, fakeOwner) {
		_, err := k.h.Env.FS.Collection(model.Keys).Doc(l.Key.DocID()).Update(ctx, []firestore.Update{{Path: "state", Value: idem.Done}})
		return err
	}
	return k.Keys.Complete(ctx, l)
}

func (k claimAlways) Release(ctx context.Context, l *idem.Lease) error {
	if strings.HasPrefix(l.Owner, fakeOwner) {
		return nil
	}
	return k.Keys.Release(ctx, l)
}

// splitCommitter is MutantSplit's Committer.
type splitCommitter struct{ h *Harness }

func (c splitCommitter) Commit(ctx context.Context, job model.Job, index int) (target.Result, error) {
	fs, now := c.h.Env.FS, c.h.Env.Clock.Now().UTC()
	ref, ch, err := chunkOutsideTx(ctx, fs, job, index)
	if err != nil || ch.Status == model.ChunkDone {
		return target.Result{AlreadyDone: err == nil}, err
	}
	rows := target.Newest(ch.Records)
	b := fs.Batch()
	for _, r := range rows {
		key := model.EngagementKey(job.TenantID, job.SourceObject, r.ID)
		eng := model.Engagement{TenantID: job.TenantID, SourceObject: job.SourceObject, ExternalID: r.ID, Version: r.Modstamp,
			Fields: r.Fields, JobID: job.ID, Chunk: index, ImportedAt: now}
		kind, ok := model.Kind(job.Target)
		switch {
		case !ok:
			return target.Result{}, target.ErrUnknownTarget
		case kind.Index == "":
			b.Set(fs.Collection(kind.Records).Doc(key), eng)
		default:
			doc := fs.Collection(kind.Records).NewDoc()
			b.Set(doc, eng)
			b.Set(fs.Collection(kind.Index).Doc(key), map[string]any{"docId": doc.ID, "version": r.Modstamp})
		}
	}
	if _, err := b.Commit(ctx); err != nil {
		return target.Result{}, fmt.Errorf("mutant: records of chunk %d: %w", index, err)
	}
	c.h.Env.Comps.Probe.At(ctx, StepRecordsCommitted)
	st := target.Stats{Imported: len(rows), Unchanged: len(ch.Records) - len(rows)}
	if err := doneApart(ctx, ref, st, now); err != nil {
		return target.Result{}, fmt.Errorf("mutant: DONE of chunk %d: %w", index, err)
	}
	return target.Result{Stats: st, Rows: len(ch.Records)}, nil
}

// doneApartCommitter is MutantDoneApart's Committer.
type doneApartCommitter struct {
	h    *Harness
	real *target.Committer
}

func (c doneApartCommitter) Commit(ctx context.Context, job model.Job, index int) (target.Result, error) {
	fs, now := c.h.Env.FS, c.h.Env.Clock.Now().UTC()
	tg, ok := c.real.Targets[job.Target]
	if !ok {
		return target.Result{}, target.ErrUnknownTarget
	}
	ref, ch, err := chunkOutsideTx(ctx, fs, job, index)
	if err != nil || ch.Status == model.ChunkDone {
		return target.Result{AlreadyDone: err == nil}, err
	}
	rows := target.Newest(ch.Records)
	b := fs.Batch()
	st, err := tg.Stage(ctx, b, target.Batch{Job: job, Chunk: index, Rows: rows, Now: now})
	if err == nil && st.Imported > 0 { // a target stages writes only for the rows it imports
		_, err = b.Commit(ctx)
	}
	if err != nil {
		return target.Result{}, fmt.Errorf("mutant: records of chunk %d: %w", index, err)
	}
	c.h.Env.Comps.Probe.At(ctx, StepRecordsCommitted)
	st.Unchanged += len(ch.Records) - len(rows)
	if err := doneApart(ctx, ref, st, now); err != nil {
		return target.Result{}, fmt.Errorf("mutant: DONE of chunk %d: %w", index, err)
	}
	return target.Result{Stats: st, Rows: len(ch.Records)}, nil
}

// undeleting is MutantDeleteImportedLive's target: it stages every row as live.
type undeleting struct{ target.Target }

func (u undeleting) Stage(ctx context.Context, b *firestore.WriteBatch, w target.Batch) (target.Stats, error) {
	rows := make([]model.ChunkRecord, len(w.Rows))
	for i, r := range w.Rows {
		r.Deleted = false
		rows[i] = r
	}
	w.Rows = rows
	return u.Target.Stage(ctx, b, w)
}

// blindSource is MutantBudgetIgnored's source: no usage on its pages, no budget to ask.
type blindSource struct{ s expander.Source }

func (b blindSource) Search(ctx context.Context, q source.Query, fn func(context.Context, source.Page) error) error {
	return b.s.Search(ctx, q, func(ctx context.Context, p source.Page) error {
		p.Usage = source.Usage{}
		return fn(ctx, p)
	})
}

func (b blindSource) Count(ctx context.Context, q source.Query) (source.Extent, error) {
	return b.s.(source.Counter).Count(ctx, q)
}

// firstPage is MutantReconcileFirstPage's source.
type firstPage struct{ source.Source }

var errFirstPage = errors.New("mutant: first page only")

func (f firstPage) Search(ctx context.Context, q source.Query, fn func(context.Context, source.Page) error) error {
	err := f.Source.Search(ctx, q, func(ctx context.Context, p source.Page) error {
		if err := fn(ctx, p); err != nil {
			return err
		}
		return errFirstPage
	})
	if errors.Is(err, errFirstPage) {
		return nil
	}
	return err
}

// pauseFails is MutantPauseFails's expander store.
type pauseFails struct{ expander.Store }

func (p pauseFails) PauseJob(_ context.Context, jobID, reason string) error {
	return delivery.Poison("budget_exhausted", "mutant: job %s: %s", jobID, reason)
}

func TestMutantClaimAlwaysSucceeds(t *testing.T) { testMutant(t, MutantClaim) }

func TestMutantDeleteImportedLive(t *testing.T) { testMutant(t, MutantDeleteImportedLive) }

func TestMutantNoWindowLag(t *testing.T) { testMutant(t, MutantNoWindowLag) }

func TestMutantBudgetIgnored(t *testing.T) { testMutant(t, MutantBudgetIgnored) }

func TestMutantBudgetPauseFails(t *testing.T) { testMutant(t, MutantPauseFails) }

func TestMutantReconcileFirstPage(t *testing.T) { testMutant(t, MutantReconcileFirstPage) }

func TestMutantChunkDoneCommittedApart(t *testing.T) { testMutant(t, MutantDoneApart) }

func TestMutantChunkCommitNotAtomic(t *testing.T) { testMutant(t, MutantSplit) }

func TestMutantTakeoverRepublishesNothing(t *testing.T) { testMutant(t, MutantNoRepublish) }

func TestMutantHandOffWithoutContinuation(t *testing.T) { testMutant(t, MutantNoContinuation) }

func TestMutantImportDoesNotComplete(t *testing.T) { testMutant(t, MutantNoImporterCompletion) }

func TestMutantLiveLeaseTakenOver(t *testing.T) { testMutant(t, MutantLiveTakeover) }

func TestMutantSecondJobForATick(t *testing.T) { testMutant(t, MutantSecondJob) }

func TestMutantSlicesOverlap(t *testing.T) { testMutant(t, MutantSlicesOverlap) }

func TestMutantBrokenSliceChain(t *testing.T) { testMutant(t, MutantBrokenChain) }

func TestMutantFencedWritesNotFenced(t *testing.T) { testMutant(t, MutantNoFence) }

func TestMutantKeyCompletedBeforeWork(t *testing.T) { testMutant(t, MutantCompleteEarly) }

func TestMutantResyncJobPerSend(t *testing.T) { testMutant(t, MutantResyncPerSend) }

func TestMutantWorkOutlivesDelivery(t *testing.T) { testMutant(t, MutantOutlivesDelivery) }

func TestMutantResyncDoesNotRewrite(t *testing.T) { testMutant(t, MutantResyncNoRewrite) }

func TestMutantPausedSettingGetsAJobPerTick(t *testing.T) { testMutant(t, MutantPausedJobPerTick) }

func TestMutantWindowGapAfterAPause(t *testing.T) { testMutant(t, MutantWindowGap) }

func TestMutantSweepVisitsOnlyTheOldest(t *testing.T) { testMutant(t, MutantSweepOldestOnly) }

func TestMutantUnitScheduledTwice(t *testing.T) { testMutant(t, MutantUnitTwice) }

func TestMutantResumeForgetsTheClass(t *testing.T) { testMutant(t, MutantClassForgotten) }

func TestMutantNoSizeClasses(t *testing.T) { testMutant(t, MutantOneLane) }

// testMutant runs the main property against a mutation, on a recorder instead of t, and asserts
// that rapid found a counterexample made of property violations (not a harness error).
func testMutant(t *testing.T, m Mutation) {
	h := NewHarness(t, m)
	var (
		mu       sync.Mutex
		lastCase *Case
		last     *Result
	)
	rec := newRecorder(t, "Mutant "+m.Name)
	withRapid(t, mutantChecks, true, func() {
		rec.check(h.Property(h.Gen, func(c *Case, r *Result) {
			mu.Lock()
			defer mu.Unlock()
			lastCase, last = c, r
		}))
	})
	line := mutantLine{name: m.Name}
	if !rec.Failed() || last == nil {
		report.mutant(line)
		t.Fatalf("mutation %q survived %d generated cases: the properties cannot tell it from the pipeline\nrapid said: %s",
			m.Name, mutantChecks, rec.text())
	}
	line.found, line.casesToFind = true, rec.casesBeforeFailure()+1
	line.caughtBy = strings.Join(last.CaughtBy(), ", ")
	line.detail = fmt.Sprintf("counterexample (not shrunk):\n%s\nfirst violation: %s", lastCase, last.Violations[0])
	report.mutant(line)
	t.Logf("mutation %q caught after %d case(s) by %s\n%s\nrapid said:\n%s", m.Name, line.casesToFind, line.caughtBy, line.detail, rec.text())
}

// recorder is a rapid.TB that records a property's failure instead of failing the test, so that a
// test can assert that rapid finds one. It is used from one goroutine, like testing.T.
type recorder struct {
	t      *testing.T
	name   string
	failed bool
	log    strings.Builder
}

var _ rapid.TB = (*recorder)(nil)

// errRecorderStop is what FailNow panics with to end rapid.Check, as testing.T.FailNow ends a test.
var errRecorderStop = errors.New("chaos: recorder: stop")

func newRecorder(t *testing.T, name string) *recorder { return &recorder{t: t, name: name} }

// check runs rapid.Check(r, prop) and returns when it has finished or failed.
func (r *recorder) check(prop func(*rapid.T)) {
	defer func() {
		if p := recover(); p != nil && p != errRecorderStop {
			panic(p)
		}
	}()
	rapid.Check(r, prop)
}

func (r *recorder) Helper()                           {}
func (r *recorder) Name() string                      { return r.name }
func (r *recorder) Context() context.Context          { return r.t.Context() }
func (r *recorder) Logf(format string, args ...any)   { fmt.Fprintf(&r.log, format+"\n", args...) }
func (r *recorder) Log(args ...any)                   { fmt.Fprintln(&r.log, args...) }
func (r *recorder) Skipf(format string, args ...any)  { r.Logf(format, args...); r.SkipNow() }
func (r *recorder) Skip(args ...any)                  { r.Log(args...); r.SkipNow() }
func (r *recorder) SkipNow()                          { panic(errRecorderStop) }
func (r *recorder) Errorf(format string, args ...any) { r.Logf(format, args...); r.failed = true }
func (r *recorder) Error(args ...any)                 { r.Log(args...); r.failed = true }
func (r *recorder) Fatalf(format string, args ...any) { r.Errorf(format, args...); r.FailNow() }
func (r *recorder) Fatal(args ...any)                 { r.Error(args...); r.FailNow() }
func (r *recorder) FailNow()                          { r.failed = true; panic(errRecorderStop) }
func (r *recorder) Fail()                             { r.failed = true }
func (r *recorder) Failed() bool                      { return r.failed }
func (r *recorder) text() string                      { return r.log.String() }

var failedAfter = regexp.MustCompile(`\[rapid\] (?:failed|panic) after (\d+) tests`)

// casesBeforeFailure is how many cases passed before the one that failed.
func (r *recorder) casesBeforeFailure() int {
	m := failedAfter.FindStringSubmatch(r.log.String())
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// chunkOutsideTx reads chunk index of job outside any transaction, as both mutant committers do.
func chunkOutsideTx(ctx context.Context, fs *firestore.Client, job model.Job, index int) (*firestore.DocumentRef, model.Chunk, error) {
	ref := fs.Collection(model.Jobs).Doc(job.ID).Collection(model.Chunks).Doc(model.ChunkID(index))
	var ch model.Chunk
	snap, err := ref.Get(ctx)
	if status.Code(err) == codes.NotFound {
		return ref, ch, target.ErrNoChunk
	}
	if err != nil {
		return ref, ch, err
	}
	return ref, ch, snap.DataTo(&ch)
}

// doneApart marks the chunk at ref DONE with st in a commit of its own, after its records.
func doneApart(ctx context.Context, ref *firestore.DocumentRef, st target.Stats, now time.Time) error {
	_, err := ref.Update(ctx, []firestore.Update{
		{Path: "status", Value: model.ChunkDone}, {Path: "doneAt", Value: now},
		{Path: "imported", Value: st.Imported}, {Path: "unchanged", Value: st.Unchanged},
	})
	return err
}
