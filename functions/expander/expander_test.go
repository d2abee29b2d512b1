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
func (w *world) LastChunk(context.Context, string) (*model.Chunk, error) {
	if len(w.chunks) == 0 {
		return nil, nil
	}
	c := w.chunks[len(w.chunks)-1]
	return &c, nil
}
func (w *world) PendingChunks(context.Context, string) ([]int, error) { return w.pending, nil }
func (w *world) CountSearch(context.Context, string, string) error {
	w.searches++
	return nil
}
func (w *world) CountDeadRows(context.Context, string) (int, error) { return len(w.dead), nil }
func (w *world) PlanTotals(context.Context, string) (int, int, error) {
	rows := 0
	for _, c := range w.chunks {
		rows += c.Count
	}
	return len(w.chunks), rows, nil
}
func (w *world) FailJob(_ context.Context, _, reason string) error { w.failed = reason; return nil }
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

func (w *world) FinishPlan(_ context.Context, _ *idem.Lease, job model.Job, chunks, rows, invalid int) (model.Job, error) {
	w.note("finish %d chunks %d rows %d invalid", chunks, rows, invalid)
	w.finished = true
	job.Status, job.ChunkCount = model.JobPlanned, chunks
	return job, nil
}

func (w *world) Search(ctx context.Context, q source.Query, fn func(context.Context, source.Page) error) error {
	w.note("search after %v", q.After != nil)
	rows := w.rows
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
	cfg := expander.Config{Store: w, Guard: runner{lease: lease}, Source: w, Publisher: w, DeadLetters: w,
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
