// Package proof model-checks oncesync's idempotency-key protocol: keys.pml is the protocol in
// Promela (claims, leases and their expiry, takeover conditioned on the key as read, fenced
// writes with heartbeats, complete / release / hand-off / abandon, crashes at every step,
// zombies, duplicates at any time and redeliveries), and spin explores every interleaving of it
// for the bounds its tests print. The tests assert that the model holds, that each mutated model
// (a guard removed, as the chaos suite's mutants remove it from the code) is refuted with a
// counterexample trail, and that the model names every probe step the code has; the chaos suite
// replays the mutated models' shortest trails on the real code (Check, Events).
//
// spin and a C compiler come from Debian's packages (harness/scripts/setup.sh installs them).
package proof

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Result is one spin verification.
type Result struct {
	Errors int // -1 when the verifier printed no count
	States int // states stored
	Depth  int
	Trail  string   // spin -t's replay of the counterexample, when there is one
	Trails []string // with Options.Trails: the replay of each counterexample kept
	Out    string   // the verifier's output
}

// Options tailor a Check.
type Options struct {
	Defines []string // -D defines (a mutant's name)
	// Shortest makes the verifier search for the shortest counterexample (pan -i): slower, and the
	// trail is the one to read or replay.
	Shortest bool
	// Trails > 0 keeps up to that many counterexamples (pan -e -cN), replayed into Result.Trails.
	Trails int
}

// Check writes model into dir and verifies it with spin: safety (assertions and invalid end
// states), without partial-order reduction (the model uses timeout), states stored compressed
// and exact (COLLAPSE).
func Check(ctx context.Context, dir string, model []byte, o Options) (Result, error) {
	for _, tool := range []string{"spin", "cc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return Result{}, fmt.Errorf("proof: %s is not installed: run make setup (it installs Debian's spin and a C compiler)", tool)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "keys.pml"), model, 0o644); err != nil {
		return Result{}, fmt.Errorf("proof: %w", err)
	}
	sh := func(ok func(error) bool, name string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil && !ok(err) {
			return out.String(), fmt.Errorf("proof: %s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
		}
		return out.String(), nil
	}
	strict := func(error) bool { return false }
	exitCode := func(err error) bool { var e *exec.ExitError; return errors.As(err, &e) } // the verifier and the replay exit non-zero on an error found
	var ds []string
	for _, d := range o.Defines {
		ds = append(ds, "-D"+d)
	}
	if _, err := sh(strict, "spin", append(append([]string{"-a"}, ds...), "keys.pml")...); err != nil {
		return Result{}, err
	}
	if _, err := sh(strict, "cc", "-O2", "-DSAFETY", "-DNOREDUCE", "-DCOLLAPSE", "-o", "pan", "pan.c"); err != nil {
		return Result{}, err
	}
	args := []string{"-m100000"}
	if o.Shortest {
		args = append(args, "-i")
	}
	if o.Trails > 0 {
		args = append(args, "-e", fmt.Sprintf("-c%d", o.Trails))
	}
	out, err := sh(exitCode, "./pan", args...)
	if err != nil {
		return Result{}, err
	}
	r := Result{Out: out, Errors: -1}
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
		return r, fmt.Errorf("proof: spin's verifier printed no error count:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "keys.pml.trail")); err == nil {
		if r.Trail, err = sh(exitCode, "spin", append(append([]string{"-t", "-p", "-g"}, ds...), "keys.pml")...); err != nil {
			return r, err
		}
	}
	for k := 1; k <= o.Trails; k++ {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("keys.pml%d.trail", k))); err != nil {
			break
		}
		tr, err := sh(exitCode, "spin", append(append([]string{fmt.Sprintf("-t%d", k), "-p", "-g"}, ds...), "keys.pml")...)
		if err != nil {
			return r, err
		}
		r.Trails = append(r.Trails, tr)
	}
	return r, nil
}

// Event is one step of a trail, as the model prints it ("@ <attempt> <what> [<arg>]"): attempt 0
// is the clock.
type Event struct {
	Attempt int
	What    string // claim, takeover, takeover-live, duplicate, search, write, complete, crash, expires-live, expires-crashed
	Arg     int    // search: the resume point; write: the unit written
}

func (e Event) String() string {
	if e.What == "write" || e.What == "search" {
		return fmt.Sprintf("%d:%s %d", e.Attempt, e.What, e.Arg)
	}
	return fmt.Sprintf("%d:%s", e.Attempt, e.What)
}

var eventLine = regexp.MustCompile(`(?m)^\s*@ (\d+) ([a-z-]+)(?: (\d+))?\s*$`)

// Events returns the events of a trail, in order.
func Events(trail string) []Event {
	var out []Event
	for _, m := range eventLine.FindAllStringSubmatch(trail, -1) {
		e := Event{What: m[2]}
		e.Attempt, _ = strconv.Atoi(m[1])
		if m[3] != "" {
			e.Arg, _ = strconv.Atoi(m[3])
		}
		out = append(out, e)
	}
	return out
}
