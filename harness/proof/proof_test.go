// Package proof model-checks oncesync's idempotency-key protocol: keys.pml is the protocol in
// Promela (claims, leases and their expiry, takeover conditioned on the key as read, fenced
// writes with heartbeats, complete / release / hand-off / abandon, crashes at every step,
// zombies, duplicates at any time and redeliveries), and spin explores every interleaving of it
// for the bounds below. The tests assert that the model holds, that each mutated model (a guard
// removed, as the chaos suite's mutants remove it from the code) is refuted with a counterexample
// trail, and that the model names every probe step the code has.
//
// spin and a C compiler come from Debian's packages (harness/scripts/setup.sh installs them).
package proof

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// run is one spin verification of keys.pml with the given -D defines.
type run struct {
	Errors int
	States int // states stored
	Depth  int
	Trail  string // spin -t's replay of the counterexample, when there is one
	Out    string
}

func verify(t *testing.T, defines ...string) run {
	t.Helper()
	for _, tool := range []string{"spin", "cc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run make setup (it installs Debian's spin and a C compiler)", tool)
		}
	}
	src, err := os.ReadFile("keys.pml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keys.pml"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	sh := func(name string, args ...string) string {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil && name != "./pan" && !(name == "spin" && args[0] == "-t") {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	var ds []string
	for _, d := range defines {
		ds = append(ds, "-D"+d)
	}
	sh("spin", append(append([]string{"-a"}, ds...), "keys.pml")...)
	// Safety: assertions and invalid end states (a delivery left waiting forever), without partial
	// order reduction (the model uses timeout), states stored compressed (exactly: COLLAPSE).
	sh("cc", "-O2", "-DSAFETY", "-DNOREDUCE", "-DCOLLAPSE", "-o", "pan", "pan.c")
	out := sh("./pan", "-m100000")
	r := run{Out: out, Errors: -1}
	if m := regexp.MustCompile(`errors: (\d+)`).FindStringSubmatch(out); m != nil {
		r.Errors, _ = strconv.Atoi(m[1])
	}
	if m := regexp.MustCompile(`(\d+) states, stored`).FindStringSubmatch(out); m != nil {
		r.States, _ = strconv.Atoi(m[1])
	}
	if m := regexp.MustCompile(`depth reached (\d+)`).FindStringSubmatch(out); m != nil {
		r.Depth, _ = strconv.Atoi(m[1])
	}
	if r.Errors < 0 {
		t.Fatalf("spin's verifier printed no error count:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "keys.pml.trail")); err == nil {
		r.Trail = sh("spin", append(append([]string{"-t", "-p", "-g"}, ds...), "keys.pml")...)
	}
	return r
}

// TestModelHolds checks the protocol exhaustively for its bounds: 2 instances receiving the
// message (and a continuation), 2 fenced writes, 1 crash, 1 lease run out under a live owner, 1
// transient error, 1 hand-off, the message poison or not.
func TestModelHolds(t *testing.T) {
	t.Parallel()
	r := verify(t)
	t.Logf("keys.pml: %d states stored, depth %d, %d errors", r.States, r.Depth, r.Errors)
	if r.Errors != 0 || r.States == 0 {
		t.Fatalf("the model fails (%d errors, %d states):\n%s\n%s", r.Errors, r.States, r.Out, r.Trail)
	}
	fmt.Fprintf(os.Stderr, "proof: keys.pml holds: %d states, depth %d (bounds W=2 P=2 CRASHES=1 SLOW=1 RELEASES=1 HANDOFFS=1)\n", r.States, r.Depth)
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
	modelSteps := map[string]bool{"claim": true, "write": true, "complete": true}
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
