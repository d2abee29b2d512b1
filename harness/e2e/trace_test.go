package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/audit"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// A tick is one trace: the scheduler's delivery is its root, every expand and chunk delivery a
// child of the span that published its message, and a duplicate delivery a span of its own,
// marked suppressed or sent back and linked to the delivery that holds the key.
func TestOneTracePerTickWithDuplicatesLinked(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	w := newWorld(t, 60, 20, 11, sim.Options{PageSize: 25, Traces: telemetry.FromSDK(tp)})
	tick(t, w.Env, "t1")
	// The incident: the expand message again 2 s later, while its plan is being written; and
	// every chunk message once more after it was imported.
	w.settle(t, sim.Policy{Plan: func(d sim.Delivery) sim.Plan {
		switch {
		case d.Function() == "Expander" && d.Attempt == 1 && d.Copy == 0:
			return sim.Plan{CopyAt: expander.StepChunkWritten, CopyDelay: 2 * time.Second}
		case d.Function() == "Importer" && d.Attempt == 1 && d.Copy == 0:
			return sim.Plan{CopyAfter: true}
		}
		return sim.Plan{}
	}})
	spans := rec.Ended()
	deliveries := map[string][]sdktrace.ReadOnlySpan{}
	byID := map[string]sdktrace.ReadOnlySpan{}
	traces := map[string]bool{}
	names := map[string]int{}
	for _, s := range spans {
		byID[s.SpanContext().SpanID().String()] = s
		names[s.Name()]++
		if fn, ok := attr(s, telemetry.AttrFunction); ok {
			deliveries[fn] = append(deliveries[fn], s)
			traces[s.SpanContext().TraceID().String()] = true
		}
	}
	if len(traces) != 1 {
		t.Fatalf("deliveries span %d traces, want one for the tick: %v", len(traces), traces)
	}
	for _, want := range []string{"Scheduler deliver", "Expander deliver", "Importer deliver", "claim tick", "claim expand", "claim chunk",
		"create job", "source count", "source page", "search", "plan commit", "publish expand", "publish chunks", "import chunk", "completion check"} {
		if names[want] == 0 {
			t.Errorf("no %q span; spans: %v", want, names)
		}
	}
	root := deliveries["Scheduler"][0]
	if root.Parent().IsValid() {
		t.Errorf("the tick's delivery has a parent %v; it roots the trace", root.Parent())
	}
	// Every delivery but the tick's is the child of a publish span, in the same trace.
	for fn, ds := range deliveries {
		for _, d := range ds {
			if fn == "Scheduler" {
				continue
			}
			p, ok := byID[d.Parent().SpanID().String()]
			if !ok || len(p.Name()) < 8 || p.Name()[:8] != "publish " {
				t.Errorf("%s delivery's parent is %v, want a publish span", fn, d.Parent())
			}
		}
	}
	outcomes := map[string]int{}
	for _, d := range deliveries["Expander"] {
		o, _ := attr(d, telemetry.AttrOutcome)
		outcomes[o]++
		if o == "sent_back" {
			links := d.Links()
			if len(links) != 1 {
				t.Fatalf("the duplicate expand delivery has %d links, want one to the holder", len(links))
			}
			holder, ok := byID[links[0].SpanContext.SpanID().String()]
			if !ok || holder.Name() != "Expander deliver" || holder.SpanContext().SpanID() == d.SpanContext().SpanID() {
				t.Errorf("the duplicate links to %v, want the first expand delivery", links[0].SpanContext)
			}
		}
	}
	if outcomes["sent_back"] != 2 || outcomes["ack"] < 2 {
		t.Errorf("expand deliveries by outcome %v, want one sent back per Job (the copy 2 s later) and the acked ones", outcomes)
	}
	suppressed := 0
	for _, d := range deliveries["Importer"] {
		if o, _ := attr(d, telemetry.AttrOutcome); o == "suppressed" {
			suppressed++
			if len(d.Links()) != 1 {
				t.Errorf("a suppressed chunk delivery has %d links, want 1", len(d.Links()))
			}
		}
	}
	jobs, err := w.Jobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if suppressed == 0 || suppressed != len(deliveries["Importer"])/2 {
		t.Errorf("%d of %d chunk deliveries suppressed, want half (each chunk delivered twice)", suppressed, len(deliveries["Importer"]))
	}
	for _, j := range jobs {
		if !traces[j.Trace] {
			t.Errorf("job %s remembers trace %q, not the tick's", j.ID, j.Trace)
		}
	}
	if !slices.ContainsFunc(jobs, func(j model.Job) bool { return j.Status == model.JobCompleted }) {
		t.Error("no Job completed")
	}
	// The audit's timeline names the trace of every line: here all of one tick's.
	for _, j := range jobs {
		rep, err := audit.New(w.FS).Job(t.Context(), j.ID)
		if err != nil {
			t.Fatal(err)
		}
		dupLines := 0
		for _, e := range rep.Timeline {
			if e.Trace != j.Trace {
				t.Errorf("audit of %s: %q has trace %q, want the tick's %s", j.ID, e.What, e.Trace, j.Trace)
			}
			if strings.Contains(e.What, "duplicate") {
				dupLines++
			}
		}
		if dupLines < 2 {
			t.Errorf("audit of %s: %d timeline lines about duplicates, want the expand and the chunk ones", j.ID, dupLines)
		}
	}
}

// attr returns span s's attribute k.
func attr(s sdktrace.ReadOnlySpan, k attribute.Key) (string, bool) {
	for _, a := range s.Attributes() {
		if a.Key == k {
			return a.Value.Emit(), true
		}
	}
	return "", false
}
