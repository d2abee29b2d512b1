package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/oncesync/oncesync/shared/config"
)

// Goals the report states and compares against (goals, not test assertions).
const (
	GoalPipelineVsCeiling  = 0.70 // guarded pipeline ÷ raw ceiling, records/s
	GoalGuardedVsUnguarded = 0.90 // guarded ÷ unguarded, records/s
	GoalDuplicateOps       = 3    // Firestore operations per duplicate delivery
	GoalLinear             = 1.10 // time(large) ÷ time(small) ≤ 1.1 × records(large) ÷ records(small)
	GoalMemoryGrowth       = 1.50 // peak RSS(large) ÷ peak RSS(small): bounded, not proportional
	GoalUpdatedVsPlain     = 0.80 // with 1 % of records updated in the window ÷ the same size without, records/s
	GoalFirstImport        = 1.0  // seconds, tick → first imported record, at every size
	GoalSlowSourceSlack    = 1.3  // slow source: elapsed ≤ 1.3 × (pages ÷ GoalSlowSourceSlices) s + import time
	GoalSlowSourceSlices   = 4    // parallel slices the slow-source goal assumes
	GoalLongestDelivery    = 0.80 // longest delivery ÷ the function timeout
)

// Files the report writes into Options.Out.
const (
	ReportFile  = "REPORT.md"
	ChartFile   = "throughput.svg"
	ResultsFile = "results.json"
)

// sizeSummary gathers one dataset size's measurements.
type sizeSummary struct {
	Size                           int
	Ceiling                        []Ceiling // the best strategy's measurements, one per repetition, in order
	ReadCeiling                    []Ceiling // the same, of the second ceiling (reads first, then writes)
	Guarded, Unguarded, Duplicates []Run
	Updated, Slow, Largest         []Run // the updated, slow-source and largest-dataset passes
}

// all returns every run of the size.
func (s sizeSummary) all() [][]Run {
	return [][]Run{s.Guarded, s.Unguarded, s.Duplicates, s.Updated, s.Slow, s.Largest}
}

func (r *Results) sizes() []sizeSummary {
	by := map[int]*sizeSummary{}
	get := func(n int) *sizeSummary {
		if by[n] == nil {
			by[n] = &sizeSummary{Size: n}
		}
		return by[n]
	}
	// The ceiling of a size is its best strategy — the one with the highest median over the
	// repetitions, not the best of each repetition, which would favour the ceiling by picking
	// the luckiest of several noisy measurements.
	byStrategy := map[int]map[string][]Ceiling{}
	for _, c := range r.Ceiling {
		if c.Err != "" {
			continue
		}
		if byStrategy[c.Records] == nil {
			byStrategy[c.Records] = map[string][]Ceiling{}
		}
		byStrategy[c.Records][c.Strategy] = append(byStrategy[c.Records][c.Strategy], c)
	}
	for n, strats := range byStrategy {
		for _, reads := range []bool{false, true} {
			best, bestRate := "", -1.0
			for name, cs := range strats {
				// A strategy measured in fewer repetitions (BulkWriter) competes with its median too.
				if m := median(ceilingRates(cs)); readsFirst(name) == reads && (m > bestRate || (m == bestRate && name < best)) {
					best, bestRate = name, m
				}
			}
			if reads {
				get(n).ReadCeiling = strats[best]
			} else {
				get(n).Ceiling = strats[best]
			}
		}
	}
	for _, run := range r.Runs {
		s := get(run.Records)
		byMode := map[string]*[]Run{ModeGuarded: &s.Guarded, ModeUnguarded: &s.Unguarded, ModeDuplicates: &s.Duplicates,
			ModeUpdated: &s.Updated, ModeSlowSource: &s.Slow, ModeLargest: &s.Largest}
		if runs := byMode[run.Mode]; runs != nil {
			*runs = append(*runs, run)
		}
	}
	out := make([]sizeSummary, 0, len(by))
	for _, s := range by {
		sort.Slice(s.Ceiling, func(i, j int) bool { return s.Ceiling[i].Rep < s.Ceiling[j].Rep })
		sort.Slice(s.ReadCeiling, func(i, j int) bool { return s.ReadCeiling[i].Rep < s.ReadCeiling[j].Rep })
		for _, runs := range s.all() {
			sort.Slice(runs, func(i, j int) bool { return runs[i].Rep < runs[j].Rep })
		}
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Size < out[j].Size })
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func rates(runs []Run) []float64 {
	var out []float64
	for _, r := range runs {
		out = append(out, r.RecordsPerSecond())
	}
	return out
}

func ceilingRates(cs []Ceiling) []float64 {
	var out []float64
	for _, c := range cs {
		out = append(out, c.RecordsPerSecond())
	}
	return out
}

func secs(runs []Run, f func(Run) time.Duration) []float64 {
	var out []float64
	for _, r := range runs {
		out = append(out, f(r).Seconds())
	}
	return out
}

// pairedRatio is the median, over repetitions measured side by side, of a[i] ÷ b[i]; with
// unequal counts, the ratio of the medians.
func pairedRatio(a, b []float64) float64 {
	if len(a) == 0 || len(b) == 0 {
		return math.NaN()
	}
	if len(a) != len(b) {
		return median(a) / median(b)
	}
	var rs []float64
	for i := range a {
		rs = append(rs, a[i]/b[i])
	}
	return median(rs)
}

// Headline is the report's headline: every ratio a goal is stated for.
type Headline struct {
	Sizes              []int
	PipelineVsCeiling  []float64 // per size
	PipelineVsRead     []float64 // per size: ÷ the second ceiling (the same documents read, then written)
	ReadCeiling        []float64 // per size: the second ceiling's median records/s
	WriteCeiling       []float64 // per size: the write-only ceiling's median records/s
	GuardedVsUnguarded []float64 // per size
	FirstImport        []float64 // per size, seconds (guarded median)
	DuplicateSize      int
	DuplicateOps       float64 // billed reads + writes per duplicate delivery
	DuplicateReads     float64
	DuplicateWrites    float64
	DuplicateRPCs      float64
	DuplicateSource    int64 // source calls made by duplicate deliveries
	Duplicates         int64 // duplicate deliveries measured
	SmallSize          int
	LargeSize          int
	TimeRatio          float64 // guarded time(large) ÷ time(small)
	RSSSmall, RSSLarge float64 // bytes, guarded median

	UpdatedSize    int
	UpdatedShare   float64 // of records updated during the window in that pass
	UpdatedVsPlain float64 // updated pass ÷ guarded at the same size, paired by repetition
	UpdatedAborts  int64   // aborted Firestore commits in the updated passes
	UpdatedRetries int64   // importer commits that met another writer (failed preconditions), retried

	Slow       Run     // the slow-source pass (zero when not run)
	SlowPages  int     // source pages it read
	SlowImport float64 // seconds: the guarded import time at that size (median elapsed)
	SlowGoal   float64 // seconds: GoalSlowSourceSlack × pages ÷ slices + SlowImport

	Longest   time.Duration // the longest delivery of any run
	LongestIn string        // its run and function
	Timeout   time.Duration // the function timeout it is judged against

	Largest Run // the largest-dataset pass (zero when not run)
}

// Headline computes the headline ratios.
func (r *Results) Headline() Headline {
	var h Headline
	ss := r.sizes()
	// Goals are judged at the sizes measured in repetitions; a size run once only draws the chart.
	for _, s := range ss {
		if len(s.Guarded) == 0 || (len(s.Guarded) < 2 && len(ss) > 2 && s.Size != ss[0].Size && s.Size != ss[len(ss)-1].Size) {
			continue
		}
		h.Sizes = append(h.Sizes, s.Size)
		h.PipelineVsCeiling = append(h.PipelineVsCeiling, pairedRatio(rates(s.Guarded), ceilingRates(s.Ceiling)))
		h.PipelineVsRead = append(h.PipelineVsRead, pairedRatio(rates(s.Guarded), ceilingRates(s.ReadCeiling)))
		h.ReadCeiling = append(h.ReadCeiling, median(ceilingRates(s.ReadCeiling)))
		h.WriteCeiling = append(h.WriteCeiling, median(ceilingRates(s.Ceiling)))
		h.GuardedVsUnguarded = append(h.GuardedVsUnguarded, pairedRatio(rates(s.Guarded), rates(s.Unguarded)))
		h.FirstImport = append(h.FirstImport, median(secs(s.Guarded, func(r Run) time.Duration { return r.FirstImport })))
	}
	var dup Counts
	for _, run := range r.Runs {
		if run.Mode == ModeDuplicates {
			dup.add(run.Stats.Class(Repeat))
			h.DuplicateSize = run.Records
		}
	}
	if dup.Deliveries > 0 {
		n := float64(dup.Deliveries)
		h.Duplicates = dup.Deliveries
		h.DuplicateReads, h.DuplicateWrites = float64(dup.Reads)/n, float64(dup.Writes)/n
		h.DuplicateOps = float64(dup.Ops()) / n
		h.DuplicateRPCs = float64(dup.RPCs) / n
		h.DuplicateSource = dup.SourceCalls
	}
	var withGuarded []sizeSummary
	for _, s := range ss {
		if len(s.Guarded) > 0 {
			withGuarded = append(withGuarded, s)
		}
	}
	if len(withGuarded) >= 2 {
		small, large := withGuarded[0], withGuarded[len(withGuarded)-1]
		h.SmallSize, h.LargeSize = small.Size, large.Size
		el := func(r Run) time.Duration { return r.Elapsed }
		h.TimeRatio = median(secs(large.Guarded, el)) / median(secs(small.Guarded, el))
		rss := func(runs []Run) float64 {
			var xs []float64
			for _, r := range runs {
				xs = append(xs, float64(r.PeakRSS))
			}
			return median(xs)
		}
		h.RSSSmall, h.RSSLarge = rss(small.Guarded), rss(large.Guarded)
	}
	for _, s := range ss {
		if len(s.Updated) > 0 {
			h.UpdatedSize, h.UpdatedShare = s.Size, r.Options.UpdatedShare
			h.UpdatedVsPlain = pairedRatio(rates(s.Updated), rates(s.Guarded))
			for _, r := range s.Updated {
				c := r.Stats.Sum()
				h.UpdatedAborts += aborted(c)
				h.UpdatedRetries += c.RPCErrors["FailedPrecondition"] + c.RPCErrors["AlreadyExists"]
			}
		}
		if len(s.Slow) > 0 {
			h.Slow = s.Slow[0]
			h.SlowPages = h.Slow.SourcePages
			h.SlowImport = median(secs(s.Guarded, func(r Run) time.Duration { return r.Elapsed }))
			if math.IsNaN(h.SlowImport) {
				h.SlowImport = 0
			}
			h.SlowGoal = GoalSlowSourceSlack*float64(h.SlowPages)/GoalSlowSourceSlices + h.SlowImport
		}
		if len(s.Largest) > 0 {
			h.Largest = s.Largest[0]
		}
		for _, runs := range s.all() {
			for _, r := range runs {
				if r.Longest > h.Longest {
					h.Longest, h.LongestIn = r.Longest, fmt.Sprintf("%s %s #%d, %s", r.Mode, sizeName(r.Records), r.Rep, r.LongestIn)
				}
			}
		}
	}
	h.Timeout = config.Default().Timeout
	return h
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func pct(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.0f %%", 100*x)
}

func sizeName(n int) string {
	if n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func mb(b float64) string { return fmt.Sprintf("%.0f MB", b/1e6) }

// goalRows returns the headline as (what, measured, goal, verdict) rows.
func (h Headline) goalRows() [][4]string {
	var rows [][4]string
	for i, n := range h.Sizes {
		rows = append(rows, [4]string{
			fmt.Sprintf("Pipeline ÷ raw ceiling, %s records", sizeName(n)), pct(h.PipelineVsCeiling[i]),
			"≥ " + pct(GoalPipelineVsCeiling), verdict(h.PipelineVsCeiling[i] >= GoalPipelineVsCeiling)})
	}
	for i, n := range h.Sizes {
		if math.IsNaN(h.PipelineVsRead[i]) {
			continue
		}
		rows = append(rows, [4]string{
			fmt.Sprintf("Pipeline ÷ read-and-write ceiling, %s records (second ceiling %s records/s against %s write-only)", sizeName(n), f0(h.ReadCeiling[i]), f0(h.WriteCeiling[i])),
			pct(h.PipelineVsRead[i]), "", ""})
	}
	for i, n := range h.Sizes {
		if math.IsNaN(h.GuardedVsUnguarded[i]) {
			continue
		}
		rows = append(rows, [4]string{
			fmt.Sprintf("Guarded ÷ unguarded, %s records", sizeName(n)), pct(h.GuardedVsUnguarded[i]),
			"≥ " + pct(GoalGuardedVsUnguarded), verdict(h.GuardedVsUnguarded[i] >= GoalGuardedVsUnguarded)})
	}
	if h.Duplicates > 0 {
		rows = append(rows, [4]string{
			fmt.Sprintf("Firestore operations per duplicate delivery (%d duplicates, %s records)", h.Duplicates, sizeName(h.DuplicateSize)),
			fmt.Sprintf("%.2f billed (%.2f reads + %.2f writes); %.2f RPCs", h.DuplicateOps, h.DuplicateReads, h.DuplicateWrites, h.DuplicateRPCs),
			fmt.Sprintf("≤ %d", GoalDuplicateOps), verdict(h.DuplicateOps <= GoalDuplicateOps && h.DuplicateRPCs <= GoalDuplicateOps)})
		rows = append(rows, [4]string{"Source API calls by duplicate deliveries", fmt.Sprint(h.DuplicateSource), "0", verdict(h.DuplicateSource == 0)})
	}
	if h.UpdatedSize > 0 {
		rows = append(rows, [4]string{
			fmt.Sprintf("With %s of records updated in the window ÷ without, %s records", pct(h.UpdatedShare), sizeName(h.UpdatedSize)),
			pct(h.UpdatedVsPlain), "≥ " + pct(GoalUpdatedVsPlain), verdict(h.UpdatedVsPlain >= GoalUpdatedVsPlain)})
	}
	if len(h.FirstImport) > 0 {
		worst, at := 0.0, 0
		for i, x := range h.FirstImport {
			if x >= worst {
				worst, at = x, h.Sizes[i]
			}
		}
		rows = append(rows, [4]string{"Tick → first imported record, slowest size", fmt.Sprintf("%.2f s (%s records)", worst, sizeName(at)),
			fmt.Sprintf("≤ %.0f s at every size", GoalFirstImport), verdict(worst <= GoalFirstImport)})
	}
	if h.Slow.Records > 0 {
		rows = append(rows, [4]string{
			fmt.Sprintf("Source at 1 s per 2,000-row page, %s records (%d pages)", sizeName(h.Slow.Records), h.SlowPages),
			fmt.Sprintf("%.1f s", h.Slow.Elapsed.Seconds()),
			fmt.Sprintf("≤ %.1f s (1.3 × pages ÷ %d + %.1f s import)", h.SlowGoal, GoalSlowSourceSlices, h.SlowImport),
			verdict(h.Slow.Elapsed.Seconds() <= h.SlowGoal)})
	}
	if h.Longest > 0 {
		rows = append(rows, [4]string{"Longest delivery, any run (" + h.LongestIn + ")", fmt.Sprintf("%.1f s", h.Longest.Seconds()),
			fmt.Sprintf("≤ %s of the %v timeout", pct(GoalLongestDelivery), h.Timeout),
			verdict(h.Longest.Seconds() <= GoalLongestDelivery*h.Timeout.Seconds())})
	}
	if h.LargeSize > 0 {
		want := GoalLinear * float64(h.LargeSize) / float64(h.SmallSize)
		rows = append(rows, [4]string{
			fmt.Sprintf("Time for %s ÷ time for %s (tick → COMPLETED)", sizeName(h.LargeSize), sizeName(h.SmallSize)),
			fmt.Sprintf("%.1f×", h.TimeRatio), fmt.Sprintf("≤ %.0f× (linear)", want), verdict(h.TimeRatio <= want)})
		rows = append(rows, [4]string{
			fmt.Sprintf("Functions peak RSS, %s vs %s records", sizeName(h.LargeSize), sizeName(h.SmallSize)),
			fmt.Sprintf("%s vs %s (%.2f×)", mb(h.RSSLarge), mb(h.RSSSmall), h.RSSLarge/h.RSSSmall),
			fmt.Sprintf("bounded (≤ %.1f×)", GoalMemoryGrowth), verdict(h.RSSLarge/h.RSSSmall <= GoalMemoryGrowth)})
	}
	return rows
}

// WriteHeadline prints the headline ratios.
func (r *Results) WriteHeadline(w io.Writer) {
	h := r.Headline()
	fmt.Fprintf(w, "\n== oncesync bench: headline (full report in %s) ==\n", filepath.Join(r.Options.Out, ReportFile))
	for _, row := range append(h.goalRows(), r.tenantGoalRows()...) {
		fmt.Fprintf(w, "%-72s %-40s goal %-18s %s\n", row[0], row[1], row[2], strings.Trim(row[3], "*"))
	}
	for i, n := range h.Sizes {
		fmt.Fprintf(w, "%-72s %.2f s\n", fmt.Sprintf("Tick → first imported record, %s records", sizeName(n)), h.FirstImport[i])
	}
	fmt.Fprintf(w, "%-72s %v\n", "Benchmark wall time", r.Finished.Sub(r.Started).Round(time.Second))
}

// WriteReport writes REPORT.md, the chart and the raw results into res.Options.Out.
func WriteReport(res *Results) error {
	out := res.Options.Out
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, ResultsFile), b, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, ChartFile), []byte(res.chart()), 0o644); err != nil {
		return err
	}
	var md bytes.Buffer
	res.markdown(&md)
	return os.WriteFile(filepath.Join(out, ReportFile), md.Bytes(), 0o644)
}

type table struct {
	head []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t table) write(w io.Writer) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(t.head, " | "))
	seps := make([]string, len(t.head))
	for i := range seps {
		seps[i] = "---"
		if i > 0 {
			seps[i] = "--:"
		}
	}
	fmt.Fprintf(w, "|%s|\n", strings.Join(seps, "|"))
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Fprintln(w)
}

func f0(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.0f", x)
}

func f2(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.2f", x)
}

func dur(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// cpuCell formats a run's CPU by process as "functions 0.3, firestore 1.1, …".
func cpuCell(c CPU) string {
	short := map[string]string{
		"functions": "fn", "firestore emulator": "fs", "pubsub emulator": "ps",
		"bench (source, Eventarc)": "bench", "bench (client)": "bench", Other: "other",
	}
	var parts []string
	for i, n := range c.Names {
		name := short[n]
		if name == "" {
			name = n
		}
		parts = append(parts, fmt.Sprintf("%s %.2f", name, c.Cores[i]))
	}
	return strings.Join(parts, ", ")
}

func aborted(c Counts) int64 { return c.RPCErrors["Aborted"] }

func (res *Results) markdown(w io.Writer) {
	o := res.Options
	m := res.Machine
	h := res.Headline()
	ss := res.sizes()

	fmt.Fprintf(w, "# oncesync benchmark\n\n")
	fmt.Fprintf(w, "Generated by `make bench` (`oncesync bench --out %s`) on %s, commit `%s`; the whole run took %v. "+
		"Every number below comes from that run; `%s` holds them all.\n\n",
		o.Out, res.Started.UTC().Format("2006-01-02 15:04 MST"), orUnknown(m.Commit), res.Finished.Sub(res.Started).Round(time.Second), ResultsFile)
	fmt.Fprintf(w, "**Machine:** %s, %d logical CPUs, %.1f GB RAM, Linux %s; %s; %s; %s.\n\n",
		orUnknown(m.CPU), m.Cores, m.MemoryGB, orUnknown(m.Kernel), m.Go, orUnknown(m.Java), orUnknown(m.Emulators))
	fmt.Fprintf(w, "**Setup:** the real Firestore and Pub/Sub emulators — %d fresh pairs in turn, each warmed up by a %s-record "+
		"Job and %s records written straight before it measures anything, each measurement in a project of its own; the "+
		"fixture Salesforce; the four functions (an importer per lane) in their own process served by the functions framework (`oncesync run "+
		"--bench`: the production wiring with a counting Firestore client); the local Eventarc with %d deliveries in flight "+
		"per function. Generated-ID target (engagement record + unique index entry per record), default chunk size %d, page "+
		"size %d, %.0f %% of records updated during the window. Sizes %s: up to %s repeated %d×, the largest %d×, the others "+
		"once; ceiling, guarded and unguarded run back to back in each repetition (guarded and unguarded alternating which "+
		"goes first), so every ratio compares runs measured side by side, and medians are reported.\n\n",
		res.Sessions, sizeName(o.WarmUp), sizeName(o.WarmUp), o.Concurrency, config.Default().ChunkSize, config.Default().PageSize,
		100*o.Updated, joinSizes(o.Sizes), sizeName(o.RepsUpTo), o.Reps, o.LargeReps)

	fmt.Fprintf(w, "## Headline\n\n")
	t := table{head: []string{"", "measured", "goal", ""}}
	for _, r := range append(h.goalRows(), res.tenantGoalRows()...) {
		t.add(r[0], r[1], r[2], r[3])
	}
	for i, n := range h.Sizes {
		t.add(fmt.Sprintf("Tick → first imported record, %s records", sizeName(n)), fmt.Sprintf("%.2f s", h.FirstImport[i]), "", "")
	}
	t.write(w)

	fmt.Fprintf(w, "## Throughput\n\n![records/s by dataset size](%s)\n\n", ChartFile)
	t = table{head: []string{"records", "raw ceiling (best batching)", "read-and-write ceiling", "unguarded", "guarded", "duplicates ×2", "guarded ÷ ceiling", "guarded ÷ read-and-write", "guarded ÷ unguarded", "guarded tick → COMPLETED", "tick → first import"}}
	for _, s := range ss {
		cell, rcell := "–", "–"
		if len(s.Ceiling) > 0 {
			cell = fmt.Sprintf("%s (%s)", f0(median(ceilingRates(s.Ceiling))), bestStrategy(s.Ceiling))
		}
		if len(s.ReadCeiling) > 0 {
			rcell = fmt.Sprintf("%s (%s)", f0(median(ceilingRates(s.ReadCeiling))), bestStrategy(s.ReadCeiling))
		}
		t.add(sizeName(s.Size), cell, rcell, medianRate(s.Unguarded), medianRate(s.Guarded), medianRate(s.Duplicates),
			pct(pairedRatio(rates(s.Guarded), ceilingRates(s.Ceiling))), pct(pairedRatio(rates(s.Guarded), ceilingRates(s.ReadCeiling))), pct(pairedRatio(rates(s.Guarded), rates(s.Unguarded))),
			medianSecs(s.Guarded, func(r Run) time.Duration { return r.Elapsed }),
			medianSecs(s.Guarded, func(r Run) time.Duration { return r.FirstImport }))
	}
	t.write(w)
	fmt.Fprintf(w, "Records/s, median of the repetitions. The ceiling writes the same documents the pipeline's target writes for each "+
		"record — the engagementIndex entry and the engagementsGen record, two documents — straight into Firestore, with no chunk "+
		"plan, no transaction and no delivery, with the client's batching strategy that has the best median at that size (every "+
		"strategy's numbers are in the appendix). The read-and-write ceiling is the second: the same documents, each batch first reading its "+
		"records' index entries in one call (what any correct import reads for its version check), then writing with preconditions "+
		"(create only if absent), at its best batching.\n\n")

	res.costSection(w, ss)
	res.duplicateSection(w, h, ss)
	res.timeSection(w, ss)
	res.tenantSection(w)
	res.goalsSection(w, h, ss)
	res.projection(w, ss)
	res.closing(w, h)
	res.appendix(w)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func joinSizes(ns []int) string {
	var parts []string
	for _, n := range ns {
		parts = append(parts, sizeName(n))
	}
	return strings.Join(parts, ", ")
}

func medianRate(runs []Run) string { return f0(median(rates(runs))) }

func medianSecs(runs []Run, f func(Run) time.Duration) string {
	x := median(secs(runs, f))
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.2f s", x)
}

func bestStrategy(cs []Ceiling) string {
	if len(cs) == 0 {
		return ""
	}
	return cs[0].Strategy
}

// costSection: per-record costs of every mode and size.
func (res *Results) costSection(w io.Writer, ss []sizeSummary) {
	fmt.Fprintf(w, "## Cost per record\n\n")
	fmt.Fprintf(w, "Counted in the functions process by a gRPC client interceptor on its Firestore client (documents read, writes "+
		"committed, RPCs including failed ones), summed over every delivery of the run, divided by the Job's records; source "+
		"calls as the fixture Salesforce served them. Medians over repetitions.\n\n")
	t := table{head: []string{"mode", "records", "reads / record", "writes / record", "RPCs / record", "source requests / Job", "searches / Job", "deliveries", "lock timeouts (Aborted)", "peak RSS (functions)"}}
	for _, s := range ss {
		for _, g := range []struct {
			mode string
			runs []Run
		}{{ModeGuarded, s.Guarded}, {ModeUnguarded, s.Unguarded}, {ModeDuplicates, s.Duplicates}} {
			if len(g.runs) == 0 {
				continue
			}
			per := func(f func(Counts) int64) string {
				var xs []float64
				for _, r := range g.runs {
					xs = append(xs, float64(f(r.Stats.Sum()))/float64(r.Records))
				}
				return f2(median(xs))
			}
			med := func(f func(Run) float64) float64 {
				var xs []float64
				for _, r := range g.runs {
					xs = append(xs, f(r))
				}
				return median(xs)
			}
			t.add(g.mode, sizeName(s.Size),
				per(func(c Counts) int64 { return c.Reads }), per(func(c Counts) int64 { return c.Writes }), per(func(c Counts) int64 { return c.RPCs }),
				f0(med(func(r Run) float64 { return float64(r.SourceRequests) })), f0(med(func(r Run) float64 { return float64(r.SourceSearches) })),
				f0(med(func(r Run) float64 { return float64(r.Stats.Sum().Deliveries) })),
				f0(med(func(r Run) float64 { return float64(aborted(r.Stats.Sum())) })),
				mb(med(func(r Run) float64 { return float64(r.PeakRSS) })))
		}
	}
	t.write(w)
	// The guard's own cost, per chunk, from the largest guarded and unguarded runs.
	if len(ss) == 0 {
		return // a run of other parts only (--only)
	}
	if s := ss[len(ss)-1]; len(s.Guarded) > 0 && len(s.Unguarded) > 0 {
		g, u := s.Guarded[0].Stats, s.Unguarded[0].Stats
		chunks := float64(s.Guarded[0].Chunks)
		fmt.Fprintf(w, "What the guard costs on the happy path (%s records, %.0f chunks): %+.0f reads, %+.0f writes and %+.0f RPCs "+
			"over the whole Job — per chunk %+.2f reads, %+.2f writes, %+.2f RPCs (the key's create-if-absent claim and its "+
			"completion; the expander's fence adds one write per chunk of the plan).\n\n",
			sizeName(s.Size), chunks, float64(g.Sum().Reads-u.Sum().Reads), float64(g.Sum().Writes-u.Sum().Writes), float64(g.Sum().RPCs-u.Sum().RPCs),
			float64(g.Sum().Reads-u.Sum().Reads)/chunks, float64(g.Sum().Writes-u.Sum().Writes)/chunks, float64(g.Sum().RPCs-u.Sum().RPCs)/chunks)
	}
}

// duplicateSection: the price of suppression.
func (res *Results) duplicateSection(w io.Writer, h Headline, ss []sizeSummary) {
	var dups []Run
	for _, r := range res.Runs {
		if r.Mode == ModeDuplicates {
			dups = append(dups, r)
		}
	}
	if len(dups) == 0 {
		return
	}
	fmt.Fprintf(w, "## The price of suppression: every message delivered twice\n\n")
	fmt.Fprintf(w, "Every message is POSTed a second time 2 s after its first delivery starts (the incident's pattern), ticks, "+
		"expand and chunk messages alike. A *duplicate delivery* is every POST of a message ID after its first to the same "+
		"function; its Firestore calls are attributed to it by the context the interceptor sees.\n\n")
	t := table{head: []string{"function", "duplicate deliveries", "answered 500 (redeliver)", "reads / dup", "writes / dup", "RPCs / dup", "source calls", "failed RPCs (expected)"}}
	var all Counts
	for _, fn := range config.EntryPoints {
		var c Counts
		for _, r := range dups {
			c.add(r.Stats.Counts[fn+"/"+Repeat])
		}
		all.add(c)
		if c.Deliveries == 0 {
			continue
		}
		n := float64(c.Deliveries)
		t.add(fn, fmt.Sprint(c.Deliveries), fmt.Sprint(c.Failed), f2(float64(c.Reads)/n), f2(float64(c.Writes)/n), f2(float64(c.RPCs)/n),
			fmt.Sprint(c.SourceCalls), errorsCell(c.RPCErrors))
	}
	if all.Deliveries > 0 {
		n := float64(all.Deliveries)
		t.add("**all**", fmt.Sprint(all.Deliveries), fmt.Sprint(all.Failed), f2(float64(all.Reads)/n), f2(float64(all.Writes)/n), f2(float64(all.RPCs)/n),
			fmt.Sprint(all.SourceCalls), errorsCell(all.RPCErrors))
	}
	t.write(w)
	fmt.Fprintf(w, "A duplicate of finished work costs its key's failed create (an `AlreadyExists` RPC, not a billed write), one "+
		"read of the key and one write to its duplicate counter: %.2f billed operations and %.2f RPCs on average here, and no "+
		"source call. A duplicate that arrives while the original is still running is answered 500 so that Pub/Sub redelivers "+
		"it later (the original may have crashed); these injected copies are not redelivered, as real duplicates would be.\n\n",
		h.DuplicateOps, h.DuplicateRPCs)
	for _, s := range ss {
		if len(s.Duplicates) == 0 || len(s.Guarded) == 0 {
			continue
		}
		fmt.Fprintf(w, "Throughput with every message doubled, %s records: %s records/s vs %s guarded (%s), the Job "+
			"completing in %s vs %s.\n\n", sizeName(s.Size), medianRate(s.Duplicates), medianRate(s.Guarded),
			pct(median(rates(s.Duplicates))/median(rates(s.Guarded))),
			medianSecs(s.Duplicates, func(r Run) time.Duration { return r.Elapsed }), medianSecs(s.Guarded, func(r Run) time.Duration { return r.Elapsed }))
	}
}

func errorsCell(m map[string]int64) string {
	if len(m) == 0 {
		return "–"
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// timeSection: where the time of the largest guarded run goes.
func (res *Results) timeSection(w io.Writer, ss []sizeSummary) {
	fmt.Fprintf(w, "## Where the time goes\n\n")
	// With streaming publication imports start long before the plan is complete: the phases
	// overlap, so each column is measured from the tick.
	t := table{head: []string{"run", "tick → first import", "tick → plan complete", "plan complete → COMPLETED", "records/s (tick → COMPLETED)", "importer busy / chunk", "CPU during the run (cores)"}}
	for _, s := range ss {
		for _, runs := range s.all() {
			for _, r := range runs {
				imp := r.Stats.Imports()
				busy := "–"
				if imp.Deliveries > 0 {
					busy = fmt.Sprintf("%.0f ms", imp.Busy.Seconds()*1000/float64(imp.Deliveries))
				}
				t.add(fmt.Sprintf("%s %s #%d", r.Mode, sizeName(r.Records), r.Rep), dur(r.FirstImport), dur(r.Planned), dur(r.Elapsed-r.Planned),
					f0(float64(r.Records)/r.Elapsed.Seconds()), busy, cpuCell(r.CPU))
			}
		}
	}
	t.write(w)
	fmt.Fprintf(w, "CPU: fn = the functions process, fs = the Firestore emulator, ps = the Pub/Sub emulator, bench = this "+
		"process (fixture Salesforce, local Eventarc, polling), other = every other process on the machine (other work "+
		"running concurrently shows up here). %d logical CPUs in all.\n\n", res.Machine.Cores)

	s := ss[len(ss)-1]
	if len(s.Guarded) == 0 {
		return
	}
	r := s.Guarded[0]
	imp := r.Stats.Imports()
	if imp.Deliveries > 0 {
		fmt.Fprintf(w, "Inside an importer delivery (%s records guarded, %d chunks): time per chunk spent in each Firestore call, "+
			"summed over the calls it makes (the rest is the function's own work and the Pub/Sub and HTTP hops).\n\n",
			sizeName(r.Records), imp.Deliveries)
		t := table{head: []string{"Firestore method", "ms per chunk", "share of the delivery"}}
		var methods []string
		for k := range imp.RPCTime {
			methods = append(methods, k)
		}
		sort.Slice(methods, func(i, j int) bool { return imp.RPCTime[methods[i]] > imp.RPCTime[methods[j]] })
		for _, k := range methods {
			d := imp.RPCTime[k]
			t.add(k, fmt.Sprintf("%.0f", d.Seconds()*1000/float64(imp.Deliveries)), pct(d.Seconds()/imp.Busy.Seconds()))
		}
		t.add("delivery in all", fmt.Sprintf("%.0f", imp.Busy.Seconds()*1000/float64(imp.Deliveries)), "100 %")
		t.write(w)
	}
	for _, run := range append(s.Guarded, s.Unguarded...) {
		if run.Profile == "" {
			continue
		}
		top := pprofTop(res.Options.Binary, run.Profile)
		if top == "" {
			continue
		}
		fmt.Fprintf(w, "CPU profile of the functions process during %s %s (`go tool pprof -top`, kept in `%s`):\n\n```\n%s```\n\n",
			run.Mode, sizeName(run.Records), run.Profile, top)
	}
}

// pprofTop summarises a CPU profile with `go tool pprof`, or returns "" when it cannot.
func pprofTop(binary, profile string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=12", binary, profile).Output()
	if err != nil {
		return ""
	}
	var keep []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "File:") || strings.HasPrefix(line, "Build ID:") || strings.HasPrefix(line, "Time:") ||
			strings.HasPrefix(line, "Type:") || strings.HasPrefix(line, "Dropped") || strings.HasPrefix(line, "Showing top") || line == "" {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n") + "\n"
}

// appendix: every ceiling measurement and every run.
func (res *Results) appendix(w io.Writer) {
	fmt.Fprintf(w, "## Appendix: every measurement\n\n### Raw ceiling\n\n")
	t := table{head: []string{"records", "repetition", "strategy", "time", "records/s", "documents/s", "writes counted", "CPU (cores)"}}
	for _, c := range append(append([]Ceiling(nil), res.WarmUpCeiling...), res.Ceiling...) {
		rep := fmt.Sprint(c.Rep)
		if c.Rep == 0 {
			rep = "warm-up"
		}
		rate := f0(c.RecordsPerSecond())
		if c.Err != "" {
			rate = "failed: " + c.Err
		}
		t.add(sizeName(c.Records), rep, c.Strategy, dur(c.Elapsed), rate, f0(c.DocsPerSecond()), fmt.Sprint(c.Writes), cpuCell(c.CPU))
	}
	t.write(w)
	fmt.Fprintf(w, "BulkWriter is measured once, at the smallest size: the Go client's BulkWriter sends BatchWrite requests of "+
		"20 writes each, at most 500 requests/s, and on the emulator the per-request cost keeps it far below a WriteBatch of "+
		"500 — larger sizes would only take longer.\n\n")
	fmt.Fprintf(w, "### Pipeline runs\n\n")
	t = table{head: []string{"run", "records", "tick → COMPLETED", "records/s", "first import", "reads", "writes", "RPCs", "deliveries (failed)", "POSTs (copies)", "source requests", "peak RSS", "imported / extra"}}
	for _, r := range append(append([]Run(nil), res.WarmUp...), res.Runs...) {
		c := r.Stats.Sum()
		t.add(fmt.Sprintf("%s #%d", r.Mode, r.Rep), fmt.Sprint(r.Records), dur(r.Elapsed), f0(r.RecordsPerSecond()), dur(r.FirstImport),
			fmt.Sprint(c.Reads), fmt.Sprint(c.Writes), fmt.Sprint(c.RPCs), fmt.Sprintf("%d (%d)", c.Deliveries, c.Failed),
			fmt.Sprintf("%d (%d)", r.Posts, r.Copies), fmt.Sprint(r.SourceRequests), mb(float64(r.PeakRSS)), fmt.Sprintf("%d / %d", r.Imported, r.Extra))
	}
	t.write(w)
	fmt.Fprintf(w, "The warm-up Jobs ran on cold emulators: the emulators' JVMs compile their hot paths during their first "+
		"~100,000 writes and are several times slower until then, which is why every measurement follows one.\n\n")
	fmt.Fprintf(w, "Reproduce: `make bench` (about %v here). `oncesync bench --help` lists the knobs (sizes, repetitions, "+
		"concurrency, warm-up, the share of updated records).\n", res.Finished.Sub(res.Started).Round(time.Minute))
}

// Rewrite renders the report again from a results file a benchmark wrote (after a change to the
// report's wording, say), into the results' own output directory, or into out when set.
func Rewrite(resultsFile, out string) (*Results, error) {
	b, err := os.ReadFile(resultsFile)
	if err != nil {
		return nil, err
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("bench: %s: %w", resultsFile, err)
	}
	if out != "" {
		res.Options.Out = out
	}
	if err := os.MkdirAll(res.Options.Out, 0o755); err != nil {
		return nil, err
	}
	return &res, WriteReport(&res)
}
