package sim

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
)

// Gate sequences the Firestore calls of chosen deliveries: the Backend calls Enter before it
// sends each call (a streaming call: its request), and the Env calls Done when a delivery's
// function has returned (or crashed). Enter may block, or panic with a Crash (the instance dies
// before the call is sent).
type Gate interface {
	Enter(ctx context.Context, method string, req any)
	Done(ctx context.Context)
}

// Thread says which of an Interleaver's threads a delivery is (ok false: not one of them, its
// calls pass freely).
type Thread func(d Delivery) (thread int, ok bool)

// CrashPoint kills one thread just before its Before-th step is sent (Before >= 1): every step
// before it took effect, nothing of it or after it does, and the lease it holds stays until it
// runs out. The zero CrashPoint, with Before 0, crashes nothing.
type CrashPoint struct {
	Thread int
	Before int
}

func (c CrashPoint) String() string {
	if c.Before == 0 {
		return "no crash"
	}
	return fmt.Sprintf("thread %d crashes before its step %d", c.Thread, c.Before)
}

// Interleaver is a Gate that lets the Firestore calls of n concurrent deliveries (its threads)
// through one step at a time, in the order a choice sequence gives, and records the run: which
// thread took each step, what each step read and wrote, and where more than one thread could
// have moved. An Explorer drives it, one run per choice sequence.
//
// A step is one call, or one whole transaction (BeginTransaction to its Commit or Rollback):
// Firestore serializes transactions, so interleaving inside one adds nothing but lock waits. The
// next step is granted only when no thread is running (each waits at its next call or has
// returned), so at most one thread runs at a time and a run is determined by its choices; a
// replay that meets other choices than its prefix recorded reports the nondeterminism.
type Interleaver struct {
	thread Thread
	prefix []int
	crash  CrashPoint
	expire CrashPoint // before this step of this thread, the clock jumps (onExpire)
	// onExpire runs before expire's step is granted (e.g. the clock jumps past the lease there).
	onExpire func()
	touches  []string // the documents whose meaning the jump changes (the leases' keys)
	bound    int      // preemptions allowed in the run (-1: any number)
	preempts int

	mu       sync.Mutex
	cond     *sync.Cond
	state    []threadState
	inTx     []bool
	pending  []access // each waiting thread's next step
	steps    []int    // steps taken, per thread
	methods  [][]string
	grant    int // the thread allowed to take its next step (-1: none)
	branches []branch
	trace    []step
	crashed  bool
	expired  bool
	err      error
	abort    bool
	timeout  time.Duration
}

type threadState int

const (
	running threadState = iota // between its steps: may call next at any moment
	waiting                    // at the gate with its next call
	done                       // its function returned
)

// branch is one point of a run where more than one thread could take the next step.
type branch struct {
	chosen  int
	options []int // the threads waiting, ascending
}

// step is one step of a run.
type step struct {
	thread int
	acc    access
	branch int // the branch point that granted it (-1: it was the only thread that could move)
}

// NewInterleaver returns an Interleaver of n threads that follows prefix (the chosen thread at
// each branch point; past its end, the lowest waiting thread) and injects crash.
func NewInterleaver(n int, thread Thread, prefix []int, crash CrashPoint) *Interleaver {
	il := &Interleaver{thread: thread, prefix: prefix, crash: crash,
		state: make([]threadState, n), inTx: make([]bool, n), pending: make([]access, n), steps: make([]int, n),
		methods: make([][]string, n), grant: -1, timeout: 2 * time.Minute, bound: -1}
	il.cond = sync.NewCond(&il.mu)
	return il
}

// Expire runs f just before at.Thread's at.Before-th step is granted (once): the lease running
// out there, under whichever thread holds it. For the reduction it is a write of keys (the
// documents whose leases it ends), so it is ordered against every step that reads or writes them.
func (il *Interleaver) Expire(at CrashPoint, keys []string, f func()) {
	il.expire, il.touches, il.onExpire = at, keys, f
}

func (il *Interleaver) which(ctx context.Context) (int, bool) {
	d, ok := DeliveryFrom(ctx)
	if !ok {
		return 0, false
	}
	i, ok := il.thread(d)
	return i, ok && i >= 0 && i < len(il.state)
}

// Enter implements Gate.
func (il *Interleaver) Enter(ctx context.Context, method string, req any) {
	i, ok := il.which(ctx)
	if !ok {
		return
	}
	il.mu.Lock()
	defer il.mu.Unlock()
	if il.abort {
		return
	}
	if il.inTx[i] { // inside the thread's transaction: part of its current step
		if method == "Rollback" || method == "Commit" && len(req.(*firestorepb.CommitRequest).GetTransaction()) > 0 {
			il.inTx[i] = false
		}
		return
	}
	il.state[i] = waiting
	il.pending[i] = accessOf(method, req)
	il.schedule()
	deadline := time.Now().Add(il.timeout)
	for il.grant != i && !il.abort {
		if time.Now().After(deadline) {
			il.fail("thread %d waited %v at %s: the threads are blocked on something else than the gate", i, il.timeout, method)
			return
		}
		il.wait()
	}
	if il.abort {
		return
	}
	il.grant = -1
	il.state[i] = running
	il.steps[i]++
	il.methods[i] = append(il.methods[i], method)
	if il.crash.Before > 0 && il.crash.Thread == i && il.steps[i] == il.crash.Before {
		il.crashed = true
		il.trace[len(il.trace)-1].acc = access{} // the call is never sent
		panic(Crash{Step: fmt.Sprintf("firestore call %d (%s) of thread %d", il.steps[i], method, i)})
	}
	if method == "BeginTransaction" {
		il.inTx[i] = true
	}
}

// Done implements Gate.
func (il *Interleaver) Done(ctx context.Context) {
	i, ok := il.which(ctx)
	if !ok {
		return
	}
	il.mu.Lock()
	defer il.mu.Unlock()
	il.state[i] = done
	il.inTx[i] = false
	il.schedule()
}

// wait waits on the condition, waking up now and then to notice the deadline.
func (il *Interleaver) wait() {
	t := time.AfterFunc(time.Second, il.cond.Broadcast)
	il.cond.Wait()
	t.Stop()
}

// schedule grants the next step once no thread is running. Called with il.mu held.
func (il *Interleaver) schedule() {
	defer il.cond.Broadcast()
	if il.grant >= 0 || il.abort {
		return
	}
	var options []int
	for i, s := range il.state {
		switch s {
		case running:
			return
		case waiting:
			options = append(options, i)
		}
	}
	if len(options) == 0 {
		return
	}
	// Preemption bounding: once the run has switched away from a thread that could go on as often
	// as allowed, the thread that took the last step keeps going while it can.
	if last := il.last(); il.bound >= 0 && il.preempts >= il.bound && last >= 0 && slices.Contains(options, last) {
		options = []int{last}
	}
	chosen, b := options[0], -1
	if len(options) > 1 {
		b = len(il.branches)
		if b < len(il.prefix) {
			chosen = il.prefix[b]
			if !slices.Contains(options, chosen) {
				il.fail("branch %d: the prefix chose thread %d, but only %v could move: the run is not deterministic", b, chosen, options)
				return
			}
		}
		il.branches = append(il.branches, branch{chosen: chosen, options: options})
	}
	if last := il.last(); last >= 0 && last != chosen && il.state[last] == waiting {
		il.preempts++
	}
	acc := il.pending[chosen]
	if !il.expired && il.expire.Before > 0 && il.expire.Thread == chosen && il.steps[chosen]+1 == il.expire.Before {
		il.expired = true
		il.onExpire()
		acc.writes = append(slices.Clone(il.touches), acc.writes...)
	}
	il.trace = append(il.trace, step{thread: chosen, acc: acc, branch: b})
	il.grant = chosen
}

// last is the thread that took the previous step (-1: none yet). Called with il.mu held.
func (il *Interleaver) last() int {
	if len(il.trace) == 0 {
		return -1
	}
	return il.trace[len(il.trace)-1].thread
}

// fail stops sequencing: every thread runs freely from here, and Err reports why.
func (il *Interleaver) fail(format string, args ...any) {
	if il.err == nil {
		il.err = fmt.Errorf("sim: interleaver: "+format, args...)
	}
	il.abort = true
	il.cond.Broadcast()
}

// Err reports a run the Interleaver could not sequence (a prefix the run did not follow, threads
// blocked elsewhere).
func (il *Interleaver) Err() error {
	il.mu.Lock()
	defer il.mu.Unlock()
	if il.err == nil && len(il.branches) < len(il.prefix) {
		return fmt.Errorf("sim: interleaver: the run had %d branch points, its prefix %d: the run is not deterministic", len(il.branches), len(il.prefix))
	}
	return il.err
}

// Crashed reports whether the crash point was reached.
func (il *Interleaver) Crashed() bool {
	il.mu.Lock()
	defer il.mu.Unlock()
	return il.crashed
}

// Expired reports whether the lease ran out (Expire's step was reached).
func (il *Interleaver) Expired() bool {
	il.mu.Lock()
	defer il.mu.Unlock()
	return il.expired
}

// Steps returns the steps each thread took (a crash counts as the step it was before).
func (il *Interleaver) Steps() []int {
	il.mu.Lock()
	defer il.mu.Unlock()
	return slices.Clone(il.steps)
}

// Methods returns the first call of each step a thread took.
func (il *Interleaver) Methods(thread int) []string {
	il.mu.Lock()
	defer il.mu.Unlock()
	return slices.Clone(il.methods[thread])
}

// Order describes the run's interleaving: the thread of each step, in order ("0 0 1 0 ...").
func (il *Interleaver) Order() string {
	il.mu.Lock()
	defer il.mu.Unlock()
	var b strings.Builder
	for k, s := range il.trace {
		if k > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, s.thread)
	}
	return b.String()
}

// Choices returns the choices the run made at its branch points: the prefix that replays it.
func (il *Interleaver) Choices() []int {
	il.mu.Lock()
	defer il.mu.Unlock()
	out := make([]int, len(il.branches))
	for k, b := range il.branches {
		out[k] = b.chosen
	}
	return out
}

// Explorer enumerates the interleavings of an Interleaver's threads depth-first, one run each
// (stateless model checking: every run starts from a fresh world and replays its prefix).
//
// With Reduce, it explores one interleaving per class of equivalent ones (dynamic partial-order
// reduction, Flanagan and Godefroid 2005): two runs that differ only in the order of independent
// steps (reads of the same documents, calls on different documents) leave the same state, so
// after each run a branch point gets a new choice only where the run ordered two dependent steps
// of different threads, and that choice reverses them. Without Reduce, every choice of every
// branch point is run.
//
// With Bound > 0, every run switches away from a thread that could go on at most Bound times
// (preemption bounding, Musuvathi and Qadeer 2007): a fixed subset, without Reduce. With Serial,
// never: the threads run one after another, in every order (a switch only where a thread ends
// or waits).
type Explorer struct {
	Reduce bool
	Bound  int
	Serial bool
	nodes  []node
	prefix []int
	runs   int
}

type node struct {
	options   []int
	chosen    int
	done      map[int]bool
	backtrack map[int]bool
}

// Next returns the Interleaver of the next run, of n threads, with crash injected.
func (x *Explorer) Next(n int, thread Thread, crash CrashPoint) *Interleaver {
	il := NewInterleaver(n, thread, slices.Clone(x.prefix), crash)
	switch {
	case x.Serial:
		il.bound = 0
	case x.Bound > 0:
		il.bound = x.Bound
	}
	return il
}

// Runs is the number of runs recorded so far.
func (x *Explorer) Runs() int { return x.runs }

// Record takes the run il (from Next) made and returns false once nothing is left to explore.
func (x *Explorer) Record(il *Interleaver) bool {
	il.mu.Lock()
	defer il.mu.Unlock()
	x.runs++
	k := len(x.prefix) // nodes before k are this run's prefix, already known
	x.nodes = x.nodes[:min(k, len(x.nodes))]
	for b := len(x.nodes); b < len(il.branches); b++ {
		br := il.branches[b]
		n := node{options: br.options, chosen: br.chosen, done: map[int]bool{br.chosen: true}, backtrack: map[int]bool{br.chosen: true}}
		if !x.Reduce {
			for _, o := range br.options {
				n.backtrack[o] = true
			}
		}
		x.nodes = append(x.nodes, n)
	}
	if x.Reduce {
		// For each step, the latest earlier step of another thread it depends on: the branch
		// point that granted that one must also try this step's thread first.
		for n, s := range il.trace {
			for m := n - 1; m >= 0; m-- {
				e := il.trace[m]
				if e.thread == s.thread || !e.acc.conflicts(s.acc) {
					continue
				}
				if e.branch >= 0 && slices.Contains(x.nodes[e.branch].options, s.thread) {
					x.nodes[e.branch].backtrack[s.thread] = true
				}
				break
			}
		}
	}
	for b := len(x.nodes) - 1; b >= 0; b-- {
		n := &x.nodes[b]
		for _, o := range n.options {
			if n.backtrack[o] && !n.done[o] {
				n.done[o], n.chosen = true, o
				x.nodes = x.nodes[:b+1]
				x.prefix = make([]int, b+1)
				for j := range x.prefix {
					x.prefix[j] = x.nodes[j].chosen
				}
				return true
			}
		}
	}
	return false
}

// access is what one step reads and writes: document names, and the collections its queries
// range over; all marks a step that may touch anything (a transaction, an unknown call).
type access struct {
	all     bool
	reads   []string
	writes  []string
	queries []scope
}

// scope is a query's range: the collection collID under parent (or anywhere below it).
type scope struct {
	parent, coll string
	descendants  bool
}

func (q scope) covers(doc string) bool {
	parent, coll := splitDoc(doc)
	if coll != q.coll {
		return false
	}
	if q.descendants {
		return parent == q.parent || strings.HasPrefix(parent, q.parent+"/")
	}
	return parent == q.parent
}

// splitDoc splits ".../documents/a/A/b/B" into its parent (".../documents/a/A") and collection
// ID ("b").
func splitDoc(doc string) (parent, coll string) {
	i := strings.LastIndex(doc, "/")
	if i < 0 {
		return "", ""
	}
	rest := doc[:i]
	j := strings.LastIndex(rest, "/")
	if j < 0 {
		return "", rest
	}
	return rest[:j], rest[j+1:]
}

// conflicts reports whether the order of a and b can matter: one writes what the other reads or
// writes, or what its query ranges over.
func (a access) conflicts(b access) bool {
	if a.all || b.all {
		return true
	}
	writesInto := func(w access, o access) bool {
		for _, d := range w.writes {
			if slices.Contains(o.reads, d) || slices.Contains(o.writes, d) {
				return true
			}
			for _, q := range o.queries {
				if q.covers(d) {
					return true
				}
			}
		}
		return false
	}
	return writesInto(a, b) || writesInto(b, a)
}

// accessOf reads a call's request; calls it cannot read conflict with everything.
func accessOf(method string, req any) access {
	switch r := req.(type) {
	case *firestorepb.CommitRequest:
		if len(r.GetTransaction()) > 0 {
			return access{all: true}
		}
		var a access
		for _, w := range r.GetWrites() {
			for _, d := range []string{w.GetUpdate().GetName(), w.GetDelete(), w.GetTransform().GetDocument()} {
				if d != "" {
					a.writes = append(a.writes, d)
				}
			}
		}
		return a
	case *firestorepb.BatchGetDocumentsRequest:
		if len(r.GetTransaction()) > 0 || r.GetNewTransaction() != nil {
			return access{all: true}
		}
		return access{reads: r.GetDocuments()}
	case *firestorepb.RunQueryRequest:
		if len(r.GetTransaction()) > 0 || r.GetNewTransaction() != nil {
			return access{all: true}
		}
		return queryAccess(r.GetParent(), r.GetStructuredQuery())
	case *firestorepb.RunAggregationQueryRequest:
		if len(r.GetTransaction()) > 0 || r.GetNewTransaction() != nil {
			return access{all: true}
		}
		return queryAccess(r.GetParent(), r.GetStructuredAggregationQuery().GetStructuredQuery())
	}
	return access{all: true}
}

func queryAccess(parent string, q *firestorepb.StructuredQuery) access {
	if q == nil || len(q.GetFrom()) == 0 {
		return access{all: true}
	}
	var a access
	for _, f := range q.GetFrom() {
		a.queries = append(a.queries, scope{parent: parent, coll: f.GetCollectionId(), descendants: f.GetAllDescendants()})
	}
	return a
}
