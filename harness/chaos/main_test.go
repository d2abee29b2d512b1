package chaos

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"
)

var (
	checksFlag = flag.Int("chaos.checks", 0, "generated schedules for TestChaosPipeline (0: the default budget); the other properties scale with it")
	seedFlag   = flag.Uint64("chaos.seed", 0, "rapid seed every property starts from (0: random); replays a failure when given the seed it printed")
	shardsFlag = flag.Int("chaos.shards", 2, "parallel shards of each property; with -chaos.seed, shard 0 starts from the seed and the others from seeds derived from it")
)

// Default budget, sized so that CI's whole .ci/run stays under 30 minutes on 2 cores (see
// docs/testing.md): 400 main cases and 20 large ones. Each commit's seed draws new cases, so the
// cases add up across commits; a deeper run is make chaos CHAOS_CHECKS=N.
const (
	defaultPipelineChecks = 400
	largeDivisor          = 20  // TestChaosLargeDatasets runs pipeline checks / largeDivisor cases (at least 3)
	mutantChecks          = 600 // the most cases a mutant may take before rapid must have found it
)

func pipelineChecks() int {
	if *checksFlag > 0 {
		return *checksFlag
	}
	return defaultPipelineChecks
}

func largeChecks() int { return max(3, pipelineChecks()/largeDivisor) }

func TestMain(m *testing.M) {
	flag.Parse()
	if *seedFlag != 0 {
		if err := flag.Set("rapid.seed", strconv.FormatUint(*seedFlag, 10)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	start := time.Now()
	code := m.Run()
	report.print(os.Stdout, time.Since(start))
	os.Exit(code)
}

// withRapid runs f with rapid's checks set to n; a mutant run also has fail files and shrinking
// off (it only needs to know that a counterexample exists; rapid's block minimization ignores
// its shrink deadline, and a case here takes a second). Top-level tests of this package do not
// run in parallel, so setting rapid's flags between them is safe.
func withRapid(t *testing.T, n int, mutant bool, f func()) {
	t.Helper()
	set := func(name, v string) func() {
		old := flag.Lookup(name).Value.String()
		if err := flag.Set(name, v); err != nil {
			t.Fatal(err)
		}
		return func() { _ = flag.Set(name, old) }
	}
	defer set("rapid.checks", strconv.Itoa(n))()
	if mutant {
		defer set("rapid.nofailfile", "true")()
		defer set("rapid.shrinktime", "1ns")()
	}
	f()
}

// report is the suite's summary table, printed after the last test.
var report = &summary{props: map[string]*propStats{}, faults: map[string]int{}}

type summary struct {
	mu         sync.Mutex
	order      []string
	props      map[string]*propStats
	faults     map[string]int // injected in the properties that must hold (not the mutants')
	suppressed int
	violations int
	mutants    []mutantLine
	pinned     []string
	checked    checked // what the checkers looked at and found, in the properties that must hold
	conn       connSummary
}

// connSummary sums TestChaosConnections' cases (not its mutants').
type connSummary struct {
	cases, failing, violations int
	elapsed                    time.Duration
	connStats
}

func (s *summary) connection(mutant bool, st connStats, violations int, elapsed time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if mutant {
		return
	}
	c := &s.conn
	c.cases++
	c.violations += violations
	s.violations += violations
	if violations > 0 {
		c.failing++
	}
	c.elapsed += elapsed
	c.deliveries += st.deliveries
	c.jobs += st.jobs
	c.completed += st.completed
	c.refreshes += st.refreshes
	c.disconnects += st.disconnects
	c.reconnects += st.reconnects
	c.bursts += st.bursts
	c.secrets += st.secrets
	c.captured += st.captured
}

// checked sums what the checkers counted.
type checked struct {
	jobs, completed, chunks, rows, engagements, deadLetters, deadRows          int
	duplicates, lost, stale, extra, planErrors, counterErrors, searchOveruse   int
	openLeases, abandoned, chunkRewrites, planMismatches, importedCounterError int
	foreignDead, searchCounter                                                 int
}

func (c *checked) add(r *Result) {
	rep, x := r.Report, r.Extra
	c.jobs += rep.Jobs
	c.completed += rep.Completed
	c.chunks += rep.Chunks
	c.rows += rep.Rows
	c.engagements += rep.Engagements
	c.deadLetters += rep.DeadLetters
	c.deadRows += rep.DeadRows
	c.duplicates += rep.Duplicates
	c.lost += rep.Lost
	c.stale += rep.Stale
	c.extra += rep.Extra
	c.planErrors += rep.PlanErrors
	c.counterErrors += rep.CounterErrors
	c.searchOveruse += rep.SearchOveruse
	c.openLeases += rep.OpenLeases
	c.abandoned += rep.Abandoned
	c.chunkRewrites += x.ChunkRewrites
	c.planMismatches += x.PlanMismatches
	c.importedCounterError += x.CounterErrors
	c.foreignDead += x.ForeignDead
	c.searchCounter += x.SearchCounter
}

type propStats struct {
	name       string
	mutant     bool
	cases      int
	failing    int
	deliveries int
	rows       int
	faults     int
	elapsed    time.Duration
}

type mutantLine struct {
	name, caughtBy, detail string
	casesToFind            int
	found                  bool
}

// record adds one case's result.
func (s *summary) record(prop string, mutant bool, c *Case, r *Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.props[prop]
	if p == nil {
		p = &propStats{name: prop, mutant: mutant}
		s.props[prop] = p
		s.order = append(s.order, prop)
	}
	p.cases++
	p.deliveries += r.Stats.Deliveries
	p.elapsed += r.Elapsed
	for _, o := range c.Objects {
		p.rows += o.Rows
	}
	if len(r.Violations) > 0 {
		p.failing++
	}
	if mutant {
		return
	}
	for k, v := range r.Faults {
		s.faults[k] += v
		p.faults += v
	}
	s.suppressed += r.Suppressed
	s.violations += len(r.Violations)
	s.checked.add(r)
}

func (s *summary) mutant(m mutantLine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mutants = append(s.mutants, m)
}

func (s *summary) pin(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pinned = append(s.pinned, line)
}

func (s *summary) print(w io.Writer, wall time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.order) == 0 && len(s.pinned) == 0 && s.conn.cases == 0 && len(s.mutants) == 0 {
		return
	}
	fmt.Fprintf(w, "\n=== chaos summary (wall time %v) ===\n", wall.Round(time.Second))
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "property\tcases\tfailing\tdeliveries\tsource rows\tfaults\tcase time\t")
	total, totalFailing := 0, 0
	for _, name := range s.order {
		p := s.props[name]
		kind := ""
		if p.mutant {
			kind = " (mutant)"
		} else {
			total += p.cases
			totalFailing += p.failing
		}
		avg := time.Duration(0)
		if p.cases > 0 {
			avg = p.elapsed / time.Duration(p.cases)
		}
		fmt.Fprintf(tw, "%s%s\t%d\t%d\t%d\t%d\t%d\t%v avg\t\n", name, kind, p.cases, p.failing, p.deliveries, p.rows, p.faults, avg.Round(time.Millisecond))
	}
	tw.Flush()
	fmt.Fprintf(w, "\ncases run (properties that must hold): %d; failing: %d\n", total, totalFailing)
	fmt.Fprintf(w, "duplicate deliveries suppressed by the idempotency keys: %d\n", s.suppressed)
	fmt.Fprintf(w, "violations: %d\n", s.violations)
	c := s.checked
	fmt.Fprintf(w, "\ncheckers (after quiescence, every case):\n"+
		"  looked at: %d jobs (%d completed), %d chunks, %d planned rows, %d target records, %d dead letters (%d bad source rows)\n"+
		"  duplicated records (per tenant + object + external ID, both targets): %d\n"+
		"  lost records (in a window, never imported): %d; stale (not the newest version): %d; outside every window: %d\n"+
		"  chunk count != ceil(rows / chunk size): %d; chunk created twice: %d; plan != rows of the window: %d\n"+
		"  job counters != their chunks: %d; imported counts outside [records, versions]: %d; searches counter != searches run: %d\n"+
		"  jobs searching the source more than 1 + interrupted expansions: %d\n"+
		"  leases left in progress: %d (plus %d whose message was dead-lettered: no delivery left to finish them)\n"+
		"  dead letters of messages that were not poison: %d\n",
		c.jobs, c.completed, c.chunks, c.rows, c.engagements, c.deadLetters, c.deadRows,
		c.duplicates, c.lost, c.stale, c.extra, c.planErrors, c.chunkRewrites, c.planMismatches,
		c.counterErrors, c.importedCounterError, c.searchCounter, c.searchOveruse, c.openLeases, c.abandoned, c.foreignDead)
	if c := s.conn; c.cases > 0 {
		fmt.Fprintf(w, "\nconnections (TestChaosConnections): %d cases, %d failing, %v a case on average\n  %s\n",
			c.cases, c.failing, (c.elapsed / time.Duration(c.cases)).Round(time.Millisecond), c.connStats)
	}
	if len(s.faults) > 0 {
		fmt.Fprintln(w, "\nfaults injected, by kind:")
		keys := make([]string, 0, len(s.faults))
		n := 0
		for k, v := range s.faults {
			keys = append(keys, k)
			n += v
		}
		sort.Strings(keys)
		tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		for _, k := range keys {
			fmt.Fprintf(tw, "  %s\t%d\n", k, s.faults[k])
		}
		fmt.Fprintf(tw, "  total\t%d\n", n)
		tw.Flush()
	}
	if len(s.mutants) > 0 {
		fmt.Fprintln(w, "\nmutations (each must be caught):")
		for _, m := range s.mutants {
			status := "NOT CAUGHT"
			if m.found {
				status = fmt.Sprintf("caught after %d case(s) by %s", m.casesToFind, m.caughtBy)
			}
			fmt.Fprintf(w, "  %s: %s\n", m.name, status)
			if m.detail != "" {
				fmt.Fprintf(w, "    %s\n", strings.ReplaceAll(m.detail, "\n", "\n    "))
			}
		}
	}
	if len(s.pinned) > 0 {
		fmt.Fprintln(w, "\npinned scenarios:")
		for _, p := range s.pinned {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}
