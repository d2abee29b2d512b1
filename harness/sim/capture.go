package sim

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/audit"
)

// Captured is everything a run wrote where people look, as one text to grep for planted secrets:
// the functions' log lines, the spans (names, attributes, events, status), the dead letters, the
// stored connections and each tenant's audit.
func (e *Env) Captured(ctx context.Context, logs string, spans []sdktrace.ReadOnlySpan, tenants []string) (string, error) {
	var b strings.Builder
	b.WriteString(logs)
	for _, s := range spans {
		b.WriteString(s.Name())
		for _, a := range s.Attributes() {
			b.WriteString(" " + a.Value.Emit())
		}
		for _, ev := range s.Events() {
			b.WriteString(" " + ev.Name)
			for _, a := range ev.Attributes {
				b.WriteString(" " + a.Value.Emit())
			}
		}
		b.WriteString(" " + s.Status().Description + "\n")
	}
	dls, err := e.DeadLetters(ctx)
	if err != nil {
		return "", err
	}
	for _, d := range dls {
		fmt.Fprintf(&b, "%+v\n", d)
	}
	docs, err := e.FS.Collection(model.Connections).Documents(ctx).GetAll()
	if err != nil {
		return "", fmt.Errorf("sim: connections: %w", err)
	}
	for _, d := range docs {
		fmt.Fprintf(&b, "%v\n", d.Data())
	}
	for _, t := range tenants {
		a := audit.New(e.FS)
		a.Now = e.Clock.Now
		rep, err := a.Tenant(ctx, t, time.Time{}, time.Time{})
		if err != nil {
			return "", err
		}
		if err := rep.WriteText(&b); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}

// LockedBuffer is a bytes.Buffer that concurrent deliveries write their logs to.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Reset empties the buffer.
func (l *LockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}
