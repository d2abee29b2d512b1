// Package telemetry is oncesync's tracing: one trace per tick, across the three functions and
// Pub/Sub, with OpenTelemetry.
//
// # One trace per tick
//
// delivery.Gate starts a span for every delivery (a consumer span named "<Function> deliver"),
// whose parent is the span that published the message: bus.PubSub.Publish writes the publishing
// span's W3C traceparent into the message's attributes (Inject), and the Gate reads it back
// (Extract), or else the CloudEvent's own traceparent. A tick has no parent (Cloud Scheduler
// starts it), so its delivery is the trace's root; the scheduler's expand messages, the
// expander's chunk messages and continuations carry the trace on, so a Job's search, plan and
// imports are one trace. Work inside a delivery is a child span (Start): a claim, a source page, a
// plan commit, a chunk transaction. A duplicate delivery is a span of its own in the same trace,
// with a link to the delivery that holds (or finished) the key and the attribute
// oncesync.delivery.outcome "suppressed" or "sent_back": the incident's question, "was the
// expansion called twice, or its message delivered twice?", is one look at the trace.
//
// # Exporters
//
// New builds the tracer provider from configuration: Cloud Trace in production (Google's
// OpenTelemetry exporter), a JSON-lines file for the demo's trace page (FileExporter), or none.
// Sampling is a ratio decided at the root (ParentBased), so a trace is kept or dropped whole.
// Spans are batched and flushed at the end of every delivery (Flush), since a function instance
// may get no CPU between requests.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	texporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/trace"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Name is the instrumentation scope of oncesync's spans.
const Name = "github.com/oncesync/oncesync"

// TraceparentAttr is the message attribute that carries the publishing span (W3C Trace Context).
const TraceparentAttr = "traceparent"

// Span attributes oncesync sets (besides OpenTelemetry's messaging conventions).
const (
	AttrFunction = attribute.Key("oncesync.function")
	AttrOutcome  = attribute.Key("oncesync.delivery.outcome") // ack, suppressed, sent_back, retry, dead_lettered
	AttrKey      = attribute.Key("oncesync.idempotency_key")
	AttrJob      = attribute.Key("oncesync.job")
	AttrTenant   = attribute.Key("oncesync.tenant")
)

var propagator = propagation.TraceContext{}

// Start starts a child span of the span in ctx, with that span's tracer provider: a no-op when ctx
// carries no span, so code below a delivery needs no tracer of its own.
func Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(Name).Start(ctx, name, trace.WithAttributes(attrs...))
}

// End ends span, recording err (if any) as its status.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
	}
	span.End()
}

// Inject returns attrs with the traceparent of the span in ctx added (a copy; attrs is not
// changed). Without a valid span it returns attrs as they are.
func Inject(ctx context.Context, attrs map[string]string) map[string]string {
	tp := Traceparent(ctx)
	if tp == "" {
		return attrs
	}
	out := make(map[string]string, len(attrs)+1)
	for k, v := range attrs {
		out[k] = v
	}
	out[TraceparentAttr] = tp
	return out
}

// Extract returns ctx with the remote span a message names as its parent: its traceparent
// attribute, else fallback (the CloudEvent's traceparent extension), else none.
func Extract(ctx context.Context, attrs map[string]string, fallback string) context.Context {
	tp := attrs[TraceparentAttr]
	if tp == "" {
		tp = fallback
	}
	if tp == "" {
		return ctx
	}
	return propagator.Extract(ctx, propagation.MapCarrier{TraceparentAttr: tp})
}

// Traceparent is the W3C traceparent of the span in ctx, "" when it has none.
func Traceparent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagator.Inject(ctx, c)
	return c[TraceparentAttr]
}

// TraceIDOf is the trace ID of the span in ctx, "" when it has none.
func TraceIDOf(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}

// SpanContext parses a W3C traceparent; ok is false for an empty or invalid one.
func SpanContext(traceparent string) (sc trace.SpanContext, ok bool) {
	if traceparent == "" {
		return sc, false
	}
	sc = trace.SpanContextFromContext(propagator.Extract(context.Background(), propagation.MapCarrier{TraceparentAttr: traceparent}))
	return sc, sc.IsValid()
}

// TraceID is the trace ID of a W3C traceparent, "" when it has none.
func TraceID(traceparent string) string {
	if sc, ok := SpanContext(traceparent); ok {
		return sc.TraceID().String()
	}
	return ""
}

// Config configures the tracer provider.
type Config struct {
	// Exporter: "" or "none" (spans are not recorded, the trace context still propagates),
	// "cloudtrace" (Cloud Trace, in Project), or "file:PATH" (JSON lines, FileExporter).
	Exporter    string
	SampleRatio float64 // of new traces (a tick), 0..1; children follow their parent
	Project     string
	Service     string // service.name
}

// Validate reports a configuration New cannot build.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Exporter == "" || c.Exporter == "none" || c.Exporter == "cloudtrace":
	case strings.HasPrefix(c.Exporter, "file:") && len(c.Exporter) > len("file:"):
	default:
		errs = append(errs, fmt.Errorf("telemetry: exporter %q is not none, cloudtrace or file:PATH", c.Exporter))
	}
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		errs = append(errs, fmt.Errorf("telemetry: sample ratio %v outside 0..1", c.SampleRatio))
	}
	if c.Exporter == "cloudtrace" && c.Project == "" {
		errs = append(errs, errors.New("telemetry: cloudtrace needs a project"))
	}
	return errors.Join(errs...)
}

// Traces is a tracer provider and what ends it.
type Traces struct {
	Provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil when nothing is recorded
}

// Tracer returns the provider's tracer for oncesync's spans.
func (t *Traces) Tracer() trace.Tracer { return t.Provider.Tracer(Name) }

// Flush exports the spans ended so far.
func (t *Traces) Flush(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	if err := t.sdk.ForceFlush(ctx); err != nil {
		return fmt.Errorf("telemetry: flush: %w", err)
	}
	return nil
}

// Shutdown flushes and stops the provider.
func (t *Traces) Shutdown(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}

// FromSDK wraps an SDK provider the caller built (a test's, with a span recorder).
func FromSDK(tp *sdktrace.TracerProvider) *Traces { return &Traces{Provider: tp, sdk: tp} }

// Off is a provider that records nothing.
func Off() *Traces { return &Traces{Provider: noop.NewTracerProvider()} }

// New builds the tracer provider cfg names.
func New(ctx context.Context, cfg Config) (*Traces, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	switch {
	case cfg.Exporter == "" || cfg.Exporter == "none":
		return Off(), nil
	case cfg.Exporter == "cloudtrace":
		e, err := texporter.New(texporter.WithProjectID(cfg.Project), texporter.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("telemetry: cloud trace exporter: %w", err)
		}
		exp = e
	default:
		e, err := NewFileExporter(strings.TrimPrefix(cfg.Exporter, "file:"))
		if err != nil {
			return nil, err
		}
		exp = e
	}
	res := resource.NewSchemaless(attribute.String("service.name", cfg.Service))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	)
	return &Traces{Provider: tp, sdk: tp}, nil
}
