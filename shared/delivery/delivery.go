// Package delivery turns an Eventarc CloudEvent into a Pub/Sub message for a handler, and decides,
// in exactly one place, whether a delivery is acked or redelivered.
//
// # Delivery semantics
//
// Eventarc pushes each Pub/Sub message at least once: a second copy may arrive at any time, even
// two seconds after the first and long before the ack deadline. A CloudEvent function acks by
// returning nil (HTTP 200) and asks for redelivery by returning an error (HTTP 500). Handlers
// return errors and Gate maps them:
//
//	nil                      → ack
//	ErrDuplicate             → ack; logged as event "duplicate_suppressed"
//	ErrRetryLater            → redeliver; logged as event "duplicate_in_progress"
//	ErrPoison                → dead letter, then ack (redeliver if the dead letter cannot be written)
//	gRPC InvalidArgument     → the same, reason "backend_rejected": it can never succeed (IsPermanent)
//	anything else            → redeliver, until the message is older than MaxAge: then dead letter and ack
//
// A message older than MaxAge is dead-lettered before its handler runs, too, so that one that
// crashes or times out its instance every time still ends as a dead letter.
//
// # Errors
//
// Handlers wrap ErrPoison (with Poison), ErrDuplicate and ErrRetryLater; nothing else is needed.
package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Sentinel errors handlers return to steer the delivery.
var (
	ErrPoison     = errors.New("delivery: poison")
	ErrDuplicate  = errors.New("delivery: duplicate")
	ErrRetryLater = errors.New("delivery: retry later")
)

// PoisonError is a permanent failure with a short machine-readable reason.
type PoisonError struct {
	Reason string // e.g. "malformed_event", "unknown_tenant"
	Err    error
}

func (e *PoisonError) Error() string   { return e.Reason + ": " + e.Err.Error() }
func (e *PoisonError) Unwrap() []error { return []error{ErrPoison, e.Err} }

// IsPermanent reports whether err can never succeed on a retry: a Poison error, or a backend
// answer that rejects the request itself (gRPC InvalidArgument: a document or request over
// Firestore's limits, a malformed value). Retrying those would only end when Eventarc drops the
// message, with no trace.
//
// Not an InvalidArgument about a transaction ("Transaction is invalid or closed", "…expired"): the
// client answers so when it retries a transaction whose commit was applied but answered with an
// error, and the redelivery, re-running the whole unit of work, succeeds. (The chaos suite found
// it: a Job creation whose commit failed with Unavailable after it was applied.)
func IsPermanent(err error) bool {
	if errors.Is(err, ErrPoison) {
		return true
	}
	return status.Code(err) == codes.InvalidArgument && !strings.Contains(strings.ToLower(err.Error()), "transaction")
}

// Poison returns a permanent failure with reason, formatted like fmt.Errorf.
func Poison(reason, format string, args ...any) error {
	return &PoisonError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Message is a Pub/Sub message as Eventarc delivers it.
type Message struct {
	ID              string
	Topic           string
	Subscription    string
	Data            []byte
	Attributes      map[string]string
	PublishTime     time.Time
	DeliveryAttempt int // Pub/Sub's count when it sends one (push with a dead-letter policy), else 0
	TraceID         string
	SpanID          string
	Traceparent     string // the CloudEvent's traceparent extension as sent, flags included
}

// pushBody is Eventarc's MessagePublishedData.
type pushBody struct {
	Message struct {
		Data        []byte            `json:"data"`
		Attributes  map[string]string `json:"attributes"`
		MessageID   string            `json:"messageId"`
		PublishTime time.Time         `json:"publishTime"`
	} `json:"message"`
	Subscription    string `json:"subscription"`
	DeliveryAttempt int    `json:"deliveryAttempt"`
}

// messagePublished is the CloudEvent type of a Pub/Sub message.
const messagePublished = "google.cloud.pubsub.topic.v1.messagePublished"

// Decode extracts the Pub/Sub message from a messagePublished CloudEvent. Errors wrap ErrPoison.
func Decode(e event.Event) (Message, error) {
	if e.Type() != "" && e.Type() != messagePublished {
		return Message{}, Poison("malformed_event", "event type %q is not a Pub/Sub messagePublished event", e.Type())
	}
	var b pushBody
	if err := json.Unmarshal(e.Data(), &b); err != nil {
		return Message{}, Poison("malformed_event", "event %s: body is not MessagePublishedData: %w", e.ID(), err)
	}
	m := Message{
		ID:              b.Message.MessageID,
		Subscription:    b.Subscription,
		Data:            b.Message.Data,
		Attributes:      b.Message.Attributes,
		PublishTime:     b.Message.PublishTime,
		DeliveryAttempt: b.DeliveryAttempt,
	}
	if m.ID == "" {
		m.ID = e.ID()
	}
	if m.ID == "" {
		return Message{}, Poison("malformed_event", "event has no message ID")
	}
	m.Topic = topicOf(e.Source())
	if tp, ok := e.Extensions()["traceparent"].(string); ok {
		m.TraceID, m.SpanID = parseTraceparent(tp)
		if m.TraceID != "" {
			m.Traceparent = tp
		}
	}
	return m, nil
}

// parseTraceparent reads a W3C traceparent "00-<trace>-<span>-<flags>".
func parseTraceparent(tp string) (trace, span string) {
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || len(parts[1]) != 32 || len(parts[2]) != 16 {
		return "", ""
	}
	return parts[1], parts[2]
}

// DecodeJSON decodes a message body into v, requiring a JSON object. Errors wrap ErrPoison.
func DecodeJSON(m Message, v any) error {
	if err := json.Unmarshal(m.Data, v); err != nil {
		return Poison("malformed_message", "message %s: body is not the expected JSON: %w", m.ID, err)
	}
	return nil
}

// Handler processes one message. Its error decides the delivery (see the package doc).
type Handler func(ctx context.Context, m Message) error

// Sink stores dead letters.
type Sink interface {
	DeadLetter(ctx context.Context, d model.DeadLetter) error
}

// Gate wraps handlers with decoding, logging, the delivery's span and the ack-or-redeliver
// decision.
type Gate struct {
	Function string           // entry point name, logged on every line
	Project  string           // for trace resource names
	Logger   *slog.Logger     // base logger
	Sink     Sink             // where dead letters go
	MaxAge   time.Duration    // redelivered transient failures older than this are dead-lettered
	Now      func() time.Time // injectable clock
	// Tracer starts each delivery's span (see package telemetry); nil records none, and the
	// message's trace context still reaches the handler. Flush, if set, exports the spans at the
	// end of every delivery.
	Tracer trace.Tracer
	Flush  func(ctx context.Context) error
	// Metrics counts deliveries by outcome and dead letters, and rides in the handler's context
	// (telemetry.MetricsFrom) for what it counts below; nil counts nothing.
	Metrics *telemetry.Metrics
}

// Linked is implemented by a duplicate's error that knows the delivery holding (or that finished)
// the work: its W3C traceparent, which the duplicate's span links to.
type Linked interface {
	LinkedTraceparent() string
}

// CloudEvent returns a function for functions.CloudEvent.
func (g *Gate) CloudEvent(h Handler) func(context.Context, event.Event) error {
	return func(ctx context.Context, e event.Event) error {
		ctx = g.logContext(ctx)
		m, err := Decode(e)
		if err != nil {
			raw := Message{ID: e.ID(), Topic: topicOf(e.Source()), Data: e.Data(), PublishTime: e.Time()}
			return g.decide(logging.With(ctx, slog.String(logging.MessageID, e.ID())), raw, err)
		}
		return g.Deliver(ctx, m, h)
	}
}

// logContext returns ctx with the Gate's logger, labelled with its function: every line a
// delivery logs, decoded or not, says which function wrote it.
func (g *Gate) logContext(ctx context.Context) context.Context {
	return logging.NewContext(ctx, g.Logger.With(slog.String(logging.Function, g.Function), logging.Labels("function", g.Function)))
}

// Deliver runs h on m under the delivery's span and decides the delivery's fate.
func (g *Gate) Deliver(ctx context.Context, m Message, h Handler) error {
	ctx, span := g.span(ctx, m)
	defer g.flush(ctx)
	ctx = telemetry.WithMetrics(ctx, g.Metrics)
	started := g.now()
	traceID, spanID := m.TraceID, m.SpanID
	if sc := span.SpanContext(); sc.IsValid() {
		traceID, spanID = sc.TraceID().String(), sc.SpanID().String()
	}
	args := []any{slog.String(logging.MessageID, m.ID), slog.Int(logging.DeliveryAttempt, m.DeliveryAttempt)}
	args = append(args, logging.Trace(g.Project, traceID, spanID)...)
	ctx = logging.With(ctx, args...)
	var err error
	if age := g.age(m); age > g.MaxAge && g.MaxAge > 0 {
		// Checked before the handler too: a message that times out or crashes the instance on
		// every attempt never returns an error, and Eventarc would drop it silently at 24 h.
		err = g.deadLetter(ctx, m, "retries_exhausted", fmt.Errorf("message is %v old, past the %v cutoff", age.Round(time.Second), g.MaxAge))
		span.SetAttributes(telemetry.AttrOutcome.String("dead_lettered"))
		g.Metrics.Delivery(ctx, g.Function, m.Topic, "dead_lettered", g.now().Sub(started))
	} else {
		herr := h(ctx, m)
		err = g.decide(ctx, m, herr)
		o := outcome(herr, err)
		g.mark(span, o, herr)
		g.Metrics.Delivery(ctx, g.Function, m.Topic, o, g.now().Sub(started))
	}
	span.End()
	return err
}

// outcome names what decide made of a handler's error: ack, a duplicate suppressed (acked) or
// sent back (redelivered), a retry, a dead letter.
func outcome(herr, decided error) string {
	switch {
	case herr == nil:
		return "ack"
	case errors.Is(herr, ErrDuplicate):
		return "suppressed"
	case errors.Is(herr, ErrRetryLater):
		return "sent_back"
	case decided == nil:
		return "dead_lettered"
	}
	return "retry"
}

// span starts the delivery's span, a child of the span that published m.
func (g *Gate) span(ctx context.Context, m Message) (context.Context, trace.Span) {
	tracer := g.Tracer
	if tracer == nil {
		tracer = noop.NewTracerProvider().Tracer(telemetry.Name)
	}
	// The publisher's span from the message's attributes, else Eventarc's; without either (a
	// tick from Cloud Scheduler), this delivery roots a new trace.
	ctx = telemetry.Extract(ctx, m.Attributes, m.Traceparent)
	return tracer.Start(ctx, g.Function+" deliver", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String("messaging.system", "gcp_pubsub"),
		attribute.String("messaging.message.id", m.ID),
		attribute.String("messaging.destination.name", m.Topic),
		attribute.Int("messaging.gcp_pubsub.message.delivery_attempt", m.DeliveryAttempt),
		telemetry.AttrFunction.String(g.Function),
		telemetry.AttrTenant.String(m.Attributes["tenant"]),
		telemetry.AttrJob.String(m.Attributes["job"]),
	))
}

// mark records the delivery's outcome on its span; a duplicate's span links to the delivery that
// holds the work.
func (g *Gate) mark(span trace.Span, outcome string, herr error) {
	span.SetAttributes(telemetry.AttrOutcome.String(outcome))
	var l Linked
	if errors.As(herr, &l) {
		if sc, ok := telemetry.SpanContext(l.LinkedTraceparent()); ok {
			span.AddLink(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{attribute.String("oncesync.link", "holder of the idempotency key")}})
		}
	}
	if outcome == "retry" || outcome == "dead_lettered" {
		span.SetStatus(otelcodes.Error, herr.Error())
	}
}

func (g *Gate) flush(ctx context.Context) {
	if g.Flush == nil {
		return
	}
	if err := g.Flush(context.WithoutCancel(ctx)); err != nil {
		logging.From(ctx).Warn("could not export the delivery's spans", slog.String("error", err.Error()))
	}
}

// age is how long ago m was published (0 when unknown).
func (g *Gate) age(m Message) time.Duration {
	if m.PublishTime.IsZero() {
		return 0
	}
	return g.now().Sub(m.PublishTime)
}

// decide is the one place that maps a handler's result to ack (nil) or redeliver (error).
func (g *Gate) decide(ctx context.Context, m Message, err error) error {
	log := logging.From(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrDuplicate):
		log.Info("duplicate delivery suppressed", slog.String(logging.Event, "duplicate_suppressed"), slog.String("detail", err.Error()))
		return nil
	case errors.Is(err, ErrRetryLater):
		log.Info("duplicate delivery while the work is in progress; asking for redelivery",
			slog.String(logging.Event, "duplicate_in_progress"), slog.String("detail", err.Error()))
		return err
	case IsPermanent(err):
		reason := "backend_rejected" // InvalidArgument: the request can never succeed
		var pe *PoisonError
		if errors.As(err, &pe) {
			reason = pe.Reason
		}
		return g.deadLetter(ctx, m, reason, err)
	}
	if age := g.age(m); g.MaxAge > 0 && age > g.MaxAge {
		return g.deadLetter(ctx, m, "retries_exhausted", fmt.Errorf("still failing after %v: %w", age.Round(time.Second), err))
	}
	log.Warn("transient failure; asking for redelivery", slog.String(logging.Event, "retry"), slog.String("error", err.Error()))
	return err
}

func (g *Gate) deadLetter(ctx context.Context, m Message, reason string, cause error) error {
	log := logging.From(ctx)
	now := g.now()
	d := model.DeadLetter{
		ID:   model.DocID(g.Function, m.ID),
		Kind: model.DeadMessage, Function: g.Function, Reason: reason, Error: cause.Error(),
		MessageID: m.ID, Topic: m.Topic, Data: m.Data, Attributes: m.Attributes, PublishTime: m.PublishTime,
		TenantID: m.Attributes["tenant"], JobID: m.Attributes["job"],
		FirstAt: now, LastAt: now, Attempts: 1,
	}
	if err := g.Sink.DeadLetter(ctx, d); err != nil {
		log.Error("could not record dead letter; asking for redelivery", slog.String(logging.Event, "dead_letter_failed"),
			slog.String("reason", reason), slog.String("error", err.Error()))
		return fmt.Errorf("delivery: dead letter %s: %w", m.ID, err)
	}
	g.Metrics.DeadLetter(ctx, g.Function, reason)
	log.Error("message dead-lettered", slog.String(logging.Event, "dead_lettered"),
		slog.String("reason", reason), slog.String("error", cause.Error()))
	return nil
}

func (g *Gate) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}
