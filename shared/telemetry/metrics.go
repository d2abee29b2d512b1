package telemetry

import (
	"context"
	"errors"
	"fmt"
	"time"

	mexporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/metric"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
)

// The metrics oncesync emits: the one list the instruments are made from, and that the terraform
// drift test holds the alert policies and the dashboard to (in Cloud Monitoring each is
// workload.googleapis.com/<Name>). Names and units follow OpenTelemetry's semantic conventions
// where one exists (messaging.*), oncesync.* otherwise.
const (
	MetricConsumed          = "messaging.client.consumed.messages" // deliveries, by function and outcome
	MetricProcessDuration   = "messaging.process.duration"         // how long a delivery took, by function and outcome
	MetricRecordsImported   = "oncesync.records.imported"
	MetricRecordsUnchanged  = "oncesync.records.unchanged"
	MetricRecordsTombstoned = "oncesync.records.tombstoned"
	MetricLeasesTakenOver   = "oncesync.leases.taken_over"
	MetricFencingRejections = "oncesync.fencing.rejections"
	MetricDeadLetters       = "oncesync.dead_letters"
	MetricSourceRequests    = "oncesync.source.requests"
	MetricAPIBudgetLeft     = "oncesync.source.api_budget.remaining"
	MetricJobLag            = "oncesync.job.lag"
	MetricJobsStuck         = "oncesync.jobs.stuck"
	MetricChunksInFlight    = "oncesync.chunks.in_flight"
	MetricDisconnected      = "oncesync.tenants.disconnected"
)

// MetricDoc is one metric's description and unit.
type MetricDoc struct {
	Name, Unit, Description string
}

// MetricDocs lists every metric with its unit and meaning, in MetricDocs order (the dashboard's).
var MetricDocs = []MetricDoc{
	{MetricConsumed, "{message}", "Deliveries of a Pub/Sub message to a function, by oncesync.function and oncesync.delivery.outcome (ack, suppressed, sent_back, retry, dead_lettered)."},
	{MetricProcessDuration, "s", "How long a delivery took, by function and outcome."},
	{MetricRecordsImported, "{record}", "Target records created or updated (tombstones included), by oncesync.target."},
	{MetricRecordsUnchanged, "{record}", "Rows whose target already had that version or a newer one."},
	{MetricRecordsTombstoned, "{record}", "Target records written as deleted."},
	{MetricLeasesTakenOver, "{lease}", "Claims that took over an expired or released lease (a crashed owner; hand-offs excluded), by oncesync.scope."},
	{MetricFencingRejections, "{write}", "Fenced writes refused because another owner had taken the key over (a zombie stopped)."},
	{MetricDeadLetters, "{message}", "Messages and rows dead-lettered, by function and reason."},
	{MetricSourceRequests, "{request}", "Requests to the source API, by http.response.status_code (0: no answer)."},
	{MetricAPIBudgetLeft, "{request}", "The source org's daily API requests left, as the last answer said."},
	{MetricJobLag, "s", "From a Job's creation (its tick) to COMPLETED."},
	{MetricJobsStuck, "{job}", "Unfinished Jobs older than the stuck bound, counted by each tick's recovery sweep."},
	{MetricChunksInFlight, "{chunk}", "Chunks written to a plan and not yet imported (summed over instances)."},
	{MetricDisconnected, "{search}", "Searches paused because their tenant's connection cannot authenticate (a refresh refused, a credential missing, a permission lacking), and, at every tick while it stays so, the tenant's settings left without a Job: the tenant is disconnected, its Jobs wait for it to be connected again."},
}

// Metrics are oncesync's instruments. A nil *Metrics records nothing: code below the Gate takes
// the Metrics from the context (MetricsFrom) and needs no wiring of its own.
type Metrics struct {
	consumed                                  metric.Int64Counter
	duration                                  metric.Float64Histogram
	imported, unchanged, tombstoned, takeover metric.Int64Counter
	fenced, dead, requests, disconnected      metric.Int64Counter
	budget, stuck                             metric.Int64Gauge
	lag                                       metric.Float64Histogram
	inFlight                                  metric.Int64UpDownCounter
}

// NewMetrics makes the instruments on a meter provider.
func NewMetrics(mp metric.MeterProvider) (*Metrics, error) {
	m := mp.Meter(Name)
	var errs []error
	doc := map[string]MetricDoc{}
	for _, d := range MetricDocs {
		doc[d.Name] = d
	}
	counter := func(name string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(doc[name].Unit), metric.WithDescription(doc[name].Description))
		errs = append(errs, err)
		return c
	}
	gauge := func(name string) metric.Int64Gauge {
		g, err := m.Int64Gauge(name, metric.WithUnit(doc[name].Unit), metric.WithDescription(doc[name].Description))
		errs = append(errs, err)
		return g
	}
	seconds := func(name string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(doc[name].Description),
			metric.WithExplicitBucketBoundaries(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200))
		errs = append(errs, err)
		return h
	}
	out := &Metrics{
		consumed: counter(MetricConsumed), duration: seconds(MetricProcessDuration),
		imported: counter(MetricRecordsImported), unchanged: counter(MetricRecordsUnchanged), tombstoned: counter(MetricRecordsTombstoned),
		takeover: counter(MetricLeasesTakenOver), fenced: counter(MetricFencingRejections), dead: counter(MetricDeadLetters),
		requests: counter(MetricSourceRequests), budget: gauge(MetricAPIBudgetLeft), stuck: gauge(MetricJobsStuck),
		lag: seconds(MetricJobLag), disconnected: counter(MetricDisconnected),
	}
	var err error
	out.inFlight, err = m.Int64UpDownCounter(MetricChunksInFlight, metric.WithUnit("{chunk}"), metric.WithDescription(doc[MetricChunksInFlight].Description))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("telemetry: instruments: %w", err)
	}
	return out, nil
}

type metricsKey struct{}

// WithMetrics returns ctx carrying m.
func WithMetrics(ctx context.Context, m *Metrics) context.Context {
	return context.WithValue(ctx, metricsKey{}, m)
}

// MetricsFrom returns the Metrics in ctx (nil, which records nothing, when there are none).
func MetricsFrom(ctx context.Context) *Metrics {
	m, _ := ctx.Value(metricsKey{}).(*Metrics)
	return m
}

// Delivery records one delivery of a function's message: its outcome and how long it took.
func (m *Metrics) Delivery(ctx context.Context, function, topic, outcome string, took time.Duration) {
	if m == nil {
		return
	}
	attrs := metric.WithAttributes(attribute.String("messaging.system", "gcp_pubsub"), attribute.String("messaging.destination.name", topic),
		AttrFunction.String(function), AttrOutcome.String(outcome))
	m.consumed.Add(ctx, 1, attrs)
	m.duration.Record(ctx, took.Seconds(), attrs)
}

// Records records what one chunk import wrote to a target.
func (m *Metrics) Records(ctx context.Context, target string, imported, unchanged, tombstoned int) {
	if m == nil {
		return
	}
	attrs := metric.WithAttributes(attribute.String("oncesync.target", target))
	m.imported.Add(ctx, int64(imported), attrs)
	m.unchanged.Add(ctx, int64(unchanged), attrs)
	m.tombstoned.Add(ctx, int64(tombstoned), attrs)
}

// TakenOver records a claim that took a lease over.
func (m *Metrics) TakenOver(ctx context.Context, scope string) {
	if m != nil {
		m.takeover.Add(ctx, 1, metric.WithAttributes(attribute.String("oncesync.scope", scope)))
	}
}

// Fenced records a fenced write refused to an owner that lost its key.
func (m *Metrics) Fenced(ctx context.Context, scope string) {
	if m != nil {
		m.fenced.Add(ctx, 1, metric.WithAttributes(attribute.String("oncesync.scope", scope)))
	}
}

// DeadLetter records a dead letter.
func (m *Metrics) DeadLetter(ctx context.Context, function, reason string) {
	if m != nil {
		m.dead.Add(ctx, 1, metric.WithAttributes(AttrFunction.String(function), attribute.String("oncesync.reason", reason)))
	}
}

// SourceRequest records one request to the source API and what it said of the budget.
func (m *Metrics) SourceRequest(ctx context.Context, status int, left int, known bool) {
	if m == nil {
		return
	}
	m.requests.Add(ctx, 1, metric.WithAttributes(attribute.Int("http.response.status_code", status)))
	if known {
		m.budget.Record(ctx, int64(left))
	}
}

// JobCompleted records a Job's lag from its creation to its completion.
func (m *Metrics) JobCompleted(ctx context.Context, created, completed time.Time) {
	if m != nil && !created.IsZero() {
		m.lag.Record(ctx, completed.Sub(created).Seconds())
	}
}

// Disconnected records a search paused because its tenant is disconnected.
func (m *Metrics) Disconnected(ctx context.Context) {
	if m != nil {
		m.disconnected.Add(ctx, 1)
	}
}

// Stuck records how many unfinished Jobs the sweep found past the stuck bound.
func (m *Metrics) Stuck(ctx context.Context, n int) {
	if m != nil {
		m.stuck.Record(ctx, int64(n))
	}
}

// ChunksPlanned and ChunkImported move the chunks-in-flight count.
func (m *Metrics) ChunksPlanned(ctx context.Context, n int) {
	if m != nil {
		m.inFlight.Add(ctx, int64(n))
	}
}

// ChunkImported is the other half of ChunksPlanned.
func (m *Metrics) ChunkImported(ctx context.Context) {
	if m != nil {
		m.inFlight.Add(ctx, -1)
	}
}

// MeterConfig configures the meter provider.
type MeterConfig struct {
	// Exporter: "" or "none" (nothing exported), "cloudmonitoring" (Cloud Monitoring, in
	// Project, every Interval).
	Exporter string
	Project  string
	Service  string
	Interval time.Duration // default 60 s (Cloud Monitoring takes a point per series every 5 s at most)
}

// Meters is a meter provider, its instruments, and what ends it.
type Meters struct {
	Metrics *Metrics
	sdk     *sdkmetric.MeterProvider
}

// NewMeters builds the meter provider cfg names and its instruments.
func NewMeters(cfg MeterConfig) (*Meters, error) {
	switch cfg.Exporter {
	case "", "none":
		m, err := NewMetrics(noop.NewMeterProvider())
		return &Meters{Metrics: m}, err
	case "cloudmonitoring":
	default:
		return nil, fmt.Errorf("telemetry: metrics exporter %q is not none or cloudmonitoring", cfg.Exporter)
	}
	exp, err := mexporter.New(mexporter.WithProjectID(cfg.Project))
	if err != nil {
		return nil, fmt.Errorf("telemetry: cloud monitoring exporter: %w", err)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(cfg.Interval))),
		sdkmetric.WithResource(resource.NewSchemaless(attribute.String("service.name", cfg.Service))),
	)
	m, err := NewMetrics(mp)
	if err != nil {
		return nil, err
	}
	return &Meters{Metrics: m, sdk: mp}, nil
}

// Shutdown exports what is left and stops the provider.
func (m *Meters) Shutdown(ctx context.Context) error {
	if m == nil || m.sdk == nil {
		return nil
	}
	if err := m.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: meters: %w", err)
	}
	return nil
}
