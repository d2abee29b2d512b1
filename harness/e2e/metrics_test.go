package e2e

import (
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Every metric the functions emit is there after a tick with a duplicate taken over past the
// lease (a takeover and a fenced zombie), chunk copies suppressed and a poison tick, with the
// values the documents say.
func TestMetricsCountWhatHappened(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	m, err := telemetry.NewMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, 60, 20, 13, sim.Options{PageSize: 25, Metrics: m, APILimit: 15000})
	ctx := t.Context()
	tick(t, w.Env, "t1")
	if err := w.Publish(ctx, sim.TopicTicks, []byte("not json"), nil); err != nil {
		t.Fatal(err)
	}
	w.expect.PoisonMessages = 1
	w.expect.MaxSearches = func(string) int { return 1 } // the copy past the lease takes over and searches again
	w.settle(t, sim.Policy{Plan: func(d sim.Delivery) sim.Plan {
		switch {
		case d.Function() == "Expander" && d.Attempt == 1 && d.Copy == 0:
			return sim.Plan{CopyAt: expander.StepChunkWritten, CopyDelay: w.Config.Lease + time.Second}
		case d.Function() == "Importer" && d.Attempt == 1 && d.Copy == 0:
			return sim.Plan{CopyAfter: true}
		}
		return sim.Plan{}
	}})
	// A disconnected tenant: the next tick makes no Job for its two settings, and counts them
	// (oncesync.tenants.disconnected); once it is connected again, the next tick's Jobs cover the
	// gap.
	setState := func(state string) {
		t.Helper()
		if _, err := w.FS.Collection(model.Tenants).Doc("acme").Update(ctx, []firestore.Update{
			{Path: "connection", Value: model.ConnectionState{State: state, Reason: "test: consent revoked", ChangedAt: w.Clock.Now()}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	setState(model.Disconnected)
	w.Clock.Advance(time.Hour)
	tick(t, w.Env, "t2")
	if _, err := w.Drain(ctx, sim.Policy{}, 100); err != nil {
		t.Fatal(err)
	}
	setState(model.Connected)
	w.expect.MaxSearches = func(string) int { return 1 }
	w.settle(t, sim.Policy{})

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			got[mt.Name] = mt.Data
		}
	}
	for _, d := range telemetry.MetricDocs {
		if _, ok := got[d.Name]; !ok {
			t.Errorf("metric %s was not emitted", d.Name)
		}
	}
	jobs, err := w.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	imported, unchanged, completed := 0, 0, 0
	for _, j := range jobs {
		imported, unchanged = imported+j.Imported, unchanged+j.Unchanged
		if j.Status == model.JobCompleted {
			completed++
		}
	}
	sum := func(name string, match ...attribute.KeyValue) int64 {
		var n int64
		if s, ok := got[name].(metricdata.Sum[int64]); ok {
			for _, p := range s.DataPoints {
				if hasAll(p.Attributes, match) {
					n += p.Value
				}
			}
		}
		return n
	}
	for _, c := range []struct {
		name string
		got  int64
		want func(int64) bool
		says string
	}{
		{telemetry.MetricRecordsImported, sum(telemetry.MetricRecordsImported), func(n int64) bool { return n == int64(imported) }, "the Jobs' imported"},
		{telemetry.MetricRecordsUnchanged, sum(telemetry.MetricRecordsUnchanged), func(n int64) bool { return n == int64(unchanged) }, "the Jobs' unchanged"},
		{telemetry.MetricChunksInFlight, sum(telemetry.MetricChunksInFlight), func(n int64) bool { return n == 0 }, "0 once every chunk is imported"},
		{"suppressed chunk copies", sum(telemetry.MetricConsumed, telemetry.AttrFunction.String("Importer"), telemetry.AttrOutcome.String("suppressed")),
			func(n int64) bool { return n > 0 }, "> 0"},
		{"dead-lettered poison tick", sum(telemetry.MetricDeadLetters, telemetry.AttrFunction.String("Scheduler"), attribute.String("oncesync.reason", "malformed_message")),
			func(n int64) bool { return n == 1 }, "1"},
		{telemetry.MetricLeasesTakenOver, sum(telemetry.MetricLeasesTakenOver, attribute.String("oncesync.scope", "expand")), func(n int64) bool { return n >= 1 }, ">= 1 (the copy past the lease)"},
		{telemetry.MetricFencingRejections, sum(telemetry.MetricFencingRejections, attribute.String("oncesync.scope", "expand")), func(n int64) bool { return n >= 1 }, ">= 1 (the zombie's next write)"},
		{telemetry.MetricSourceRequests, sum(telemetry.MetricSourceRequests, attribute.Int("http.response.status_code", 200)), func(n int64) bool { return n >= 3 }, ">= 3 (a count and pages)"},
		{telemetry.MetricDisconnected, sum(telemetry.MetricDisconnected), func(n int64) bool { return n >= 2 }, ">= 2 (t2's two settings left waiting)"},
	} {
		if !c.want(c.got) {
			t.Errorf("%s = %d, want %s", c.name, c.got, c.says)
		}
	}
	if h, ok := got[telemetry.MetricJobLag].(metricdata.Histogram[float64]); !ok || len(h.DataPoints) != 1 || h.DataPoints[0].Count != uint64(completed) {
		t.Errorf("%s: %+v, want one point per completed Job (%d)", telemetry.MetricJobLag, got[telemetry.MetricJobLag], completed)
	}
	if g, ok := got[telemetry.MetricAPIBudgetLeft].(metricdata.Gauge[int64]); !ok || len(g.DataPoints) != 1 || g.DataPoints[0].Value <= 0 || g.DataPoints[0].Value >= 15000 {
		t.Errorf("%s: %+v, want what the last answer left of 15000", telemetry.MetricAPIBudgetLeft, got[telemetry.MetricAPIBudgetLeft])
	}
}

func hasAll(set attribute.Set, kvs []attribute.KeyValue) bool {
	for _, kv := range kvs {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}
