// Package chaos is oncesync's chaos harness: property tests (pgregory.net/rapid) that run the
// pipeline on the real Firestore and Pub/Sub emulators under generated datasets and generated
// fault schedules, and prove after quiescence that no record was duplicated or lost.
//
// Everything lives in the package's tests; this file only documents them. See docs/testing.md for how
// to run the suite, what it injects, what it checks, and how a failure is replayed.
//
// # Determinism
//
// A case is drawn up front from rapid's bit stream: the dataset, the sync settings, the ticks
// and the fault schedule. Faults are keyed by what a message means (the expand message of setting
// 1 for tick 0, its 2nd delivery), never by message IDs or wall-clock time; duplicates arrive at a
// named step of the delivery they copy (package sim), and leases expire by moving the simulated
// clock. So a seed replays the same schedule, and rapid can shrink a failing one.
//
// # Mutations
//
// The same properties run against the pipeline with its guards removed (test-only wrappers in
// mutant_test.go); TestMutant* asserts that rapid finds a counterexample within the default
// budget, and names what caught it.
package chaos
