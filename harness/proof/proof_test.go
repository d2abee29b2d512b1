package proof

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// verify checks keys.pml with the given -D defines.
func verify(t *testing.T, defines ...string) Result {
	t.Helper()
	src, err := os.ReadFile("keys.pml")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	r, err := Check(ctx, t.TempDir(), src, Options{Defines: defines})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestModelHolds checks the protocol exhaustively for its bounds: 2 instances receiving the
// message (and a continuation), 2 fenced writes, 1 crash, 1 lease run out under a live owner, 1
// transient error, 1 hand-off, the message poison or not; and the same with one instance and one
// recovery sweep publishing the message again while the work is unfinished (both at once exceed
// the 5 minutes a check may take here).
func TestModelHolds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		defines []string
		bounds  string
	}{
		{"duplicates", nil, "W=2 P=2 CRASHES=1 SLOW=1 RELEASES=1 HANDOFFS=1 SWEEPS=0"},
		{"sweep", []string{"P=1", "SWEEPS=1"}, "W=2 P=1 CRASHES=1 SLOW=1 RELEASES=1 HANDOFFS=1 SWEEPS=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := verify(t, tc.defines...)
			t.Logf("keys.pml (%s): %d states stored, depth %d, %d errors", tc.bounds, r.States, r.Depth, r.Errors)
			if r.Errors != 0 || r.States == 0 {
				t.Fatalf("the model fails (%d errors, %d states):\n%s\n%s", r.Errors, r.States, r.Out, r.Trail)
			}
			fmt.Fprintf(os.Stderr, "proof: keys.pml holds: %d states, depth %d (bounds %s)\n", r.States, r.Depth, tc.bounds)
		})
	}
}

// TestMutatedModelsAreRefuted: each guard removed from the model gives a counterexample, and the
// trail shows the property it breaks.
func TestMutatedModelsAreRefuted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		define string
		what   string
		want   string // in the replayed trail
	}{
		{"NOFENCE", "no fencing: a zombie's write takes effect after the takeover", "assertion violated"},
		{"LIVE_TAKEOVER", "a duplicate takes over a live lease", "assertion violated"},
		{"ABANDON_KEEPS_KEY", "abandon without deleting the key", "assertion violated"},
		{"COMPLETE_EARLY", "the key completed before the work", "assertion violated"},
		{"NO_CONTINUATION", "a hand-off publishes no continuation", "assertion violated"},
	} {
		t.Run(tc.define, func(t *testing.T) {
			t.Parallel()
			r := verify(t, tc.define)
			if r.Errors == 0 || r.Trail == "" {
				t.Fatalf("%s (%s): no counterexample in %d states: the model cannot tell it from the protocol", tc.define, tc.what, r.States)
			}
			if !strings.Contains(r.Trail, tc.want) {
				t.Fatalf("%s: the trail does not show %q:\n%s", tc.define, tc.want, r.Trail)
			}
			line := r.Trail[strings.Index(r.Trail, tc.want):]
			line, _, _ = strings.Cut(line, "\n")
			t.Logf("%s (%s) refuted after %d states: %s", tc.define, tc.what, r.States, line)
			fmt.Fprintf(os.Stderr, "proof: mutant %s refuted (%d states): %s\n", tc.define, r.States, line)
		})
	}
}

// TestModelNamesEveryProbeStep fails when the code gains a probe step the model does not list
// (keys.pml's "step <name> <model step>" lines), or the model lists one the code lost.
func TestModelNamesEveryProbeStep(t *testing.T) {
	t.Parallel()
	code := map[string]bool{}
	files, err := filepath.Glob("../../functions/*/*.go")
	if err != nil {
		t.Fatal(err)
	}
	decl := regexp.MustCompile(`(?m)^\s*Step[A-Za-z]+\s*=\s*"([a-z]+\.[a-z_]+)"`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			code[m[1]] = true
		}
	}
	if len(code) < 9 {
		t.Fatalf("found only %d probe steps in functions/: the pattern no longer matches the code", len(code))
	}
	src, err := os.ReadFile("keys.pml")
	if err != nil {
		t.Fatal(err)
	}
	modelSteps := map[string]bool{"claim": true, "search": true, "write": true, "complete": true}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^ \*\s+step ([a-z]+\.[a-z_]+)\s+([a-z]+)$`).FindAllStringSubmatch(string(src), -1) {
		listed[m[1]] = true
		if !modelSteps[m[2]] {
			t.Errorf("keys.pml maps %s to %q, which is no step of the model", m[1], m[2])
		}
		if !strings.Contains(string(src), "/* step "+m[2]+" */") {
			t.Errorf("keys.pml has no place marked /* step %s */", m[2])
		}
	}
	var missing, stale []string
	for s := range code {
		if !listed[s] {
			missing = append(missing, s)
		}
	}
	for s := range listed {
		if !code[s] {
			stale = append(stale, s)
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(missing) > 0 || len(stale) > 0 {
		t.Fatalf("keys.pml and the code disagree: steps of the code the model lacks %v; steps the model lists that the code lost %v", missing, stale)
	}
}
