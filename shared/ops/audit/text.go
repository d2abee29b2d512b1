package audit

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oncesync/oncesync/shared/model"
)

// TextOptions tune the text reports.
type TextOptions struct {
	// AllChunks lists every chunk; by default a Job of more than 50 chunks lists only those with
	// something to see (not DONE, outside the plan, duplicates, takeovers, target findings).
	AllChunks bool
}

const chunkListLimit = 50

// textWriter writes sections of aligned tables and remembers the first error.
type textWriter struct {
	w   *bufio.Writer
	err error
}

func newText(w io.Writer) *textWriter { return &textWriter{w: bufio.NewWriter(w)} }

func (t *textWriter) printf(format string, args ...any) {
	if t.err == nil {
		_, t.err = fmt.Fprintf(t.w, format, args...)
	}
}

// table writes rows (tab-separated cells) aligned, indented by two spaces.
func (t *textWriter) table(header string, rows []string) {
	if t.err != nil {
		return
	}
	tw := tabwriter.NewWriter(t.w, 0, 0, 2, ' ', 0)
	for _, r := range append([]string{header}, rows...) {
		if _, err := fmt.Fprintln(tw, "  "+r); err != nil {
			t.err = err
			return
		}
	}
	t.err = tw.Flush()
}

func (t *textWriter) flush() error {
	if t.err != nil {
		return t.err
	}
	return t.w.Flush()
}

// row is one table row: each cell on one line (a multi-line source error shows its breaks as ⏎),
// so that no cell breaks the table.
func row(cells ...any) string {
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = oneLineText(fmt.Sprint(c))
	}
	return strings.Join(s, "\t")
}

// oneLineText is s on one line, as a table cell is.
func oneLineText(s string) string { return strings.Join(strings.Fields(lineBreaks.Replace(s)), " ") }

var lineBreaks = strings.NewReplacer("\r\n", " ⏎ ", "\n", " ⏎ ", "\r", " ⏎ ")

func (t *textWriter) findings(list []Finding, omitted map[string]int, clean string) {
	if len(list) == 0 && len(omitted) == 0 {
		t.printf("RESULT  clean: %s\n\n", clean)
		return
	}
	errs := 0
	for _, f := range list {
		if f.Severity == Error {
			errs++
		}
	}
	n := len(list) + sum(omitted)
	t.printf("RESULT  %d finding%s: %d error%s, %d warning%s", n, plural(n), errs, plural(errs), len(list)-errs, plural(len(list)-errs))
	if n > len(list) {
		t.printf(" listed, %d more counted", n-len(list))
	}
	t.printf("\n\nFINDINGS\n")
	rows := make([]string, 0, len(list))
	for _, f := range list {
		rows = append(rows, row(f.Severity, f.Kind, orDash(f.Job), f.Where(), f.Detail))
	}
	t.table(row("SEVERITY", "KIND", "JOB", "WHERE", "DETAIL"), rows)
	kinds := make([]string, 0, len(omitted))
	for k := range omitted {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		t.printf("  … and %d more %s findings, not listed\n", omitted[k], k)
	}
	t.printf("\n")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteText writes the report for people: the findings first, then the Job, its timeline,
// chunks, deliveries, target records and dead letters.
func (r JobReport) WriteText(w io.Writer) error { return r.WriteTextWith(w, TextOptions{}) }

// WriteTextWith is WriteText with options.
// lane names the chunk lane of the Job's size class (decided at its cut).
func lane(j model.Job) string {
	switch {
	case j.SliceCount == 0:
		return "not decided yet (the window is not cut)"
	case j.Class == model.ClassBulk:
		return "bulk (chunks on the bulk topic, imported by ImporterBulk)"
	}
	return "standard (chunks on the chunks topic, imported by Importer)"
}

func (r JobReport) WriteTextWith(w io.Writer, o TextOptions) error {
	t := newText(w)
	j := r.Job
	t.printf("AUDIT  Job %s  (tenant %s, setting %s, %s → %s target)\n", j.ID, j.TenantID, j.SettingID, j.SourceObject, j.Target)
	t.findings(r.Findings, r.Omitted, "nothing imported twice, nothing lost, nothing stuck")

	t.printf("JOB\n")
	t.table(row("status", j.Status+failure(j)), []string{
		row("window", ts(j.WindowFrom)+" → "+ts(j.WindowTo)),
		row("created", ts(j.CreatedAt)+"  ("+origin(j)+")"),
		row("planned", ts(j.PlannedAt)),
		row("completed", ts(j.CompletedAt)),
		row("rows", fmt.Sprintf("%d from the search, %d invalid (dead-lettered), %d imported, %d unchanged", j.RecordCount, j.InvalidCount, j.Imported, j.Unchanged)),
		row("searches", fmt.Sprintf("%d source search%s", j.Searches, pluralES(j.Searches))),
		row("lane", lane(j)),
	})

	t.printf("\nTIMELINE\n")
	var ev []string
	for _, e := range r.Timeline {
		ev = append(ev, row(ts(e.At), offset(e.At, j.CreatedAt), e.What, cmp.Or(e.Trace, "-")))
	}
	t.table(row("TIME", "T+", "EVENT", "TRACE"), ev)

	p := r.Plan
	expected := fmt.Sprintf("ceil(%d / %d) = %d", p.Records, p.ChunkSize, p.Expected)
	if p.Slices > 1 {
		expected = fmt.Sprintf("%d (ceil(rows / %d) for each of %d slices)", p.Expected, p.ChunkSize, p.Slices)
	}
	t.printf("\nCHUNKS  expected %s, planned %d, found %d, DONE %d, rows %d", expected, p.ChunkCount, p.Found, p.Done, p.Rows)
	if p.ShortChunks > 0 {
		t.printf(", %d cut short by the byte limit", p.ShortChunks)
	}
	t.printf("\n")
	var rows []string
	hidden := 0
	for _, c := range r.Chunks {
		if !o.AllChunks && len(r.Chunks) > chunkListLimit && !notable(c) {
			hidden++
			continue
		}
		rows = append(rows, row(c.DocID+outside(c), c.Status, c.Count, c.Imported, c.Unchanged, c.Key.Deliveries, c.Key.Duplicates,
			c.Key.Takeovers, keyCell(c.Key), ts(c.DoneAt), targetCell(c.Target)))
	}
	t.table(row("CHUNK", "STATUS", "ROWS", "IMPORTED", "UNCHANGED", "DELIVERIES", "SUPPRESSED", "TAKEOVERS", "KEY", "DONE AT", "TARGET dup/missing/stale"), rows)
	if hidden > 0 {
		t.printf("  (%d more chunks with nothing to see; --all-chunks or --json lists them)\n", hidden)
	}

	t.printf("\nDELIVERIES  per unit of work: claims of its idempotency key + duplicates suppressed\n")
	t.table(stepHeader, stepRows(r.Deliveries))
	var keyRows []string
	for _, k := range r.Keys {
		keyRows = append(keyRows, row(k.Key, keyCell(k), k.Deliveries, k.Claims, k.Duplicates, k.WhileInProgress, k.Takeovers, orDash(k.MessageID), ts(k.LastDuplicateAt)))
	}
	t.printf("\n")
	t.table(row("KEY", "STATE", "DELIVERIES", "CLAIMS", "SUPPRESSED", "WHILE IN PROGRESS", "TAKEOVERS", "FIRST MESSAGE", "LAST DUPLICATE"), keyRows)

	tr := r.Target
	switch {
	case !tr.Checked:
		t.printf("\nTARGET RECORDS  not checked (--no-records)\n")
	default:
		t.printf("\nTARGET RECORDS  %s: %d external IDs of %d DONE chunks checked: %d duplicated (%d extra record%s), %d missing, %d stale\n",
			tr.Collection, tr.Rows, tr.Chunks, tr.Duplicated, tr.Extra, plural(tr.Extra), tr.Missing, tr.Stale)
	}

	t.printf("\n")
	t.deadLetters(r.DeadLetters)
	t.printf("\naudited %s, %d documents read\n", ts(r.AuditedAt), r.Reads)
	return t.flush()
}

func failure(j model.Job) model.JobStatus {
	if j.Failure != "" {
		return model.JobStatus(": " + j.Failure)
	}
	return ""
}

func pluralS(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func pluralES(n int) string {
	if n == 1 {
		return ""
	}
	return "es"
}

func offset(at, from time.Time) string {
	if at.IsZero() || from.IsZero() {
		return "-"
	}
	d := at.Sub(from).Round(time.Millisecond)
	if d < 0 {
		return "-" + (-d).String()
	}
	return "+" + d.String()
}

func notable(c ChunkReport) bool {
	return !c.Planned || c.Status != model.ChunkDone || c.Key.Duplicates > 0 || c.Key.Takeovers > 0 || c.Key.Expired ||
		(c.Target != nil && (c.Target.Duplicated+c.Target.Missing+c.Target.Stale) > 0)
}

func outside(c ChunkReport) string {
	if c.Planned {
		return ""
	}
	return " (outside the plan)"
}

func keyCell(k KeyReport) string {
	switch {
	case !k.Found:
		return "-"
	case k.Expired:
		return "EXPIRED"
	}
	return k.State
}

func targetCell(t *TargetReport) string {
	if t == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d/%d", t.Duplicated, t.Missing, t.Stale)
}

var stepHeader = row("STEP", "KEYS", "FOUND", "DELIVERIES", "CLAIMS", "SUPPRESSED", "WHILE IN PROGRESS", "TAKEOVERS", "OPEN", "EXPIRED")

func stepRows(steps []StepReport) []string {
	var rows []string
	for _, s := range steps {
		rows = append(rows, row(s.Step, s.Keys, s.Found, s.Deliveries, s.Claims, s.Suppressed, s.WhileInProgress, s.Takeovers, s.Open, s.Expired))
	}
	return rows
}

func (t *textWriter) deadLetters(dls []DeadLetterSummary) {
	t.printf("DEAD LETTERS (%d)\n", len(dls))
	if len(dls) == 0 {
		return
	}
	rows := make([]string, 0, len(dls))
	for _, d := range dls {
		replayed := "-"
		switch {
		case d.Replays > 0:
			replayed = fmt.Sprintf("%d, %s", d.Replays, ts(d.ReplayedAt))
		case d.Resolved:
			replayed = "not needed"
		}
		rows = append(rows, row(d.ID, d.Kind, d.Function, d.Reason, ts(d.FirstAt), ts(d.LastAt), d.Attempts, replayed, d.Payload))
	}
	t.table(row("ID", "KIND", "FUNCTION", "REASON", "FIRST ATTEMPT", "LAST ATTEMPT", "ATTEMPTS", "REPLAYED", "PAYLOAD"), rows)
}

// WriteDeadLetters writes dead letters as an aligned table, with each one's error and what a
// replay would do below the table.
func WriteDeadLetters(w io.Writer, dls []DeadLetterSummary) error {
	t := newText(w)
	t.deadLetters(dls)
	if len(dls) > 0 {
		t.printf("\n")
		rows := make([]string, 0, len(dls))
		for _, d := range dls {
			replay := "replayable"
			switch {
			case !d.Replayable:
				replay = "not replayable"
			case d.Replays > 0:
				replay = "replayed (--force to replay again)"
			case d.Resolved:
				replay = "not needed"
			}
			if d.Note != "" {
				replay += ": " + d.Note
			}
			rows = append(rows, row(d.ID, orDash(d.Tenant), orDash(d.Job), orDash(d.MessageID), d.Error, replay))
		}
		t.table(row("ID", "TENANT", "JOB", "MESSAGE", "ERROR", "REPLAY"), rows)
	}
	return t.flush()
}

// WriteReplays writes replay results as an aligned table.
func WriteReplays(w io.Writer, res []ReplayResult) error {
	t := newText(w)
	rows := make([]string, 0, len(res))
	for _, r := range res {
		var reopened []string
		if r.ReopenedJob != "" {
			reopened = append(reopened, "Job "+r.ReopenedJob+" (was FAILED)")
		}
		if r.ReopenedKey != "" {
			reopened = append(reopened, "key "+r.ReopenedKey)
		}
		rows = append(rows, row(r.ID, r.Outcome, orDash(r.Topic), orDash(r.MessageID), orDash(strings.Join(reopened, ", ")), orDash(r.Detail)))
	}
	t.table(row("DEAD LETTER", "OUTCOME", "TOPIC", "NEW MESSAGE", "REOPENED", "DETAIL"), rows)
	return t.flush()
}

// WriteText writes the tenant report for people: the findings first, then one line per Job, the
// open keys and the dead letters.
func (r TenantReport) WriteText(w io.Writer) error {
	t := newText(w)
	state := "not found"
	if r.Tenant.Found {
		state = "disabled"
		if r.Tenant.Enabled {
			state = "enabled"
		}
	}
	since, until := "the beginning", "now"
	if !r.Since.IsZero() {
		since = ts(r.Since)
	}
	if !r.Until.IsZero() {
		until = ts(r.Until)
	}
	t.printf("AUDIT  tenant %s (%s): Jobs created from %s to %s, and unfinished Jobs of any age\n", r.Tenant.ID, state, since, until)
	if c := r.Tenant.Connection; c != nil && c.State == model.Disconnected {
		t.printf("CONNECTION  disconnected since %s: %s\n  its Jobs are paused, nothing is lost: fix the cause, then oncesync-ops tenants connect %s\n",
			ts(c.ChangedAt), oneLineText(c.Reason), r.Tenant.ID)
	}
	t.findings(r.Findings, r.Omitted, "nothing imported twice, nothing lost, nothing stuck")

	tt := r.Totals
	t.printf("TOTALS  %d Jobs: %d COMPLETED, %d unfinished, %d FAILED; %d rows, %d imported, %d unchanged; %d deliveries, %d duplicates suppressed, %d leases taken over; %d duplicated, %d missing; %d dead letters, %d expired leases\n\n",
		tt.Jobs, tt.Completed, tt.Unfinished, tt.Failed, tt.Records, tt.Imported, tt.Unchanged, tt.Deliveries, tt.Suppressed, tt.Takeovers,
		tt.Duplicated, tt.Missing, tt.DeadLetters, tt.Expired)

	t.printf("JOBS\n")
	rows := make([]string, 0, len(r.Jobs))
	for _, j := range r.Jobs {
		id := j.ID
		if !j.InRange {
			id += " (older, unfinished)"
		}
		rows = append(rows, row(id, j.SourceObject+"→"+j.Target, j.Status, ts(j.CreatedAt), ts(j.WindowFrom)+" → "+ts(j.WindowTo),
			j.Chunks, j.Records, j.Imported, j.Deliveries, j.Suppressed, j.Takeovers, j.Searches, j.DeadLetters, j.Findings))
	}
	t.table(row("JOB", "TARGET", "STATUS", "CREATED", "WINDOW", "CHUNKS", "ROWS", "IMPORTED", "DELIVERIES", "SUPPRESSED", "TAKEOVERS", "SEARCHES", "DEAD", "FINDINGS"), rows)

	t.printf("\nOPEN KEYS (%d IN_PROGRESS)\n", len(r.OpenKeys))
	if len(r.OpenKeys) > 0 {
		rows = rows[:0]
		for _, k := range r.OpenKeys {
			rows = append(rows, row(k.Key, keyCell(k), ts(k.LeaseUntil), k.Owner, k.Claims, k.Duplicates))
		}
		t.table(row("KEY", "STATE", "LEASE UNTIL", "OWNER", "CLAIMS", "SUPPRESSED"), rows)
	}
	t.printf("\n")
	t.deadLetters(r.DeadLetters)
	if s := r.Scan; s != nil {
		t.printf("\nTARGET SCAN  %s: %d records, %d external IDs, %d duplicated (%d extra records)\n",
			strings.Join(s.Collections, " + "), s.Records, s.ExternalIDs, s.Duplicated, s.Extra)
	}
	t.printf("\naudited %s, %d documents read\n", ts(r.AuditedAt), r.Reads)
	return t.flush()
}

// origin says what made a Job: its tick, or a resync request.
func origin(j model.Job) string {
	if j.Resync != "" {
		return "resync " + j.Resync
	}
	return "tick " + j.TickID
}
