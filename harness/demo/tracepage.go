package demo

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"slices"
	"time"

	"github.com/oncesync/oncesync/shared/telemetry"
)

// Trace is one trace's spans, as the demo's trace page shows them.
type Trace struct {
	ID         string
	Spans      []telemetry.SpanRecord
	Deliveries int // delivery spans (one per function invocation)
	Duplicates int // of those, duplicates suppressed or sent back
}

// TraceOf picks the spans of trace id from spans, in start order.
func TraceOf(id string, spans []telemetry.SpanRecord) Trace {
	t := Trace{ID: id}
	for _, s := range spans {
		if s.TraceID != id {
			continue
		}
		t.Spans = append(t.Spans, s)
		if _, ok := s.Attributes[string(telemetry.AttrFunction)]; ok {
			t.Deliveries++
			if o := s.Attributes[string(telemetry.AttrOutcome)]; o == "suppressed" || o == "sent_back" {
				t.Duplicates++
			}
		}
	}
	slices.SortStableFunc(t.Spans, func(a, b telemetry.SpanRecord) int { return a.Start.Compare(b.Start) })
	return t
}

// WritePage writes a self-contained HTML page of the trace: every span as a row of a waterfall,
// indented under its parent, deliveries marked by outcome, and each duplicate delivery with the
// delivery it links to (the holder of its idempotency key). It needs no network: open the file.
func WritePage(w io.Writer, t Trace) error {
	data, err := json.Marshal(t.Spans)
	if err != nil {
		return fmt.Errorf("demo: trace page: %w", err)
	}
	var start, end time.Time
	for _, s := range t.Spans {
		if start.IsZero() || s.Start.Before(start) {
			start = s.Start
		}
		if s.End.After(end) {
			end = s.End
		}
	}
	if err := page.Execute(w, map[string]any{
		"ID": t.ID, "Spans": template.JS(data), "N": len(t.Spans), "Deliveries": t.Deliveries, "Duplicates": t.Duplicates,
		"Duration": end.Sub(start).Round(time.Millisecond).String(),
	}); err != nil {
		return fmt.Errorf("demo: trace page: %w", err)
	}
	return nil
}

var page = template.Must(template.New("trace").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>oncesync trace {{.ID}}</title>
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; } .legend span { margin-right: 1.2em; }
.span { display: grid; grid-template-columns: 46em 1fr; align-items: center; border-bottom: 1px solid #eee; }
.name { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.track { position: relative; height: 1.1em; }
.bar { position: absolute; height: 100%; min-width: 2px; background: #8ab4f8; }
.delivery > .name { font-weight: 600; } .delivery .bar { background: #1a73e8; }
.duplicate .bar { background: #f9ab00; } .duplicate > .name { color: #b06000; }
.error .bar { background: #d93025; }
.link { color: #555; font-weight: normal; }
</style></head>
<body>
<h1 id="summary" data-trace="{{.ID}}" data-spans="{{.N}}" data-deliveries="{{.Deliveries}}" data-duplicates="{{.Duplicates}}">
Trace {{.ID}}: {{.N}} spans, {{.Deliveries}} deliveries ({{.Duplicates}} duplicates), {{.Duration}}</h1>
<p class="legend"><span>■ delivery</span><span style="color:#b06000">■ duplicate delivery (suppressed or sent back), linked to the delivery that holds its key</span><span style="color:#d93025">■ failed</span></p>
<div id="spans"></div>
<script>
const spans = {{.Spans}};
const byId = new Map(spans.map(s => [s.spanId, s]));
const t0 = Math.min(...spans.map(s => Date.parse(s.start)));
const t1 = Math.max(...spans.map(s => Date.parse(s.end)));
const depth = s => { let d = 0; for (let p = byId.get(s.parentSpanId); p && d < 50; p = byId.get(p.parentSpanId)) d++; return d; };
const children = new Map();
for (const s of spans) { const k = byId.has(s.parentSpanId) ? s.parentSpanId : ""; if (!children.has(k)) children.set(k, []); children.get(k).push(s); }
const out = document.getElementById("spans");
const row = s => {
  const a = s.attributes || {};
  const div = document.createElement("div");
  div.className = "span";
  div.dataset.name = s.name; div.dataset.spanId = s.spanId; div.dataset.parent = s.parentSpanId || "";
  const outcome = a["oncesync.delivery.outcome"];
  if (a["oncesync.function"]) div.classList.add("delivery");
  if (outcome) div.dataset.outcome = outcome;
  if (outcome === "suppressed" || outcome === "sent_back") div.classList.add("duplicate");
  if (s.error) div.classList.add("error");
  const name = document.createElement("div");
  name.className = "name"; name.style.paddingLeft = (depth(s) * 14) + "px";
  const ms = Date.parse(s.end) - Date.parse(s.start);
  name.textContent = s.name + (outcome ? " [" + outcome + "]" : "") + " " + ms + " ms";
  name.title = JSON.stringify(a, null, 1) + (s.error ? "\nerror: " + s.error : "");
  for (const l of s.links || []) {
    const target = byId.get(l.spanId);
    div.dataset.linked = l.spanId;
    const span = document.createElement("span");
    span.className = "link";
    span.textContent = " → linked to " + (target ? target.name + " " + target.spanId : l.spanId);
    name.appendChild(span);
  }
  const track = document.createElement("div"); track.className = "track";
  const bar = document.createElement("div"); bar.className = "bar";
  const w = Math.max(t1 - t0, 1);
  bar.style.left = (100 * (Date.parse(s.start) - t0) / w) + "%";
  bar.style.width = (100 * ms / w) + "%";
  track.appendChild(bar);
  div.append(name, track);
  out.appendChild(div);
  for (const c of children.get(s.spanId) || []) row(c);
};
for (const s of children.get("") || []) row(s);
</script>
</body></html>
`))
