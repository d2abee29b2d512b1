package expander_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/store"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// world is every fake the expander talks to, recording what it was asked in one ordered log.
type world struct {
	mu        sync.Mutex
	log       []string
	job       model.Job
	jobErr    error
	tenant    model.Tenant
	tenantErr error
	chunks    []model.Chunk // written so far
	slices    []model.Slice // cut so far
	settings  int           // the tenant's enabled settings
	pending   []int         // PendingChunks' answer
	searches  int
	failed    string
	finished  bool
	writeErr  func(index int) error // injected WriteChunk failure
	rows      []source.Record
	invalid   []source.Invalid
	pageSize  int
	searchErr error
	published map[string][]bus.Message
	pubErr    error
	dead      []model.DeadLetter
	streamed  map[int]chan struct{} // closed when chunk i's message is published; nil: not checked
	// usage is the source's API usage each page reports (the used count goes up by one a
	// request, as on Salesforce); nil: unknown.
	usage    *source.Usage
	usageErr error // Usage's answer instead of usage
	pauses   []string
	query    source.Query // the last search's query
}

func (w *world) note(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.log = append(w.log, fmt.Sprintf(format, args...))
}

func (w *world) Job(context.Context, string) (model.Job, error) { return w.job, w.jobErr }
func (w *world) Tenant(context.Context, string) (model.Tenant, error) {
	return w.tenant, w.tenantErr
}
func (w *world) LastChunk(_ context.Context, _ string, slice int) (*model.Chunk, error) {
	var last *model.Chunk
	for _, c := range w.chunks {
		if model.SliceOf(c.Index) == slice {
			last = &c
		}
	}
	return last, nil
}
func (w *world) EnabledSettingsOf(context.Context, string) (int, error) { return w.settings, nil }
func (w *world) Slices(context.Context, string) ([]model.Slice, error) {
	return slices.Clone(w.slices), nil
}
func (w *world) CutSlices(_ context.Context, _ *idem.Lease, job model.Job, cut []model.Slice, slots int) (model.Job, error) {
	w.note("cut %d slices", len(cut))
	w.slices = slices.Clone(cut)
	w.job.SliceCount, w.job.SearchSlots = len(cut), slots
	job.SliceCount, job.SearchSlots = len(cut), slots
	return job, nil
}
func (w *world) DecideSlots(_ context.Context, _ *idem.Lease, job model.Job, slots int) (model.Job, error) {
	w.note("decide %d slots", slots)
	w.job.SearchSlots, job.SearchSlots = slots, slots
	return job, nil
}
func (w *world) FinishSlice(_ context.Context, _ *idem.Lease, _ string, sl model.Slice, chunks, rows int) error {
	w.note("slice %d: %d chunks %d rows", sl.Index, chunks, rows)
	w.slices[sl.Index].Status, w.slices[sl.Index].Chunks, w.slices[sl.Index].Rows = model.SlicePlanned, chunks, rows
	return nil
}
func (w *world) PendingChunks(context.Context, string) ([]int, error) { return w.pending, nil }
func (w *world) CountSearch(context.Context, string, string) error {
	w.searches++
	return nil
}
func (w *world) PlanTotals(_ context.Context, _ string, slice int) (int, int, error) {
	n, rows := 0, 0
	for _, c := range w.chunks {
		if model.SliceOf(c.Index) == slice {
			n, rows = n+1, rows+c.Count
		}
	}
	return n, rows, nil
}
func (w *world) FailJob(_ context.Context, _, reason string) error { w.failed = reason; return nil }
func (w *world) PauseJob(_ context.Context, _, reason string) error {
	w.note("pause")
	w.pauses = append(w.pauses, reason)
	return nil
}
func (w *world) DisconnectTenant(_ context.Context, tenant, reason string) error {
	w.note("disconnect %s", tenant)
	w.tenant.Connection = &model.ConnectionState{State: model.Disconnected, Reason: reason}
	return nil
}
func (w *world) CompleteIfDone(context.Context, string) (bool, error) {
	w.note("complete-if-done")
	return false, nil
}
func (w *world) WriteChunks(_ context.Context, _ *idem.Lease, chunks []model.Chunk) error {
	first := chunks[0].Index
	w.mu.Lock()
	prev, check := w.streamed[first-1]
	w.mu.Unlock()
	if check {
		// Streaming: the previous chunk's message goes out while the plan goes on.
		select {
		case <-prev:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("chunk %d's message was not published while chunk %d was written", first-1, first)
		}
	}
	for _, c := range chunks {
		if w.writeErr != nil {
			if err := w.writeErr(c.Index); err != nil {
				return err
			}
		}
	}
	for _, c := range chunks {
		w.note("write %d", c.Index)
		w.chunks = append(w.chunks, c)
	}
	return nil
}

func (w *world) FinishPlan(context.Context, string) (model.Job, bool, error) {
	if w.job.Status != model.JobPending {
		return w.job, false, nil
	}
	chunks, rows := 0, 0
	for _, sl := range w.slices {
		if sl.Status != model.SlicePlanned {
			return w.job, false, nil
		}
		chunks, rows = chunks+sl.Chunks, rows+sl.Rows
	}
	w.note("finish %d chunks %d rows %d invalid", chunks, rows, len(w.dead))
	w.finished = true
	w.job.Status, w.job.ChunkCount = model.JobPlanned, chunks
	return w.job, true, nil
}

func (w *world) Search(ctx context.Context, q source.Query, fn func(context.Context, source.Page) error) error {
	w.note("search after %v", q.After != nil)
	w.query = q
	var rows []source.Record
	for _, r := range w.rows {
		if !r.Modstamp.Before(q.From) && r.Modstamp.Before(q.To) {
			rows = append(rows, r)
		}
	}
	if q.After != nil {
		i := slices.IndexFunc(rows, func(r source.Record) bool { return r.Key().Compare(*q.After) > 0 })
		if i < 0 {
			rows = nil
		} else {
			rows = rows[i:]
		}
	}
	size := max(w.pageSize, 1)
	for n := 0; len(rows) > 0 || n == 0; n++ {
		p := source.Page{Number: n + 1, Records: rows[:min(size, len(rows))]}
		if w.usage != nil {
			w.usage.Used++
			p.Usage = *w.usage
		}
		if n == 0 {
			p.Invalid = w.invalid
		}
		rows = rows[len(p.Records):]
		if err := fn(ctx, p); err != nil {
			return err
		}
	}
	return w.searchErr
}

func (w *world) Publish(_ context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	if w.pubErr != nil {
		return nil, w.pubErr
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range msgs {
		var cm model.ChunkMessage
		if topic == "chunks" && json.Unmarshal(m.Data, &cm) == nil {
			if ch, ok := w.streamed[cm.Chunk]; ok {
				close(ch)
				delete(w.streamed, cm.Chunk)
			}
		}
		w.published[topic] = append(w.published[topic], m)
		w.log = append(w.log, "publish "+topic+" "+string(m.Data))
	}
	return make([]string, len(msgs)), nil
}

func (w *world) DeadLetter(_ context.Context, d model.DeadLetter) error {
	w.dead = append(w.dead, d)
	return nil
}

// runner is a Runner that runs the work under a fixed lease and hands back its error as is,
// so a test sees how the work asks the key to be settled.
type runner struct{ lease idem.Lease }

func (r runner) Run(ctx context.Context, k idem.Key, owner string, _ map[string]string, work idem.Work) error {
	l := r.lease
	l.Key, l.Owner = k, owner
	return work(ctx, &l)
}

func newWorld(rows int) *world {
	w := &world{
		job: model.Job{ID: "s1-job", TenantID: "acme", SourceObject: "Contact", Target: model.TargetUpsert, ChunkSize: 2,
			WindowFrom: t0, WindowTo: t0.Add(time.Hour), Status: model.JobPending},
		tenant:    model.Tenant{ID: "acme", Enabled: true},
		pageSize:  3,
		published: map[string][]bus.Message{},
	}
	for i := range rows {
		w.rows = append(w.rows, source.Record{ID: fmt.Sprintf("r%02d", i), Modstamp: t0.Add(time.Duration(i) * time.Minute), Fields: map[string]any{"n": i}})
	}
	return w
}

type option func(*expander.Config)

func handler(t *testing.T, w *world, lease idem.Lease, opts ...option) *expander.Handler {
	t.Helper()
	cfg := expander.Config{Jobs: w, Plans: w, Guard: runner{lease: lease}, Sources: expander.One{Source: w}, Publisher: w, DeadLetters: w,
		TopicExpand: "expand", TopicChunks: "chunks", MaxChunkBytes: 100_000, Now: func() time.Time { return t0 }}
	for _, o := range opts {
		o(&cfg)
	}
	h, err := expander.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func expandMsg(jobID, tenant string) delivery.Message {
	b, _ := json.Marshal(model.ExpandMessage{JobID: jobID, TenantID: tenant})
	return delivery.Message{ID: "m1", Data: b}
}

func chunkIndexes(t *testing.T, msgs []bus.Message) []int {
	t.Helper()
	var out []int
	for _, m := range msgs {
		var cm model.ChunkMessage
		if err := json.Unmarshal(m.Data, &cm); err != nil {
			t.Fatal(err)
		}
		out = append(out, cm.Chunk)
	}
	slices.Sort(out)
	return out
}

func TestPlanStreamsEachChunkAfterItsWrite(t *testing.T) {
	w := newWorld(5)
	w.streamed = map[int]chan struct{}{0: make(chan struct{}), 1: make(chan struct{})}
	if err := handler(t, w, idem.Lease{Attempt: 1}).Handle(t.Context(), expandMsg("s1-job", "acme")); err != nil {
		t.Fatal(err)
	}
	if got := chunkIndexes(t, w.published["chunks"]); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("chunk messages %v, want 0 1 2", got)
	}
	for i := range 3 {
		write := slices.Index(w.log, fmt.Sprintf("write %d", i))
		pub := slices.IndexFunc(w.log, func(s string) bool { return strings.Contains(s, fmt.Sprintf(`"chunk":%d}`, i)) })
		if write < 0 || pub < write {
			t.Errorf("chunk %d: written at %d, published at %d of %q: a message must follow its chunk's write", i, write, pub, w.log)
		}
	}
	if !slices.Contains(w.log, "finish 3 chunks 5 rows 0 invalid") || w.log[len(w.log)-1] != "complete-if-done" {
		t.Errorf("log %q: want the plan finished with 3 chunks, 5 rows, then the completion check", w.log)
	}
	if w.chunks[1].LastID != "r03" || w.chunks[2].Count != 1 || w.searches != 1 {
		t.Errorf("chunks %+v, searches %d", w.chunks, w.searches)
	}
}

func TestPoisonReasons(t *testing.T) {
	for _, tc := range []struct {
		reason string
		set    func(w *world)
		msg    delivery.Message
	}{
		{"malformed_message", nil, delivery.Message{ID: "m", Data: []byte("{not json")}},
		{"missing_field", nil, expandMsg("", "acme")},
		{"unknown_job", func(w *world) { w.jobErr = fmt.Errorf("x: %w", store.ErrNotFound) }, expandMsg("s1-job", "acme")},
		{"tenant_mismatch", nil, expandMsg("s1-job", "globex")},
		{"unknown_tenant", func(w *world) { w.tenantErr = fmt.Errorf("x: %w", store.ErrNotFound) }, expandMsg("s1-job", "acme")},
		{"tenant_disabled", func(w *world) { w.tenant.Enabled = false }, expandMsg("s1-job", "acme")},
		{"source_rejected_search", func(w *world) { w.searchErr = fmt.Errorf("field gone: %w", source.ErrPermanent) }, expandMsg("s1-job", "acme")},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			w := newWorld(3)
			if tc.set != nil {
				tc.set(w)
			}
			err := handler(t, w, idem.Lease{Attempt: 1}).Handle(t.Context(), tc.msg)
			var pe *delivery.PoisonError
			if !errors.As(err, &pe) || pe.Reason != tc.reason {
				t.Fatalf("Handle() = %v, want poison %q", err, tc.reason)
			}
			if tc.reason == "source_rejected_search" && w.failed == "" {
				t.Error("a refused search must fail the Job")
			}
			if tc.reason != "source_rejected_search" && len(w.chunks) > 0 {
				t.Errorf("poison %s wrote chunks %v", tc.reason, w.chunks)
			}
		})
	}
}

func TestChunksAreCutByBytesAndOversizedRowsDeadLettered(t *testing.T) {
	w := newWorld(0)
	w.job.ChunkSize = 100
	big := strings.Repeat("x", 400)
	for i, f := range []string{"a", "b", big, "c", "d"} {
		w.rows = append(w.rows, source.Record{ID: fmt.Sprintf("r%d", i), Modstamp: t0.Add(time.Duration(i) * time.Second), Fields: map[string]any{"v": f}})
	}
	w.invalid = []source.Invalid{{Raw: json.RawMessage(`{"Id":null}`), Reason: "no Id"}}
	// Each small row encodes to about 80 bytes: two fit in 200, a third does not; the big row
	// fits in no chunk at all.
	err := handler(t, w, idem.Lease{Attempt: 1}, func(c *expander.Config) { c.MaxChunkBytes = 200 }).Handle(t.Context(), expandMsg("s1-job", "acme"))
	if err != nil {
		t.Fatal(err)
	}
	var counts []int
	for _, c := range w.chunks {
		counts = append(counts, c.Count)
	}
	if !slices.Equal(counts, []int{2, 2}) {
		t.Errorf("chunk sizes %v, want [2 2]: cut by bytes, not by the chunk size of 100", counts)
	}
	// The plan passes the rule the audit and the chaos checker hold it to, bytes included.
	rule := model.ChunkRule{Size: 100, MaxBytes: 200}
	if len(w.chunks) != 2 || w.chunks[0].CutBy != model.CutBytes || w.chunks[1].CutBy != model.CutEnd {
		t.Errorf("chunks cut by %q and %q, want %q then %q", w.chunks[0].CutBy, w.chunks[1].CutBy, model.CutBytes, model.CutEnd)
	}
	if v := rule.CheckPlan(w.chunks); len(v) != 0 {
		t.Errorf("the plan breaks the chunk rule: %v", v)
	}
	var reasons []string
	for _, d := range w.dead {
		reasons = append(reasons, d.Reason)
	}
	slices.Sort(reasons)
	if !slices.Equal(reasons, []string{"invalid_source_row", "record_too_large"}) {
		t.Errorf("dead letters %v, want one invalid row and one record too large", reasons)
	}
	if !slices.Contains(w.log, "finish 2 chunks 4 rows 2 invalid") {
		t.Errorf("log %q", w.log)
	}
}

func TestLeaseLostMidPlanStopsTheZombie(t *testing.T) {
	w := newWorld(6)
	w.writeErr = func(i int) error {
		if i == 1 {
			return fmt.Errorf("store: write chunk: %w", idem.ErrLeaseLost)
		}
		return nil
	}
	err := handler(t, w, idem.Lease{Attempt: 1}).Handle(t.Context(), expandMsg("s1-job", "acme"))
	if !errors.Is(err, idem.ErrLeaseLost) || w.finished || len(w.chunks) != 1 {
		t.Errorf("Handle() = %v, finished %v, chunks %d; want ErrLeaseLost after 1 chunk and no finished plan", err, w.finished, len(w.chunks))
	}
}

func TestTransientFailuresAreRetried(t *testing.T) {
	for name, set := range map[string]func(w *world){
		"source":  func(w *world) { w.searchErr = errors.New("source: HTTP 503") },
		"publish": func(w *world) { w.pubErr = errors.New("pubsub unavailable") },
		"store":   func(w *world) { w.jobErr = errors.New("firestore unavailable") },
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(4)
			set(w)
			err := handler(t, w, idem.Lease{Attempt: 1}).Handle(t.Context(), expandMsg("s1-job", "acme"))
			if err == nil || errors.Is(err, delivery.ErrPoison) || errors.Is(err, delivery.ErrDuplicate) {
				t.Errorf("Handle() = %v, want a transient error (redeliver)", err)
			}
		})
	}
}

func TestFinishedJobsAreDuplicates(t *testing.T) {
	for _, st := range []model.JobStatus{model.JobCompleted, model.JobFailed} {
		w := newWorld(4)
		w.job.Status = st
		err := handler(t, w, idem.Lease{Attempt: 1}).Handle(t.Context(), expandMsg("s1-job", "acme"))
		if !errors.Is(err, delivery.ErrDuplicate) || w.searches != 0 || len(w.published) != 0 {
			t.Errorf("%s: Handle() = %v, searches %d, published %v; want a duplicate that does nothing", st, err, w.searches, w.published)
		}
	}
}

func TestTakeoverRepublishesWhatTheCrashedOwnerMayNotHave(t *testing.T) {
	w := newWorld(5)
	w.chunks = []model.Chunk{{Index: 0, Count: 2, LastID: "r01", LastModstamp: t0.Add(time.Minute)}}
	w.pending = []int{0}
	if err := handler(t, w, idem.Lease{Attempt: 2, TakenOver: true}).Handle(t.Context(), expandMsg("s1-job", "acme")); err != nil {
		t.Fatal(err)
	}
	if got := chunkIndexes(t, w.published["chunks"]); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("chunk messages %v, want 0 (re-published) then 1 2 (resumed)", got)
	}
	if !slices.Contains(w.log, "search after true") || w.searches != 1 {
		t.Errorf("log %q, searches %d: want a resumed search, counted", w.log, w.searches)
	}
}

func TestBudgetHandsOffToAContinuation(t *testing.T) {
	w := newWorld(7)
	elapsed := t0
	clock := func() time.Time { elapsed = elapsed.Add(time.Second); return elapsed }
	budget := func(c *expander.Config) { c.Budget, c.Elapsed = time.Second, clock }
	err := handler(t, w, idem.Lease{Attempt: 1}, budget).Handle(t.Context(), expandMsg("s1-job", "acme"))
	var hand *idem.HandOff
	if !errors.As(err, &hand) {
		t.Fatalf("Handle() = %v, want a hand-off once the budget is spent", err)
	}
	if len(w.chunks) != 1 || w.finished || len(w.published["chunks"]) != 1 {
		t.Fatalf("chunks %d, finished %v, chunk messages %d; want 1 chunk written and published before the hand-off", len(w.chunks), w.finished, len(w.published["chunks"]))
	}
	if err := hand.Next(t.Context()); err != nil {
		t.Fatal(err)
	}
	cont := w.published["expand"]
	if len(cont) != 1 || string(cont[0].Data) != string(expandMsg("s1-job", "acme").Data) {
		t.Fatalf("continuations %+v, want one copy of the expand message", cont)
	}
	// The continuation resumes after the checkpoint (its query counted), without re-publishing
	// what its predecessor published.
	for range 10 {
		err = handler(t, w, idem.Lease{Attempt: 2, TakenOver: true, Continued: true}, budget).Handle(t.Context(), expandMsg("s1-job", "acme"))
		if !errors.As(err, &hand) {
			break
		}
	}
	if err != nil || !w.finished {
		t.Fatalf("continuations ended with %v, finished %v", err, w.finished)
	}
	if got := chunkIndexes(t, w.published["chunks"]); !slices.Equal(got, []int{0, 1, 2, 3}) || w.searches != 4 {
		t.Errorf("chunk messages %v, searches %d; want 0..3 once each and 4 queries (1 + 3 continuations)", got, w.searches)
	}
}

// budgetWorld is a world whose source also tells its API usage without spending any
// (source.Budgeter).
type budgetWorld struct{ *world }

func (w budgetWorld) Usage(context.Context) (source.Usage, error) {
	if w.usageErr != nil {
		return source.Usage{}, w.usageErr
	}
	return *w.usage, nil
}

// A source that refuses for good to tell its budget (a malformed /limits answer) ends the delivery
// with the reason, a FAILED Job and a dead letter, before the window is counted and before a
// slice is searched; a connection whose user lacks the permission /limits needs (Salesforce
// answers 403 INSUFFICIENT_ACCESS without "View Setup and Configuration") disconnects the tenant
// with that reason and pauses the Job, with no dead letter. Neither is sent back to loop.
func TestARefusedBudgetReadEndsWithItsReasonInsteadOfLooping(t *testing.T) {
	malformed := fmt.Errorf("salesforce: limits: response is not a limits result: %w", source.ErrPermanent)
	permission := fmt.Errorf("salesforce: limits: lacks the permission \"View Setup and Configuration\": %w", source.ErrDisconnected)
	for name, tc := range map[string]struct {
		setup func(w *world)
		err   error
	}{
		"malformed, first expansion":  {func(*world) {}, malformed},
		"malformed, a later slice":    {laterSlice, malformed},
		"permission, first expansion": {func(*world) {}, permission},
		"permission, a later slice":   {laterSlice, permission},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(5)
			w.job.APIReserve = 10
			w.usageErr = tc.err
			tc.setup(w)
			msg := expandMsg("s1-job", "acme")
			if w.slices != nil {
				msg = sliceMsg(1)
			}
			err := handler(t, w, idem.Lease{Attempt: 1}, func(c *expander.Config) { c.Sources = expander.One{Source: budgetWorld{w}} }).Handle(t.Context(), msg)
			if w.searches != 0 || len(w.chunks) != 0 {
				t.Errorf("searches %d, chunks %d; want none", w.searches, len(w.chunks))
			}
			var pe *delivery.PoisonError
			var hand *idem.HandOff
			switch tc.err {
			case malformed:
				if !errors.As(err, &pe) || pe.Reason != "source_rejected_limits" || !strings.Contains(w.failed, "not a limits result") {
					t.Fatalf("Handle() = %v, job failure %q; want poison source_rejected_limits and the Job FAILED with the reason", err, w.failed)
				}
			case permission:
				if !errors.As(err, &hand) || hand.Next != nil || w.failed != "" || len(w.dead) != 0 {
					t.Fatalf("Handle() = %v, failed %q, dead letters %d; want a hand-off with no continuation, nothing failed", err, w.failed, len(w.dead))
				}
				if !w.tenant.IsDisconnected() || !strings.Contains(w.tenant.Connection.Reason, "View Setup and Configuration") ||
					len(w.pauses) != 1 || !strings.Contains(w.pauses[0], "disconnected") {
					t.Errorf("tenant %+v, pauses %q; want the tenant disconnected naming the permission, the Job paused", w.tenant.Connection, w.pauses)
				}
			}
		})
	}
	// A transient failure of the same read is sent back (retried), with nothing failed.
	w := newWorld(5)
	w.job.APIReserve = 10
	w.usageErr = errors.New("salesforce: limits: 503")
	err := handler(t, w, idem.Lease{Attempt: 1}, func(c *expander.Config) { c.Sources = expander.One{Source: budgetWorld{w}} }).Handle(t.Context(), expandMsg("s1-job", "acme"))
	if err == nil || delivery.IsPermanent(err) || w.failed != "" || w.tenant.IsDisconnected() {
		t.Errorf("transient budget failure: Handle() = %v, failed %q; want a transient error, the Job and tenant untouched", err, w.failed)
	}
}

// laterSlice makes the world's Job cut in two slices, the first planned.
func laterSlice(w *world) {
	w.job.SliceCount, w.job.SearchSlots = 2, 1
	w.slices = []model.Slice{
		{Index: 0, From: t0, To: t0.Add(30 * time.Minute), Status: model.SlicePlanned, Chunks: 1},
		{Index: 1, From: t0.Add(30 * time.Minute), To: t0.Add(time.Hour), Status: model.SlicePending},
	}
}

// A tenant read disconnected pauses the search of a slice still to search without calling the
// source, and once connected again, the next delivery resumes and completes.
func TestADisconnectedTenantPausesAndResumesOnReconnect(t *testing.T) {
	w := newWorld(5)
	w.tenant.Connection = &model.ConnectionState{State: model.Disconnected, Reason: "token refused: invalid_grant: expired access/refresh token"}
	err := handler(t, w, idem.Lease{Attempt: 1}).Handle(t.Context(), expandMsg("s1-job", "acme"))
	var hand *idem.HandOff
	if !errors.As(err, &hand) || hand.Next != nil || w.searches != 0 || len(w.pauses) != 1 || w.failed != "" {
		t.Fatalf("Handle() = %v, searches %d, pauses %q, failed %q; want a pause without touching the source", err, w.searches, w.pauses, w.failed)
	}
	w.tenant.Connection = &model.ConnectionState{State: model.Connected}
	if err := handler(t, w, idem.Lease{Attempt: 2, TakenOver: true, Continued: true}).Handle(t.Context(), expandMsg("s1-job", "acme")); err != nil || !w.finished {
		t.Fatalf("after reconnecting: Handle() = %v, finished %v", err, w.finished)
	}
	// A search the source refuses as disconnected mid-way pauses too, after the chunks it wrote.
	w2 := newWorld(7)
	w2.searchErr = fmt.Errorf("salesforce: INVALID_SESSION_ID right after a fresh token: %w", source.ErrDisconnected)
	err = handler(t, w2, idem.Lease{Attempt: 1}).Handle(t.Context(), expandMsg("s1-job", "acme"))
	if !errors.As(err, &hand) || !w2.tenant.IsDisconnected() || w2.failed != "" || len(w2.dead) != 0 {
		t.Errorf("disconnected mid-search: Handle() = %v, tenant %+v, failed %q; want a pause and the tenant disconnected", err, w2.tenant.Connection, w2.failed)
	}
}

func TestBudgetPauseWaitsForTheSweepAndResumesWithoutLoss(t *testing.T) {
	w := newWorld(7) // chunks of 2, pages of 3
	w.job.APIReserve = 10
	w.usage = &source.Usage{Used: 88, Limit: 100} // the 2nd page leaves 10: the reserve
	src := func(c *expander.Config) { c.Sources = expander.One{Source: budgetWorld{w}} }
	err := handler(t, w, idem.Lease{Attempt: 1}, src).Handle(t.Context(), expandMsg("s1-job", "acme"))
	var hand *idem.HandOff
	if !errors.As(err, &hand) || hand.Next != nil {
		t.Fatalf("Handle() = %v, want a hand-off with no continuation (the sweep resumes)", err)
	}
	if len(w.pauses) != 1 || !strings.Contains(w.pauses[0], "90 of 100 daily requests used, 10 left, reserve 10") {
		t.Fatalf("pauses %q, want one with the usage", w.pauses)
	}
	// The 2 pages' 6 rows make 2 whole chunks; the third, still being cut, is searched again.
	if got := chunkIndexes(t, w.published["chunks"]); !slices.Equal(got, []int{0, 1}) || w.finished || w.failed != "" || len(w.dead) != 0 {
		t.Fatalf("chunk messages %v, finished %v, failed %q, dead letters %d; want chunks 0 and 1, nothing else", got, w.finished, w.failed, len(w.dead))
	}
	// A sweep's delivery while the budget is still down pauses before it searches.
	searches := w.searches
	err = handler(t, w, idem.Lease{Attempt: 2, TakenOver: true, Continued: true}, src).Handle(t.Context(), expandMsg("s1-job", "acme"))
	if !errors.As(err, &hand) || w.searches != searches || len(w.pauses) != 2 {
		t.Fatalf("Handle() = %v, searches %d (was %d), pauses %d; want a pause without a search", err, w.searches, searches, len(w.pauses))
	}
	// A new day: the next delivery resumes after the last written chunk.
	w.usage.Used = 0
	if err := handler(t, w, idem.Lease{Attempt: 3, TakenOver: true, Continued: true}, src).Handle(t.Context(), expandMsg("s1-job", "acme")); err != nil {
		t.Fatal(err)
	}
	if got := chunkIndexes(t, w.published["chunks"]); !slices.Equal(got, []int{0, 1, 2, 3}) || !w.finished || w.query.After == nil {
		t.Errorf("chunk messages %v, finished %v, resumed %v; want 0..3 once each, resumed after chunk 1", got, w.finished, w.query.After != nil)
	}
	// Without a reserve the budget is never read.
	w2 := newWorld(7)
	w2.usage = &source.Usage{Used: 100, Limit: 100}
	if err := handler(t, w2, idem.Lease{Attempt: 1}, func(c *expander.Config) { c.Sources = expander.One{Source: budgetWorld{w2}} }).Handle(t.Context(), expandMsg("s1-job", "acme")); err != nil || !w2.finished {
		t.Errorf("without a reserve: Handle() = %v, finished %v", err, w2.finished)
	}
}

// A takeover of a slice already planned (its owner crashed after the plan) has nothing to search:
// with the budget down it still finishes and completes its key, instead of handing it off with no
// continuation (the sweep re-publishes only slices still to search, so nobody would come back).
func TestATakeoverOfAPlannedSliceDoesNotPause(t *testing.T) {
	w := newWorld(7)
	w.job.APIReserve = 10
	w.job.SliceCount, w.job.SearchSlots = 2, 1
	w.slices = []model.Slice{
		{Index: 0, From: t0, To: t0.Add(30 * time.Minute), Status: model.SlicePlanned, Chunks: 1},
		{Index: 1, From: t0.Add(30 * time.Minute), To: t0.Add(time.Hour), Status: model.SlicePending},
	}
	w.usage = &source.Usage{Used: 100, Limit: 100}
	err := handler(t, w, idem.Lease{Attempt: 2, TakenOver: true}, func(c *expander.Config) { c.Sources = expander.One{Source: budgetWorld{w}} }).
		Handle(t.Context(), sliceMsg(0))
	if err != nil || len(w.pauses) != 0 || w.searches != 0 {
		t.Fatalf("Handle() = %v, pauses %q, searches %d; want the key completed (nil), no pause, no search", err, w.pauses, w.searches)
	}
	// Slice 1, still to search, does pause.
	err = handler(t, w, idem.Lease{Attempt: 1}, func(c *expander.Config) { c.Sources = expander.One{Source: budgetWorld{w}} }).Handle(t.Context(), sliceMsg(1))
	var hand *idem.HandOff
	if !errors.As(err, &hand) || len(w.pauses) != 1 {
		t.Fatalf("slice 1: Handle() = %v, pauses %d; want a pause", err, len(w.pauses))
	}
}

func TestDeletedRowsArePlannedAsDeletes(t *testing.T) {
	w := newWorld(3)
	w.rows[1].Deleted = true
	if err := handler(t, w, idem.Lease{Attempt: 1}).Handle(t.Context(), expandMsg("s1-job", "acme")); err != nil {
		t.Fatal(err)
	}
	if !w.query.Deleted {
		t.Errorf("query %+v does not ask for deleted records", w.query)
	}
	var deleted []string
	for _, c := range w.chunks {
		for _, r := range c.Records {
			if r.Deleted {
				deleted = append(deleted, r.ID)
			}
		}
	}
	if !slices.Equal(deleted, []string{"r01"}) {
		t.Errorf("deleted rows in the plan %v, want [r01]", deleted)
	}
}

// countingWorld is a world whose source also counts (source.Counter), so Jobs are sliced.
type countingWorld struct{ *world }

func (w countingWorld) Count(_ context.Context, q source.Query) (source.Extent, error) {
	w.note("count")
	var e source.Extent
	for _, r := range w.rows {
		if !r.Modstamp.Before(q.From) && r.Modstamp.Before(q.To) {
			if e.Count == 0 {
				e.First = r.Modstamp
			}
			e.Count, e.Last = e.Count+1, r.Modstamp
		}
	}
	return e, nil
}

func sliceMsg(s int) delivery.Message {
	b, _ := json.Marshal(model.ExpandMessage{JobID: "s1-job", TenantID: "acme", Slice: s})
	return delivery.Message{ID: fmt.Sprintf("m-slice-%d", s), Data: b}
}

func expandSlices(t *testing.T, msgs []bus.Message) []int {
	t.Helper()
	var out []int
	for _, m := range msgs {
		var em model.ExpandMessage
		if err := json.Unmarshal(m.Data, &em); err != nil {
			t.Fatal(err)
		}
		out = append(out, em.Slice)
	}
	return out
}

func TestWindowIsCutIntoSlicesSearchedAtMostSlotsAtOnce(t *testing.T) {
	w := newWorld(40) // a row a minute
	sliced := func(c *expander.Config) {
		c.Sources, c.SliceRows, c.MaxSlices, c.SearchSlots = expander.One{Source: countingWorld{w}}, 10, 8, 2
	}
	h := handler(t, w, idem.Lease{Attempt: 1}, sliced)
	if err := h.Handle(t.Context(), sliceMsg(0)); err != nil {
		t.Fatal(err)
	}
	if len(w.slices) != 4 {
		t.Fatalf("slices %+v, want 4 of about 10 rows (40 rows, 10 a slice, a multiple of 2 slots)", w.slices)
	}
	for i, sl := range w.slices {
		if sl.Index != i || sl.Estimate != 10 || (i == 0 && !sl.From.Equal(w.job.WindowFrom)) || (i > 0 && !sl.From.Equal(w.slices[i-1].To)) || (i == 3 && !sl.To.Equal(w.job.WindowTo)) {
			t.Errorf("slice %d = %+v: slices must cover the window in order, 10 rows each", i, sl)
		}
	}
	// Slice 0's delivery starts slice 1 beside itself and, once done, slice 2 (0 + 2 slots).
	if got := expandSlices(t, w.published["expand"]); !slices.Equal(got, []int{1, 2}) || w.finished {
		t.Fatalf("expand messages for slices %v, finished %v; want 1 then 2, and the plan not finished", got, w.finished)
	}
	// A takeover of slice 0 reads the slices back: the same plan, cut once.
	if err := handler(t, w, idem.Lease{Attempt: 2, TakenOver: true}, sliced).Handle(t.Context(), sliceMsg(0)); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.Join(w.log, "\n"), "cut 4 slices"); n != 1 || len(w.slices) != 4 {
		t.Fatalf("the window was cut %d times: %q", n, w.log)
	}
	for s := 1; s < 4; s++ {
		if err := h.Handle(t.Context(), sliceMsg(s)); err != nil {
			t.Fatal(err)
		}
		if w.finished != (s == 3) {
			t.Fatalf("after slice %d: finished %v; the plan is complete only with every slice", s, w.finished)
		}
	}
	// The takeover publishes again what the crashed owner may not have: slice 1, and slice 2 as
	// slice 0 is planned.
	if got := expandSlices(t, w.published["expand"]); !slices.Equal(got, []int{1, 2, 1, 2, 3}) {
		t.Errorf("expand messages for slices %v, want 1 2 (first delivery), 1 2 (the takeover), 3 (slice 1 done)", got)
	}
	if !slices.Contains(w.log, "finish 20 chunks 40 rows 0 invalid") {
		t.Errorf("log %q: want the plan finished with 20 chunks and 40 rows", w.log)
	}
	seen := map[string]int{}
	for _, c := range w.chunks {
		s, n := model.SliceOf(c.Index), c.Index%model.SliceStride
		if n > 4 {
			t.Errorf("chunk %d: slice %d has chunks 0..4", c.Index, s)
		}
		for _, r := range c.Records {
			seen[r.ID]++
			if sl := w.slices[s]; r.Modstamp.Before(sl.From) || !r.Modstamp.Before(sl.To) {
				t.Errorf("row %s (%v) in chunk %d lies outside slice %d [%v, %v)", r.ID, r.Modstamp, c.Index, s, sl.From, sl.To)
			}
		}
	}
	for _, r := range w.rows {
		if seen[r.ID] != 1 {
			t.Errorf("row %s planned %d times", r.ID, seen[r.ID])
		}
	}
	if w.searches != 4 {
		t.Errorf("%d searches counted, want 4: one a slice (the takeover found slice 0 planned)", w.searches)
	}
}

func TestATenantsSettingsShareItsConcurrentSearches(t *testing.T) {
	for _, tc := range []struct{ tenantLimit, settings, want int }{{0, 1, 4}, {0, 2, 2}, {6, 3, 2}, {6, 4, 1}, {1, 5, 1}} {
		w := newWorld(40)
		w.tenant.SearchConcurrency, w.settings = tc.tenantLimit, tc.settings
		h := handler(t, w, idem.Lease{Attempt: 1}, func(c *expander.Config) {
			c.Sources, c.SliceRows, c.MaxSlices, c.SearchSlots = expander.One{Source: countingWorld{w}}, 10, 8, 4
		})
		if err := h.Handle(t.Context(), sliceMsg(0)); err != nil {
			t.Fatal(err)
		}
		if w.job.SearchSlots != tc.want || len(w.published["expand"]) != min(tc.want, len(w.slices))-1+boolInt(tc.want < len(w.slices)) {
			t.Errorf("tenant limit %d (0: the deployment's 4), %d settings: %d slots, expand messages %v; want %d slots",
				tc.tenantLimit, tc.settings, w.job.SearchSlots, expandSlices(t, w.published["expand"]), tc.want)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestAFastSourceIsSearchedOneSliceAfterAnother(t *testing.T) {
	w := newWorld(40)
	clock := t0
	h := handler(t, w, idem.Lease{Attempt: 1}, func(c *expander.Config) {
		c.Sources, c.SliceRows, c.MaxSlices, c.SearchSlots = expander.One{Source: countingWorld{w}}, 10, 8, 2
		c.ParallelAfter, c.Elapsed = time.Second, func() time.Time { clock = clock.Add(100 * time.Millisecond); return clock }
	})
	if err := h.Handle(t.Context(), sliceMsg(0)); err != nil {
		t.Fatal(err)
	}
	// The first page came after 100 ms, under the 1 s after which slices go parallel: slots 1, and
	// slice 0's end starts slice 1 only.
	if got := expandSlices(t, w.published["expand"]); len(w.slices) != 4 || w.job.SearchSlots != 1 || !slices.Equal(got, []int{1}) {
		t.Fatalf("%d slices, %d slots, expand messages %v; want 4 slices searched one after another (slice 1 next)", len(w.slices), w.job.SearchSlots, got)
	}
	for s := 1; s < 4; s++ {
		if err := h.Handle(t.Context(), sliceMsg(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := expandSlices(t, w.published["expand"]); !slices.Equal(got, []int{1, 2, 3}) || !w.finished {
		t.Errorf("expand messages %v, finished %v; want the chain 1 2 3 and the plan finished", got, w.finished)
	}
}
