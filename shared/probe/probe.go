// Package probe marks the step boundaries inside the functions, the points where a crash or a
// concurrent duplicate matters most, so that the chaos harness can stop a run there (a crash:
// nothing after the probe runs) or let a duplicate delivery in (a deterministic interleaving).
// In production the probe is nil and costs one comparison.
package probe

import "context"

// Func is called at each named step.
type Func func(ctx context.Context, step string)

// At calls f at step, when f is set.
func (f Func) At(ctx context.Context, step string) {
	if f != nil {
		f(ctx, step)
	}
}
