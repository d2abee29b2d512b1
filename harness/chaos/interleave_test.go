package chaos

import (
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/model"
)

var interleaveFlag = flag.String("chaos.interleavings", "ci",
	"TestInterleavings' set: ci (every class of interleavings without a fault and with the ack lost; each crash and lease expiry of either delivery, over the chunk pair's interleavings with one preemption and the expand pair's serial orders), bounded (each crash and expiry over the interleavings with one preemption), all (every class for every fault) or every (all, without the partial-order reduction)")

// explorer returns how the set explores variant v of pair p.
func explorer(set string, p pair, v variant) *sim.Explorer {
	switch {
	case set == "every":
		return &sim.Explorer{}
	case set == "all" || v.crash.Before == 0 && v.expire.Before == 0:
		return &sim.Explorer{Reduce: true}
	case set == "ci":
		x := p.ci
		return &x
	}
	return &sim.Explorer{Bound: 1}
}

// A pair is two deliveries of one message at once (Pub/Sub push's concurrent duplicate), whose
// Firestore calls the Interleaver sequences.
type pair struct {
	name string
	c    Case
	key  idem.Key // the idempotency key the message claims
	// ci explores the pair's crash and expiry variants in CI: one preemption where that is
	// affordable, the serial orders where it is not (make interleavings runs the rest).
	ci sim.Explorer
}

// pairs are small Jobs: one setting (the generated-ID target, where a record imported twice is a
// second document), 6 records on one page in 2 chunks, one tick, not sliced.
func pairs() []pair {
	c := Case{
		PageSize: 50,
		Objects:  []Object{{Name: "Contact", Prefix: "003", Rows: 6, Updated: 34, Seed: 5}},
		Settings: []Setting{{ID: "il-generated", Tenant: "acme", Object: 0, Target: model.TargetGenerated, ChunkSize: 3}},
		Ticks:    []Tick{{}},
	}
	job := model.JobID("il-generated", TickID(0))
	with := func(t Target) Case {
		c := c
		c.Faults.Deliveries = []DeliveryFault{{Target: t, Nth: 1, Plan: sim.Plan{Concurrent: 1}}}
		return c
	}
	return []pair{
		{name: "chunk message", c: with(Target{Function: config.Importer, Setting: 0, Tick: 0, Chunk: 0}), key: idem.ChunkKey(job, 0), ci: sim.Explorer{Bound: 1}},
		{name: "expand message", c: with(Target{Function: config.Expander, Setting: 0, Tick: 0, Chunk: -1}), key: idem.SliceKey(job, 0), ci: sim.Explorer{Serial: true}},
	}
}

// threads: the first delivery Pub/Sub makes of the pair's message is thread 0, its concurrent
// copy thread 1; redeliveries run freely.
func (p pair) threads(d sim.Delivery) (int, bool) {
	if d.Attempt != 1 || keyOf(d) != p.key.String() {
		return 0, false
	}
	switch d.Copy {
	case 0:
		return 0, true
	case 101:
		return 1, true
	}
	return 0, false
}

// variant is one family of runs over every interleaving.
type variant struct {
	name   string
	crash  sim.CrashPoint
	expire sim.CrashPoint // the lease runs out (the clock jumps past it) just before this step (Before 0: never)
	lose   bool           // the first delivery's ack is lost
}

// exploration is what the runs of one variant found.
type exploration struct {
	runs, crashed int                 // interleavings run; of them, runs where the crash point was reached
	steps         [2]int              // the most steps each thread took
	violations    map[string][]string // violation → the interleavings that showed it
}

// explore runs c once per interleaving of the pair's two threads, depth-first, under v (with
// reduce, once per class of equivalent interleavings); stop ends it at the first violation (a
// mutant needs one).
func explore(t *testing.T, h *Harness, p pair, v variant, ex *sim.Explorer, stop bool) exploration {
	t.Helper()
	x := exploration{violations: map[string][]string{}}
	c := p.c
	c.Faults.Deliveries = slices.Clone(c.Faults.Deliveries)
	c.Faults.Deliveries[0].LoseAck = v.lose
	keyDoc := "projects/" + h.Env.Project + "/databases/(default)/documents/" + model.Keys + "/" + p.key.DocID()
	for {
		il := ex.Next(2, p.threads, v.crash)
		if v.expire.Before > 0 {
			il.Expire(v.expire, []string{keyDoc}, func() {
				h.Env.Clock.Advance(h.Env.Config.Lease + time.Second)
				if st := h.cur.Load(); st != nil {
					st.mu.Lock()
					st.lateCopies[model.JobID(c.Settings[0].ID, TickID(0))]++ // the other may take over and search again
					st.mu.Unlock()
				}
			})
		}
		h.Env.Backend.SetGate(il)
		res, err := h.Run(t.Context(), c)
		h.Env.Backend.SetGate(nil)
		if err != nil {
			t.Fatalf("%s, %s, interleaving %v: %v", p.name, v.name, il.Choices(), err)
		}
		if err := il.Err(); err != nil {
			t.Fatalf("%s, %s, interleaving %v: %v", p.name, v.name, il.Choices(), err)
		}
		x.runs++
		if il.Crashed() || il.Expired() {
			x.crashed++
		}
		for i, n := range il.Steps() {
			x.steps[i] = max(x.steps[i], n)
		}
		for _, msg := range res.Violations {
			x.violations[msg] = append(x.violations[msg], il.Order())
		}
		if stop && len(res.Violations) > 0 {
			return x
		}
		if !ex.Record(il) {
			return x
		}
	}
}

// variants lists the runs for a pair whose threads take at most steps[i] steps: no fault, the ack
// lost, a crash of a thread before each of its steps, and the lease running out before each of a
// thread's steps (its holder goes on: a zombie).
func variants(steps [2]int) []variant {
	out := []variant{{name: "no fault"}, {name: "ack lost", lose: true}}
	for th, n := range steps {
		for k := 1; k <= n; k++ {
			at := sim.CrashPoint{Thread: th, Before: k}
			out = append(out, variant{name: "thread " + fmt.Sprint(th) + " crashes before its step " + fmt.Sprint(k), crash: at})
			out = append(out, variant{name: "the lease runs out before thread " + fmt.Sprint(th) + "'s step " + fmt.Sprint(k), expire: at})
		}
	}
	return out
}

// TestInterleavings runs two deliveries of the same expand message, and of the same chunk
// message, with their Firestore calls interleaved (sim.Interleaver: one call, or one transaction,
// at a time, against the real emulator), and holds every run to the chaos checkers: without a
// fault, with the first delivery's ack lost, with either delivery crashing before each of its
// calls, and with the lease running out before each of either delivery's calls (its holder goes
// on as a zombie). -chaos.interleavings chooses the set (make interleavings: all).
func TestInterleavings(t *testing.T) {
	set := *interleaveFlag
	h := NewHarness(t, Mutation{})
	total := 0
	t0 := time.Now()
	for _, p := range pairs() {
		t1 := time.Now()
		base := explore(t, h, p, variant{name: "no fault"}, explorer(set, p, variant{}), false)
		if base.runs < 2 || base.steps[0] < 2 || base.steps[1] < 1 {
			t.Fatalf("%s: %d interleavings of %v steps: the pair does not race", p.name, base.runs, base.steps)
		}
		runs, faulted, fails := 0, 0, 0
		for _, v := range variants(base.steps) {
			x := base
			if v.name != "no fault" {
				x = explore(t, h, p, v, explorer(set, p, v), false)
			}
			runs += x.runs
			faulted += x.crashed
			if (v.crash.Before > 0 || v.expire.Before > 0) && x.crashed == 0 {
				t.Errorf("%s, %s: the fault's step was never reached", p.name, v.name)
			}
			if testing.Verbose() {
				t.Logf("%s, %s: %d run(s), %d with the fault reached, %d violation(s)", p.name, v.name, x.runs, x.crashed, len(x.violations))
			}
			for msg, orders := range x.violations {
				fails++
				t.Errorf("%s, %s: %d interleaving(s), e.g. %q: %s", p.name, v.name, len(orders), orders[0], msg)
			}
		}
		line := fmt.Sprintf("interleavings (%s), %s: %d classes of interleavings of up to %d+%d steps without a fault; %d runs in all (%d with a crash or a lease expiry reached); %d violation(s); %v",
			set, p.name, base.runs, base.steps[0], base.steps[1], runs, faulted, fails, time.Since(t1).Round(time.Second))
		t.Log(line)
		report.pin(line)
		total += runs
	}
	t.Logf("%d runs in %v", total, time.Since(t0).Round(time.Second))
}

// TestInterleavingsCatchMutants shows the interleavings able to fail: each guard-removed mutant
// that two concurrent deliveries can expose breaks a checker in one of the pair's interleavings.
// They are explored with one preemption (a delivery runs, the other runs to its end, the first
// goes on), which is where a missing guard shows first: the reduced depth-first order reaches the
// early switches last.
func TestInterleavingsCatchMutants(t *testing.T) {
	ps := pairs()
	chunk, expand := ps[0], ps[1]
	for _, tc := range []struct {
		m Mutation
		p pair
	}{
		{MutantClaim, expand},
		{MutantLiveTakeover, expand},
		{Mutation{Name: "every claim succeeds + chunk DONE committed apart", Keys: MutantClaim.Keys, Committer: MutantDoneApart.Committer, Steps: MutantDoneApart.Steps}, chunk},
	} {
		t.Run(tc.m.Name+"/"+tc.p.name, func(t *testing.T) {
			h := NewHarness(t, tc.m)
			t0 := time.Now()
			x := explore(t, h, tc.p, variant{name: "no fault"}, &sim.Explorer{Bound: 1}, true)
			if len(x.violations) == 0 {
				t.Fatalf("mutation %q survived all %d interleavings of the %s with one preemption", tc.m.Name, x.runs, tc.p.name)
			}
			if x.runs == 1 {
				// The first interleaving runs the deliveries one after the other: a mutant caught
				// there is caught without a race, which is not what this test is for.
				t.Fatalf("mutation %q fails the %s without interleaving: %v", tc.m.Name, tc.p.name, x.violations)
			}
			var first string
			for msg, orders := range x.violations {
				first = fmt.Sprintf("%s (interleaving %s)", msg, orders[0])
			}
			line := fmt.Sprintf("interleavings, mutant %q, %s: caught after %d interleaving(s) in %v: %s",
				tc.m.Name, tc.p.name, x.runs, time.Since(t0).Round(time.Second), first)
			t.Log(line)
			report.pin(line)
		})
	}
}
