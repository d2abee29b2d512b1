package sim

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"pgregory.net/rapid"
)

const docs = "projects/p/databases/(default)/documents/"

func read(doc string) *firestorepb.BatchGetDocumentsRequest {
	return &firestorepb.BatchGetDocumentsRequest{Documents: []string{docs + doc}}
}

func write(doc string) *firestorepb.CommitRequest {
	return &firestorepb.CommitRequest{Writes: []*firestorepb.Write{{Operation: &firestorepb.Write_Update{Update: &firestorepb.Document{Name: docs + doc}}}}}
}

// call is one Firestore call of a fake thread.
type call struct {
	method string
	req    any
}

// exploreFake runs the fake threads' calls under x; see exploreWorld.
func exploreFake(t *testing.T, x *Explorer, threads [][]call) (orders map[string]bool, runs int) {
	orders, _, runs = exploreWorld(t, x, threads)
	return orders, runs
}

// exploreWorld runs the fake threads' calls under x until it is done, on a world of documents
// each holding the last writer's mark; it returns the distinct orders and outcomes (what every
// read saw, and the documents at the end) and the number of runs.
func exploreWorld(t interface{ Fatal(...any) }, x *Explorer, threads [][]call) (orders, outcomes map[string]bool, runs int) {
	orders, outcomes = map[string]bool{}, map[string]bool{}
	byCopy := func(d Delivery) (int, bool) { return d.Copy, true }
	for {
		il := x.Next(len(threads), byCopy, CrashPoint{})
		var mu sync.Mutex
		world := map[string]string{}
		seen := make([][]string, len(threads))
		var wg sync.WaitGroup
		for i, calls := range threads {
			ctx := context.WithValue(context.Background(), deliveryKey{}, Delivery{Copy: i})
			wg.Go(func() {
				for k, c := range calls {
					il.Enter(ctx, c.method, c.req)
					mu.Lock()
					switch r := c.req.(type) {
					case *firestorepb.CommitRequest:
						if len(r.Writes) == 0 {
							break
						}
						world[r.Writes[0].GetUpdate().GetName()] = fmt.Sprintf("%d.%d", i, k)
					case *firestorepb.BatchGetDocumentsRequest:
						if len(r.Documents) == 0 {
							break
						}
						seen[i] = append(seen[i], world[r.Documents[0]])
					}
					mu.Unlock()
				}
				il.Done(ctx)
			})
		}
		wg.Wait()
		if err := il.Err(); err != nil {
			t.Fatal(err)
		}
		orders[il.Order()] = true
		outcomes[fmt.Sprint(seen, world)] = true
		runs++
		if runs > 10000 {
			t.Fatal("the exploration does not end")
		}
		if !x.Record(il) {
			return orders, outcomes, runs
		}
	}
}

// TestExplorerReductionLosesNoOutcome: for random pairs of threads reading and writing a few
// documents, the reduced exploration reaches every outcome the full one does, in fewer runs.
func TestExplorerReductionLosesNoOutcome(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		threads := make([][]call, 2)
		for i := range threads {
			n := rapid.IntRange(1, 5).Draw(rt, fmt.Sprintf("steps%d", i))
			for k := range n {
				doc := fmt.Sprintf("d/%d", rapid.IntRange(0, 2).Draw(rt, fmt.Sprintf("doc%d.%d", i, k)))
				if rapid.Bool().Draw(rt, fmt.Sprintf("write%d.%d", i, k)) {
					threads[i] = append(threads[i], call{"Commit", write(doc)})
				} else {
					threads[i] = append(threads[i], call{"BatchGetDocuments", read(doc)})
				}
			}
		}
		_, full, all := exploreWorld(rt, &Explorer{}, threads)
		_, reduced, some := exploreWorld(rt, &Explorer{Reduce: true}, threads)
		if len(full) != len(reduced) || some > all {
			rt.Fatalf("full: %d outcomes in %d runs; reduced: %d outcomes in %d runs", len(full), all, len(reduced), some)
		}
		for o := range full {
			if !reduced[o] {
				rt.Fatalf("the reduction missed outcome %s", o)
			}
		}
	})
}

func binomial(n, k int) int {
	r := 1
	for i := 1; i <= k; i++ {
		r = r * (n - k + i) / i
	}
	return r
}

func TestExplorerEnumeratesEveryInterleaving(t *testing.T) {
	a := []call{{"Commit", write("k/1")}, {"BatchGetDocuments", read("j/1")}, {"Commit", write("c/1")}, {"Commit", write("c/2")}}
	b := []call{{"Commit", write("k/1")}, {"BatchGetDocuments", read("k/1")}}
	orders, runs := exploreFake(t, &Explorer{}, [][]call{a, b})
	if want := binomial(len(a)+len(b), len(b)); runs != want || len(orders) != want {
		t.Fatalf("%d runs, %d distinct orders; want %d of each (every interleaving once)", runs, len(orders), want)
	}
}

func TestExplorerReducesIndependentSteps(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []call
		want int
	}{
		// Nothing the two threads touch is shared: one class.
		{"disjoint", []call{{"Commit", write("a/1")}, {"Commit", write("a/2")}, {"BatchGetDocuments", read("a/3")}},
			[]call{{"Commit", write("b/1")}, {"BatchGetDocuments", read("b/2")}}, 1},
		// Both only read the same document: one class.
		{"reads", []call{{"BatchGetDocuments", read("k/1")}, {"BatchGetDocuments", read("k/1")}},
			[]call{{"BatchGetDocuments", read("k/1")}}, 1},
		// One write each to the same document: two orders.
		{"one conflict", []call{{"Commit", write("k/1")}, {"Commit", write("a/1")}},
			[]call{{"Commit", write("k/1")}, {"Commit", write("b/1")}}, 2},
		// Every step conflicts: every interleaving is its own class.
		{"all conflict", []call{{"Commit", write("k/1")}, {"Commit", write("k/1")}, {"Commit", write("k/1")}},
			[]call{{"Commit", write("k/1")}, {"Commit", write("k/1")}}, binomial(5, 2)},
		// A query over a collection conflicts with a write into it, not with one beside it.
		{"query", []call{{"RunQuery", &firestorepb.RunQueryRequest{Parent: docs + "jobs/j", QueryType: &firestorepb.RunQueryRequest_StructuredQuery{
			StructuredQuery: &firestorepb.StructuredQuery{From: []*firestorepb.StructuredQuery_CollectionSelector{{CollectionId: "chunks"}}}}}}},
			[]call{{"Commit", write("jobs/j/chunks/000001")}, {"Commit", write("jobs/j/slices/000")}}, 2},
		// A transaction may touch anything.
		{"transaction", []call{{"BeginTransaction", nil}, {"BatchGetDocuments", &firestorepb.BatchGetDocumentsRequest{ConsistencySelector: &firestorepb.BatchGetDocumentsRequest_Transaction{Transaction: []byte("t")}}},
			{"Commit", &firestorepb.CommitRequest{Transaction: []byte("t")}}},
			[]call{{"BatchGetDocuments", read("z/1")}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orders, runs := exploreFake(t, &Explorer{Reduce: true}, [][]call{tc.a, tc.b})
			if runs != tc.want || len(orders) != tc.want {
				t.Fatalf("%d runs (%d distinct orders), want %d: %v", runs, len(orders), tc.want, orders)
			}
		})
	}
}

func TestExplorerBoundsPreemptions(t *testing.T) {
	var a, b []call
	for i := range 5 {
		a = append(a, call{"Commit", write(fmt.Sprintf("k/%d", i))})
	}
	for i := range 2 {
		b = append(b, call{"Commit", write(fmt.Sprintf("k/%d", i))})
	}
	_, all := exploreFake(t, &Explorer{}, [][]call{a, b})
	orders, runs := exploreFake(t, &Explorer{Bound: 1}, [][]call{a, b})
	// One preemption: either thread runs first and is interrupted at most once, by the other
	// running to its end: 5 + 2 points to interrupt, plus the 2 orders without one.
	if want := len(a) + len(b); runs != want || len(orders) != want || runs >= all {
		t.Fatalf("bound 1: %d runs (%d distinct), want %d (of %d without a bound)", runs, len(orders), want, all)
	}
}

func TestExplorerSerial(t *testing.T) {
	var a, b []call
	for i := range 4 {
		a = append(a, call{"Commit", write(fmt.Sprintf("k/%d", i))})
	}
	for i := range 3 {
		b = append(b, call{"Commit", write(fmt.Sprintf("k/%d", i))})
	}
	orders, runs := exploreFake(t, &Explorer{Serial: true}, [][]call{a, b})
	// No preemption: one thread runs to its end, then the other; two orders.
	if runs != 2 || len(orders) != 2 {
		t.Fatalf("serial: %d runs (%d distinct), want 2: %v", runs, len(orders), orders)
	}
	for o := range orders {
		if o != "0 0 0 0 1 1 1" && o != "1 1 1 0 0 0 0" {
			t.Fatalf("serial: order %q switches inside a thread", o)
		}
	}
}
