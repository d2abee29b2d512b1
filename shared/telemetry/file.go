package telemetry

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// SpanRecord is one span as FileExporter writes it: one JSON object a line, the fields a trace
// viewer needs and nothing of the SDK's internals, so a reader needs no OpenTelemetry.
type SpanRecord struct {
	TraceID      string            `json:"traceId"`
	SpanID       string            `json:"spanId"`
	ParentSpanID string            `json:"parentSpanId,omitempty"`
	Name         string            `json:"name"`
	Kind         string            `json:"kind"`
	Start        time.Time         `json:"start"`
	End          time.Time         `json:"end"`
	Attributes   map[string]string `json:"attributes,omitempty"`
	Links        []LinkRecord      `json:"links,omitempty"`
	Error        string            `json:"error,omitempty"` // the status description of a failed span
	Service      string            `json:"service,omitempty"`
}

// LinkRecord is a span's link to another span.
type LinkRecord struct {
	TraceID    string            `json:"traceId"`
	SpanID     string            `json:"spanId"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// FileExporter appends spans to a file as JSON lines (SpanRecord). It is for local runs: the demo
// turns the file into a trace page.
type FileExporter struct {
	mu sync.Mutex
	f  *os.File
	w  *bufio.Writer
}

var _ sdktrace.SpanExporter = (*FileExporter)(nil)

// NewFileExporter opens path for appending, creating it if needed.
func NewFileExporter(path string) (*FileExporter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("telemetry: file exporter: %w", err)
	}
	return &FileExporter{f: f, w: bufio.NewWriter(f)}, nil
}

// ExportSpans implements sdktrace.SpanExporter.
func (e *FileExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	enc := json.NewEncoder(e.w)
	for _, s := range spans {
		if err := enc.Encode(record(s)); err != nil {
			return fmt.Errorf("telemetry: file exporter: %w", err)
		}
	}
	if err := e.w.Flush(); err != nil {
		return fmt.Errorf("telemetry: file exporter: %w", err)
	}
	return nil
}

// Shutdown implements sdktrace.SpanExporter.
func (e *FileExporter) Shutdown(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.w.Flush(); err != nil {
		return fmt.Errorf("telemetry: file exporter: %w", err)
	}
	return e.f.Close()
}

func record(s sdktrace.ReadOnlySpan) SpanRecord {
	r := SpanRecord{
		TraceID: s.SpanContext().TraceID().String(), SpanID: s.SpanContext().SpanID().String(),
		Name: s.Name(), Kind: s.SpanKind().String(), Start: s.StartTime().UTC(), End: s.EndTime().UTC(),
	}
	if p := s.Parent(); p.IsValid() {
		r.ParentSpanID = p.SpanID().String()
	}
	if attrs := s.Attributes(); len(attrs) > 0 {
		r.Attributes = map[string]string{}
		for _, a := range attrs {
			r.Attributes[string(a.Key)] = a.Value.Emit()
		}
	}
	for _, l := range s.Links() {
		lr := LinkRecord{TraceID: l.SpanContext.TraceID().String(), SpanID: l.SpanContext.SpanID().String()}
		for _, a := range l.Attributes {
			if lr.Attributes == nil {
				lr.Attributes = map[string]string{}
			}
			lr.Attributes[string(a.Key)] = a.Value.Emit()
		}
		r.Links = append(r.Links, lr)
	}
	if st := s.Status(); st.Code.String() == "Error" {
		r.Error = st.Description
		if r.Error == "" {
			r.Error = "error"
		}
	}
	if res := s.Resource(); res != nil {
		if v, ok := res.Set().Value("service.name"); ok {
			r.Service = v.Emit()
		}
	}
	return r
}

// ReadFile reads the spans a FileExporter wrote.
func ReadFile(path string) ([]SpanRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("telemetry: read spans: %w", err)
	}
	defer f.Close()
	var out []SpanRecord
	dec := json.NewDecoder(f)
	for dec.More() {
		var r SpanRecord
		if err := dec.Decode(&r); err != nil {
			return out, fmt.Errorf("telemetry: read spans %s: %w", path, err)
		}
		out = append(out, r)
	}
	return out, nil
}
