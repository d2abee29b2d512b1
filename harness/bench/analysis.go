package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/oncesync/oncesync/shared/config"
)

// medianRun returns the run of median elapsed time (the slower of the middle two).
func medianRun(runs []Run) (Run, bool) {
	if len(runs) == 0 {
		return Run{}, false
	}
	s := append([]Run(nil), runs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Elapsed < s[j].Elapsed })
	return s[len(s)/2], true
}

func largestWith(ss []sizeSummary, f func(sizeSummary) bool) (sizeSummary, bool) {
	for i := len(ss) - 1; i >= 0; i-- {
		if f(ss[i]) {
			return ss[i], true
		}
	}
	return sizeSummary{}, false
}

// goalsSection explains every goal: met or missed, and for a miss, what is the emulator's and what
// is ours, with the numbers of this run.
func (res *Results) goalsSection(w io.Writer, h Headline, ss []sizeSummary) {
	fmt.Fprintf(w, "## Goals: what was met, what was missed and why\n\n")
	large, ok := largestWith(ss, func(s sizeSummary) bool { return len(s.Guarded) > 0 })
	if !ok {
		fmt.Fprintf(w, "No guarded run completed.\n\n")
		return
	}
	r, _ := medianRun(large.Guarded)
	ceil := median(ceilingRates(large.Ceiling))
	ratio := pairedRatio(rates(large.Guarded), ceilingRates(large.Ceiling))
	imp := r.Stats.Imports()
	chunks := float64(max(imp.Deliveries, 1))
	perChunk := func(d time.Duration) float64 { return d.Seconds() * 1000 / chunks }

	// 1. Pipeline vs ceiling.
	fmt.Fprintf(w, "**Pipeline ≥ %s of the raw ceiling — %s at %s records (%s).** ", pct(GoalPipelineVsCeiling),
		strings.Trim(verdict(ratio >= GoalPipelineVsCeiling), "*"), sizeName(large.Size), pct(ratio))
	fmt.Fprintf(w, "The median %s guarded Job took %s; the ceiling writes the same records' documents in %.2f s. "+
		"The plan streams: each chunk's message is published as its fenced write commits, so the imports overlap the search "+
		"(tick → plan complete %s, tick → first import %s, tick → COMPLETED %s). A chunk import is one preconditioned batch "+
		"(no transaction, no lock) after its reads: %.1f Firestore RPCs per chunk (claim, Job read, chunk read, target reads, "+
		"commit, completion check, key completion) where the ceiling sends 2 batch commits for the same documents. Per chunk "+
		"the commit took %.0f ms, the reads (chunk and target documents) %.0f ms, the completion check's query %.0f ms. ",
		sizeName(r.Records), dur(r.Elapsed), float64(r.Records)/ceil, dur(r.Planned), dur(r.FirstImport), dur(r.Elapsed),
		float64(imp.RPCs)/chunks, perChunk(imp.RPCTime["Commit"]), perChunk(imp.RPCTime["BatchGetDocuments"]),
		perChunk(imp.RPCTime["RunQuery"]))
	cores := float64(res.Machine.Cores)
	if total := r.CPU.Total(); total >= 0.8*cores {
		fmt.Fprintf(w, "This machine's CPUs were the limit: %.2f of %d busy during the Job (Firestore emulator %.2f, functions %.2f, "+
			"Pub/Sub emulator %.2f, bench process %.2f, other processes %.2f). The ceiling has the same two cores to itself, "+
			"with no functions process, no Pub/Sub and no source beside the store; every RPC the pipeline adds per chunk is "+
			"paid in emulator CPU here (on Firestore, the functions' calls cost no CPU of theirs).\n\n",
			total, res.Machine.Cores, r.CPU.Of("firestore emulator"), r.CPU.Of("functions"), r.CPU.Of("pubsub emulator"),
			r.CPU.Of("bench (source, Eventarc)"), r.CPU.Of(Other))
	} else {
		fmt.Fprintf(w, "This machine's CPUs were not the limit (%.2f of %d busy: Firestore emulator %.2f, functions %.2f, other %.2f): "+
			"the importers wait on the emulator's latency.\n\n",
			total, res.Machine.Cores, r.CPU.Of("firestore emulator"), r.CPU.Of("functions"), r.CPU.Of(Other))
	}
	if other := r.CPU.Of(Other); other > 0.3 {
		fmt.Fprintf(w, "Other processes used %.2f CPUs during that Job: this machine was shared, and its numbers are noisier for it.\n\n", other)
	}

	// 2. Guarded vs unguarded.
	gu := pairedRatio(rates(large.Guarded), rates(large.Unguarded))
	if !math.IsNaN(gu) && len(large.Unguarded) > 0 {
		g, u := large.Guarded[0].Stats.Sum(), large.Unguarded[0].Stats.Sum()
		n := float64(max(large.Guarded[0].Chunks, 1))
		var sizes []string
		for _, s := range ss {
			if x := pairedRatio(rates(s.Guarded), rates(s.Unguarded)); !math.IsNaN(x) && slices.Contains(h.Sizes, s.Size) {
				sizes = append(sizes, fmt.Sprintf("%s at %s", pct(x), sizeName(s.Size)))
			}
		}
		fmt.Fprintf(w, "**Guarded ≥ %s of unguarded: %s.** The guard adds %.1f RPCs and %.1f writes per chunk (the key's "+
			"create-if-absent claim and its completion, and the fence on each plan write) to a chunk that costs ~%.0f RPCs and "+
			"~%.0f writes without it: constant per chunk, so its share cannot grow with the dataset. Where a ratio misses, the "+
			"repetitions disagree more than the guard costs; the operation counts, which are exact, are the better measure.\n\n",
			pct(GoalGuardedVsUnguarded), strings.Join(sizes, "; "),
			float64(g.RPCs-u.RPCs)/n, float64(g.Writes-u.Writes)/n, float64(u.RPCs)/n, float64(u.Writes)/n)
	}

	// 3. Updated records.
	if h.UpdatedSize > 0 {
		fmt.Fprintf(w, "**With %s of records updated during the window ≥ %s of the same size without — %s (%s at %s).** An updated "+
			"record is in the window twice, and its two versions land in two chunks. Chunk imports take no locks: each commits one "+
			"batch conditioned on the documents as read, so two chunks that share a record only meet when their commits overlap, "+
			"and then the later one fails its precondition and is retried on fresh reads (%d such retries in the updated passes; %d "+
			"aborted commits). Before, each import was a read-write transaction that locked its records, and the emulator's "+
			"pessimistic locks turned every overlap into a 2 s lock timeout (`make demo`: 747 records/s with 56 timeouts).\n\n",
			pct(h.UpdatedShare), pct(GoalUpdatedVsPlain), strings.Trim(verdict(h.UpdatedVsPlain >= GoalUpdatedVsPlain), "*"),
			pct(h.UpdatedVsPlain), sizeName(h.UpdatedSize), h.UpdatedRetries, h.UpdatedAborts)
	}

	// 4. First import.
	if len(h.FirstImport) > 0 {
		var at []string
		for i, n := range h.Sizes {
			at = append(at, fmt.Sprintf("%.2f s at %s", h.FirstImport[i], sizeName(n)))
		}
		worst := slices.Max(h.FirstImport)
		fmt.Fprintf(w, "**Tick → first import ≤ %.0f s at every size — %s (%s).** The chunks of the first source page are committed "+
			"and their messages published at once, so the first import waits for one page, one fenced write and one delivery, "+
			"whatever the Job's size.\n\n", GoalFirstImport, strings.Trim(verdict(worst <= GoalFirstImport), "*"), strings.Join(at, ", "))
	}

	// 5. Slow source.
	if h.Slow.Records > 0 {
		s := h.Slow
		fmt.Fprintf(w, "**Source at 1 s per 2,000-row page: %s records within 1.3 × (pages ÷ %d) s + import — %s (%.1f s against "+
			"%.1f s).** The source served %d pages and %d count queries (%d requests refused for the per-org limit of %d "+
			"concurrent queries). The first expansion measures the window with the aggregate query and cuts it into slices "+
			"of about `ONCESYNC_SLICE_ROWS` rows (%d here), a multiple of the %d searched at once (`ONCESYNC_SEARCH_CONCURRENCY`); "+
			"each slice is searched by its own delivery, and each finished slice starts the next. Slice 0's first page took "+
			"over `ONCESYNC_PARALLEL_AFTER` (%v) to arrive, so the Job searched with all %d searches at once and the floor is "+
			"pages ÷ %d (the fast source of every other run is searched one slice after another: there the imports bound the "+
			"Job, and parallel searches only take CPU from them). The imports, streamed, keep up (tick → first import %s, the last chunk imported %s after "+
			"the plan completed).\n\n",
			sizeName(s.Records), GoalSlowSourceSlices, strings.Trim(verdict(s.Elapsed.Seconds() <= h.SlowGoal), "*"),
			s.Elapsed.Seconds(), h.SlowGoal, h.SlowPages, s.SourceCounts, s.SourceThrottled, res.Options.SlowSource.MaxConcurrent,
			config.Default().SliceRows, config.Default().SearchSlots, config.Default().ParallelAfter, config.Default().SearchSlots,
			config.Default().SearchSlots, dur(s.FirstImport), dur(s.Elapsed-s.Planned))
	}

	// 6. Longest delivery.
	if h.Longest > 0 {
		budget := config.Default().Budget()
		fmt.Fprintf(w, "**No delivery longer than %s of the function timeout — %s (longest %.1f s: %s; limit %.0f s).** The "+
			"expander is the long one: it searches one slice of the window (about `ONCESYNC_SLICE_ROWS` rows). Past its time budget (%v, %d %% of the %v timeout, "+
			"`ONCESYNC_BUDGET_PERCENT` of `ONCESYNC_FUNCTION_TIMEOUT`, both set by terraform) it stops after the page it just "+
			"committed, hands its key off and publishes a continuation that resumes at once: no delivery can run past the "+
			"budget by more than one source page plus one plan write, and no Job waits out a lease. The chaos-free e2e test "+
			"`TestExpansionHandsOffToContinuations` runs Jobs through a chain of hand-offs.\n\n",
			pct(GoalLongestDelivery), strings.Trim(verdict(h.Longest.Seconds() <= GoalLongestDelivery*h.Timeout.Seconds()), "*"),
			h.Longest.Seconds(), h.LongestIn, GoalLongestDelivery*h.Timeout.Seconds(), budget, config.Default().BudgetPercent, h.Timeout)
	}

	// 7. Duplicates.
	if h.Duplicates > 0 {
		fmt.Fprintf(w, "**A duplicate delivery costs ≤ %d Firestore operations and 0 source calls — %s.** %d duplicate deliveries "+
			"cost %.2f reads + %.2f writes (%.2f RPCs, the failed create included) each, and made %d source calls.\n\n",
			GoalDuplicateOps, strings.Trim(verdict(h.DuplicateOps <= GoalDuplicateOps && h.DuplicateRPCs <= GoalDuplicateOps && h.DuplicateSource == 0), "*"),
			h.Duplicates, h.DuplicateReads, h.DuplicateWrites, h.DuplicateRPCs, h.DuplicateSource)
	}

	// 8. Linearity and memory.
	if h.LargeSize > 0 {
		want := GoalLinear * float64(h.LargeSize) / float64(h.SmallSize)
		small, _ := medianRun(ss[0].Guarded)
		fmt.Fprintf(w, "**%s records within %.0f× the time of %s — %s (%.1f×).** Per-record costs: %.2f reads and %.2f writes per "+
			"record at %s, %.2f and %.2f at %s. The completion check after each chunk is one Job read and a query for one open "+
			"chunk (`store.CompleteIfDone`), so its cost no longer grows with the Job.\n\n",
			sizeName(h.LargeSize), want, sizeName(h.SmallSize), strings.Trim(verdict(h.TimeRatio <= want), "*"), h.TimeRatio,
			perRecord(small.Stats.Sum().Reads, small.Records), perRecord(small.Stats.Sum().Writes, small.Records), sizeName(small.Records),
			perRecord(r.Stats.Sum().Reads, r.Records), perRecord(r.Stats.Sum().Writes, r.Records), sizeName(r.Records))
		fmt.Fprintf(w, "**Functions memory bounded by chunk and page size — %s (%s at %s, %s at %s).** The expander holds one "+
			"source page (≤ %d records), the chunks cut since its last plan write (≤ 16 chunks of %d records, ≤ 4 MB) and at "+
			"most 16 chunk publishes in flight; each importer delivery holds one chunk. Deployed, each delivery has an instance "+
			"of its own; here they share one process, so a Job whose slices are searched at once (the slow source: %s) holds "+
			"that many expansions.\n\n",
			strings.Trim(verdict(h.RSSLarge/h.RSSSmall <= GoalMemoryGrowth), "*"), mb(h.RSSSmall), sizeName(h.SmallSize), mb(h.RSSLarge),
			sizeName(h.LargeSize), config.Default().PageSize, config.Default().ChunkSize, mb(float64(h.Slow.PeakRSS)))
	}

	// 9. The largest dataset.
	if l := h.Largest; l.Records > 0 {
		fmt.Fprintf(w, "**The largest dataset: %s records** (%d chunks) in %s, %s records/s, first import after %s, functions peak "+
			"RSS %s, %.2f reads + %.2f writes per record, every record imported once: %v. How far the emulator goes: the "+
			"Firestore emulator keeps every document in its JVM heap and never frees a deleted one, and past a few million "+
			"documents in one process it spends its time in garbage collection (a first full run stalled there), so the "+
			"benchmark starts a fresh emulator pair every %s documents. One Job of %s records writes about %s documents "+
			"(records, index entries, chunks, keys), so a Job of about %s records is the most one emulator session takes; "+
			"this run measured %s.\n\n",
			sizeName(l.Records), l.Chunks, dur(l.Elapsed), f0(l.RecordsPerSecond()), dur(l.FirstImport), mb(float64(l.PeakRSS)),
			perRecord(l.Stats.Sum().Reads, l.Records), perRecord(l.Stats.Sum().Writes, l.Records), l.OK(),
			thousands(SessionDocs), sizeName(l.Records), thousands(float64(2*l.Records+3*l.Chunks)), thousands(SessionDocs/2), sizeName(l.Records))
	}
}

// rampSeconds is how long the 500/50/5 rule takes to let ops operations through: 500 ops/s at
// first, 50 % more every 5 minutes, up to max ops/s.
func rampSeconds(ops, max float64) float64 {
	rate, t := 500.0, 0.0
	for ops > 0 {
		step := math.Min(rate, max) * 300
		if ops <= step {
			return t + ops/math.Min(rate, max)
		}
		ops -= step
		t += 300
		rate *= 1.5
	}
	return t
}

// projection puts the measured per-record costs against real Firestore's documented limits and
// Salesforce's speed, for 1M and 10M records.
func (res *Results) projection(w io.Writer, ss []sizeSummary) {
	large, ok := largestWith(ss, func(s sizeSummary) bool { return len(s.Guarded) > 0 })
	if !ok {
		return
	}
	r, _ := medianRun(large.Guarded)
	cfg := config.Default()
	c := r.Stats.Sum()
	wpr, rpr := perRecord(c.Writes, r.Records), perRecord(c.Reads, r.Records)
	budget := cfg.Budget().Seconds()
	fmt.Fprintf(w, "## Production projection: 1M and 10M records (on paper)\n\n")
	fmt.Fprintf(w, "From this run's counts (%s records guarded: %.2f writes and %.2f reads per record), Firestore's documented "+
		"limits, and a Salesforce that serves a 2,000-row page in 0.5–2 s (1 s below). The emulator's speed does not carry "+
		"over; its operation counts do.\n\n", sizeName(r.Records), wpr, rpr)
	t := table{head: []string{"", "1M records", "10M records"}}
	row := func(what string, f func(n float64) string) { t.add(what, f(1e6), f(1e7)) }
	pages := func(n float64) float64 { return math.Ceil(n / float64(cfg.PageSize)) }
	row("chunks of 500 (each one batch of ~1,000 writes)", func(n float64) string { return thousands(n / float64(cfg.ChunkSize)) })
	row("Firestore writes / reads", func(n float64) string { return fmt.Sprintf("%.1f M / %.1f M", wpr*n/1e6, rpr*n/1e6) })
	slots := float64(cfg.SearchSlots)
	slicesOf := func(n float64) float64 {
		want := math.Ceil(n / float64(cfg.SliceRows))
		return math.Min(math.Ceil(want/slots)*slots, float64(cfg.MaxSlices))
	}
	row("source pages", func(n float64) string { return thousands(pages(n)) })
	row(fmt.Sprintf("slices (%d rows each, at most %d; %d searched at once)", cfg.SliceRows, cfg.MaxSlices, cfg.SearchSlots), func(n float64) string {
		return fmt.Sprint(slicesOf(n))
	})
	row("expansion at 1 s per page", func(n float64) string { return fmt.Sprintf("%.0f min", pages(n)/slots/60) })
	row(fmt.Sprintf("expander deliveries (hand-off every %.0f s)", budget), func(n float64) string {
		return fmt.Sprint(int(math.Ceil(pages(n) / budget)))
	})
	row("writes at a sustained 10,000 writes/s (warm)", func(n float64) string { return fmt.Sprintf("%.0f min", wpr*n/10_000/60) })
	row("writes at the 500/50/5 ramp (new database)", func(n float64) string { return fmt.Sprintf("%.0f min", rampSeconds(wpr*n, 10_000)/60) })
	row("Job, warm database (max of search and writes: they overlap)", func(n float64) string {
		return fmt.Sprintf("%.0f min", math.Max(pages(n)/slots, wpr*n/10_000)/60)
	})
	t.write(w)
	fmt.Fprintf(w, "What bounds it, in order:\n\n")
	fmt.Fprintf(w, "1. **The search.** Imports overlap the search and no delivery meets the 540 s timeout (a delivery hands "+
		"off every %.0f s), so a Job of any size completes, and records import from the first second. The window is searched "+
		"as slices, %d at a time: at 1 s per page, 1M records take %.0f minutes and 10M %.0f minutes of source time. More "+
		"at once (a tenant's `searchConcurrency`) divides it further, up to the org's limit on concurrent queries, which "+
		"every other integration of the org shares; %d slices at most per Job (`ONCESYNC_MAX_SLICES`) caps 10M records' "+
		"slices at %.0f k rows each.\n", budget, cfg.SearchSlots, pages(1e6)/slots/60, pages(1e7)/slots/60, cfg.MaxSlices, 1e7/slicesOf(1e7)/1000)
	fmt.Fprintf(w, "2. **Firestore's write ramp.** Nothing in the pipeline ramps on its own: the chunks in flight are importer "+
		"max instances × concurrency (terraform defaults: 20 × 1), each ~%d writes; that product keeps a new database inside "+
		"the 500/50/5 rule, and bounds throughput once it is warm.\n", 2*cfg.ChunkSize+1)
	fmt.Fprintf(w, "3. **Hotspots in the data model.** `importedAt` and `version` are exempt from single-field indexing in "+
		"`terraform/firestore.tf` (sequential values would cap each target collection near 500 writes/s).\n\n")
}

// closing is the closing note: the headline ratios and what changed to reach them.
func (res *Results) closing(w io.Writer, h Headline) {
	fmt.Fprintf(w, "## Closing note\n\n")
	var parts []string
	for i, n := range h.Sizes {
		parts = append(parts, fmt.Sprintf("%s of the raw ceiling at %s records (%s of unguarded)",
			pct(h.PipelineVsCeiling[i]), sizeName(n), pct(h.GuardedVsUnguarded[i])))
	}
	fmt.Fprintf(w, "In this run the pipeline ran at %s.\n\n", strings.Join(parts, "; "))
	fmt.Fprintf(w, "What changed since the previous report (32–35 %% of the ceiling, first import 0.57–2.83 s):\n\n")
	fmt.Fprintf(w, "- **Streaming plan.** Each chunk's message is published as its fenced write commits; the Job completes when its "+
		"plan is complete and no chunk is open, whichever finishes last (`store.CompleteIfDone`, asked by the expander after the "+
		"plan and by the importer after each chunk, each after its own write).\n")
	fmt.Fprintf(w, "- **No locks between chunk imports.** One preconditioned batch per chunk instead of a read-write transaction.\n")
	fmt.Fprintf(w, "- **Completion check of constant cost.** A one-entry query for an open chunk replaces the count of DONE chunks.\n")
	fmt.Fprintf(w, "- **A time budget per expansion delivery,** with continuations.\n")
	fmt.Fprintf(w, "- **Parallel sliced expansion.** The window measured with the source's aggregate query and cut into slices, "+
		"each searched by its own delivery under its own key, %d at a time.\n\n", config.Default().SearchSlots)
	fmt.Fprintf(w, "The rest of the gap to the ceiling is the emulator's: every request of the functions queues for the same "+
		"two CPUs as the store itself.\n\n")
}

// ceilingOf returns the ceiling measured in repetition rep, or the median of all when there is none.
func ceilingOf(cs []Ceiling, rep int) float64 {
	for _, c := range cs {
		if c.Rep == rep {
			return c.RecordsPerSecond()
		}
	}
	return median(ceilingRates(cs))
}
