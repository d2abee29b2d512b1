// Package logging writes structured JSON logs that Cloud Logging understands: the level is
// "severity", the text is "message", the trace is "logging.googleapis.com/trace", and labels go to
// "logging.googleapis.com/labels". Handlers carry a request-scoped logger in the context, enriched
// as they learn the tenant, job, chunk and idempotency key, so every line of one delivery can be
// found by any of those fields.
package logging

import (
	"context"
	"io"
	"log/slog"
)

// Field names present on every line a function writes about a delivery.
const (
	Function        = "function"
	Tenant          = "tenant"
	Job             = "job"
	Chunk           = "chunk"
	Key             = "idempotencyKey"
	MessageID       = "messageId"
	DeliveryAttempt = "deliveryAttempt"
	LeaseAttempt    = "leaseAttempt" // 1 for a key's first owner, +1 per takeover
	Event           = "event"        // a short machine-readable name of what happened, e.g. "duplicate_suppressed"

	TraceKey  = "logging.googleapis.com/trace"
	SpanKey   = "logging.googleapis.com/spanId"
	LabelsKey = "logging.googleapis.com/labels"
)

// New returns a JSON logger in Cloud Logging's format writing to w.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level:       level,
		ReplaceAttr: replace,
	}))
}

func replace(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.LevelKey:
		a.Key = "severity"
		switch lvl := a.Value.Any().(slog.Level); {
		case lvl >= slog.LevelError:
			a.Value = slog.StringValue("ERROR")
		case lvl >= slog.LevelWarn:
			a.Value = slog.StringValue("WARNING")
		case lvl >= slog.LevelInfo:
			a.Value = slog.StringValue("INFO")
		default:
			a.Value = slog.StringValue("DEBUG")
		}
	case slog.MessageKey:
		a.Key = "message"
	case slog.TimeKey:
		a.Key = "time"
	}
	return a
}

type ctxKey struct{}

// NewContext returns ctx carrying l.
func NewContext(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, ctxKey{}, l)
}

// From returns the logger in ctx, or slog.Default.
func From(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(ctxKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// With returns ctx whose logger adds args (key-value pairs or slog.Attr) to every line.
func With(ctx context.Context, args ...any) context.Context {
	return NewContext(ctx, From(ctx).With(args...))
}

// Trace returns the Cloud Logging trace attributes for a W3C trace ID in project.
func Trace(project, traceID, spanID string) []any {
	if traceID == "" {
		return nil
	}
	out := []any{slog.String(TraceKey, "projects/"+project+"/traces/"+traceID)}
	if spanID != "" {
		out = append(out, slog.String(SpanKey, spanID))
	}
	return out
}

// Labels returns the Cloud Logging labels attribute.
func Labels(kv ...string) slog.Attr {
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return slog.Any(LabelsKey, m)
}
