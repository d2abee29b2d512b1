package sim

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/delivery"
)

// Plan says what happens around one delivery. The zero Plan is a plain delivery.
type Plan struct {
	CrashAt    string        // the instance dies when this delivery reaches this step
	CopyAt     string        // a duplicate is delivered when this delivery reaches this step (run there, synchronously)
	CopyAtNth  int           // ... the CopyAtNth time it reaches it (0 or 1: the first)
	CopyDelay  time.Duration // the clock moves this much before that duplicate (the incident: 2 s)
	CopyPlan   *Plan         // what happens to that duplicate (nil: a plain delivery)
	Concurrent int           // duplicates started at the same instant, each in its own goroutine
	CopyAfter  bool          // a duplicate after this delivery has returned, before it is acked
	LoseAck    bool          // the function succeeded but Pub/Sub never gets the ack: redelivered
	// BudgetAt spends the delivery's time budget when it reaches this step: the budget's clock
	// (Env.Budget, which nothing else moves) jumps past Config.Budget(), so an expansion hands off
	// after the chunk it is writing.
	BudgetAt string
	// Hold keeps the delivery back for this many Drain rounds before it runs (a delayed delivery:
	// later messages overtake it). Its ack deadline is extended meanwhile, so Pub/Sub does not
	// redeliver it, and it is one delivery attempt.
	Hold int
}

// String describes p for a case's printout.
func (p Plan) String() string {
	var parts []string
	if p.CrashAt != "" {
		parts = append(parts, "crash at "+p.CrashAt)
	}
	if p.CopyAt != "" {
		s := fmt.Sprintf("duplicate at %s after %v", p.CopyAt, p.CopyDelay)
		if p.CopyAtNth > 1 {
			s = fmt.Sprintf("duplicate at %s (occurrence %d) after %v", p.CopyAt, p.CopyAtNth, p.CopyDelay)
		}
		if p.CopyPlan != nil {
			s += ", the duplicate: " + p.CopyPlan.String()
		}
		parts = append(parts, s)
	}
	if p.Concurrent > 0 {
		parts = append(parts, fmt.Sprintf("%d concurrent duplicate(s)", p.Concurrent))
	}
	if p.CopyAfter {
		parts = append(parts, "duplicate after completion")
	}
	if p.LoseAck {
		parts = append(parts, "ack lost")
	}
	if p.Hold > 0 {
		parts = append(parts, fmt.Sprintf("held back %d round(s)", p.Hold))
	}
	if p.BudgetAt != "" {
		parts = append(parts, "time budget spent at "+p.BudgetAt)
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, "; ")
}

// Policy plans each delivery; Order may reorder a pulled batch. Both are optional.
type Policy struct {
	Plan  func(d Delivery) Plan
	Order func(batch []Delivery)
	// Between runs after each delivery is settled (e.g. to change backend faults).
	Between func(d Delivery)
	// After runs after every function call, injected copies included, with its result. Copies
	// started with Plan.Concurrent call it from their own goroutines.
	After func(d Delivery, err error, crashed bool)
	// Spent runs when a delivery's Plan.BudgetAt fires (its time budget is spent there).
	Spent func(d Delivery)
	// MaxAttempts is Pub/Sub's dead-letter policy: a message whose MaxAttempts-th delivery is not
	// acked is published to TopicDead and acked instead (0: never). The recovery sweep must then
	// finish its work.
	MaxAttempts int
}

// Stats counts what a Drain did.
type Stats struct {
	Deliveries int            // function calls, duplicates included
	ByFunction map[string]int // function calls per entry point
	Acked      int
	Nacked     int
	Crashes    int
	Copies     int // injected duplicate deliveries
	LostAcks   int
	ClockJumps int // times the clock was moved past the lease because nothing could progress
	Suppressed int // deliveries that returned ErrDuplicate or ErrRetryLater... counted from results
	Rounds     int
	Transient  int // deliveries that failed otherwise
	// DeadLettered are the messages given up after Policy.MaxAttempts, as delivered last.
	DeadLettered []Delivery
	Held         int // deliveries held back by Plan.Hold
	// Sweeps is how many recovery sweeps SettleAll ran because Jobs were unfinished after a
	// drain to quiescence.
	Sweeps int
}

// Add adds the counts of o to s: the stats of several drains as one.
func (s *Stats) Add(o Stats) {
	if s.ByFunction == nil {
		s.ByFunction = map[string]int{}
	}
	for k, v := range o.ByFunction {
		s.ByFunction[k] += v
	}
	s.Deliveries += o.Deliveries
	s.Sweeps += o.Sweeps
	s.Acked += o.Acked
	s.Nacked += o.Nacked
	s.Crashes += o.Crashes
	s.Copies += o.Copies
	s.LostAcks += o.LostAcks
	s.ClockJumps += o.ClockJumps
	s.Suppressed += o.Suppressed
	s.Rounds += o.Rounds
	s.Transient += o.Transient
	s.DeadLettered = append(s.DeadLettered, o.DeadLettered...)
	s.Held += o.Held
}

type run struct {
	d      Delivery
	plan   Plan
	at     int // times the delivery reached plan.CopyAt
	fired  bool
	budget bool // BudgetAt has fired
}

type runKey struct{}

// DeliveryOf returns the delivery ctx belongs to (ok false outside one).
func DeliveryOf(ctx context.Context) (Delivery, bool) {
	r, ok := ctx.Value(runKey{}).(*run)
	if !ok {
		return Delivery{}, false
	}
	return r.d, true
}

// collector gathers per-call statistics from nested and concurrent calls.
type collector struct {
	mu sync.Mutex
	s  Stats
}

func (c *collector) call(d Delivery, err error, crashed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.s.ByFunction == nil {
		c.s.ByFunction = map[string]int{}
	}
	c.s.Deliveries++
	c.s.ByFunction[d.Function()]++
	if d.Copy > 0 {
		c.s.Copies++
	}
	switch {
	case crashed:
		c.s.Crashes++
	case errors.Is(err, delivery.ErrRetryLater):
		c.s.Suppressed++
	case err != nil:
		c.s.Transient++
	}
}

type collectorKey struct{}

type afterKey struct{}

type spentKey struct{}

// Deliver runs d under plan: its duplicates and crash included. It returns whether the
// delivery Pub/Sub made should be acked.
func (e *Env) Deliver(ctx context.Context, d Delivery, plan Plan) (ack bool) {
	col, _ := ctx.Value(collectorKey{}).(*collector)
	if col == nil {
		col = &collector{}
		ctx = context.WithValue(ctx, collectorKey{}, col)
	}
	var wg sync.WaitGroup
	for i := 1; i <= plan.Concurrent; i++ {
		c := d
		c.Copy = 100 + i
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.deliverOne(ctx, c, Plan{}, col)
		}()
	}
	err, crashed := e.deliverOne(ctx, d, plan, col)
	wg.Wait()
	if plan.CopyAfter {
		c := d
		c.Copy = 200
		e.deliverOne(ctx, c, Plan{}, col)
	}
	return err == nil && !crashed && !plan.LoseAck
}

func (e *Env) deliverOne(ctx context.Context, d Delivery, plan Plan, col *collector) (error, bool) {
	r := &run{d: d, plan: plan}
	err, crashed := e.Call(context.WithValue(ctx, runKey{}, r), d)
	col.call(d, err, crashed)
	if after, _ := ctx.Value(afterKey{}).(func(Delivery, error, bool)); after != nil {
		after(d, err, crashed)
	}
	return err, crashed
}

// stepHook implements the plan's step actions; it is called from the probe.
func (e *Env) stepHook(ctx context.Context, step string) {
	r, ok := ctx.Value(runKey{}).(*run)
	if !ok {
		return
	}
	if r.plan.CopyAt == step {
		r.at++
	}
	if r.plan.CopyAt == step && !r.fired && r.at >= max(1, r.plan.CopyAtNth) {
		r.fired = true
		e.Clock.Advance(r.plan.CopyDelay)
		c := r.d
		c.Copy = r.d.Copy + 1
		cp := Plan{}
		if r.plan.CopyPlan != nil {
			cp = *r.plan.CopyPlan
		}
		col, _ := ctx.Value(collectorKey{}).(*collector)
		if col == nil {
			col = &collector{}
		}
		e.deliverOne(context.WithoutCancel(ctx), c, cp, col)
	}
	if r.plan.BudgetAt == step && !r.budget {
		r.budget = true
		e.Budget.Advance(e.Config.Budget() + time.Second)
		if spent, _ := ctx.Value(spentKey{}).(func(Delivery)); spent != nil {
			spent(r.d)
		}
	}
	if r.plan.CrashAt == step {
		panic(Crash{Step: step})
	}
}

// Drain pulls and delivers messages until no subscription has any left. When a whole round makes
// no progress (every delivery was refused because a crashed owner's lease is alive), the clock
// jumps past the lease, as the real redelivery backoff would. maxRounds bounds the loop.
//
// A delivery whose Plan has Hold > 0 is kept back (its ack deadline extended) and delivered that
// many rounds later; with Policy.MaxAttempts, a message that fails its last attempt is
// dead-lettered (published to TopicDead with the attributes Pub/Sub adds, and acked).
func (e *Env) Drain(ctx context.Context, p Policy, maxRounds int) (Stats, error) {
	col := &collector{}
	ctx = context.WithValue(ctx, collectorKey{}, col)
	if p.After != nil {
		ctx = context.WithValue(ctx, afterKey{}, p.After)
	}
	if p.Spent != nil {
		ctx = context.WithValue(ctx, spentKey{}, p.Spent)
	}
	var jumps, rounds, acked, nacked, lost, held int
	var dead []Delivery
	var holds []heldDelivery
	finish := func() Stats {
		s := e.finish(col, jumps, rounds, acked, nacked, lost)
		s.DeadLettered, s.Held = dead, held
		return s
	}
	// On the way out, held deliveries go back to Pub/Sub, so nothing stays invisible.
	defer func() {
		for _, h := range holds {
			_ = e.Settle(context.WithoutCancel(ctx), h.d, false)
		}
	}()
	idle, stalled := 0, 0
	for rounds < maxRounds {
		var batch []Delivery
		for _, t := range Topics {
			ds, err := e.Pull(ctx, t, 50)
			if err != nil {
				return finish(), err
			}
			batch = append(batch, ds...)
		}
		// Held deliveries whose time has come join the round, after the fresh ones.
		var due []heldDelivery
		rest := holds[:0]
		for _, h := range holds {
			if h.rounds--; h.rounds <= 0 {
				due = append(due, h)
			} else {
				rest = append(rest, h)
			}
		}
		holds = rest
		if len(batch) == 0 && len(due) == 0 {
			if len(holds) > 0 {
				continue // time passes for the held ones
			}
			idle++
			if idle >= 2 {
				return finish(), nil
			}
			continue
		}
		idle = 0
		rounds++
		if p.Order != nil {
			p.Order(batch)
		}
		type item struct {
			d    Delivery
			plan Plan
			due  bool
		}
		items := make([]item, 0, len(batch)+len(due))
		for _, d := range batch {
			plan := Plan{}
			if p.Plan != nil {
				plan = p.Plan(d)
			}
			items = append(items, item{d: d, plan: plan})
		}
		for _, h := range due {
			items = append(items, item{d: h.d, plan: h.plan, due: true})
		}
		progress := false
		for _, it := range items {
			d, plan := it.d, it.plan
			if plan.Hold > 0 && !it.due {
				if err := e.extend(ctx, d); err != nil {
					return finish(), err
				}
				holds = append(holds, heldDelivery{d: d, plan: plan, rounds: plan.Hold})
				held++
				progress = true
				continue
			}
			ok := e.Deliver(ctx, d, plan)
			if plan.LoseAck {
				lost++
			}
			if ok {
				acked++
				progress = true
			} else {
				nacked++
			}
			if plan.LoseAck && !ok {
				progress = true // the function may well have done its work
			}
			if !ok && p.MaxAttempts > 0 && d.Attempt >= p.MaxAttempts {
				if err := e.deadLetter(ctx, d); err != nil {
					return finish(), err
				}
				dead = append(dead, d)
				ok, progress = true, true
			}
			if err := e.Settle(ctx, d, ok); err != nil {
				return finish(), err
			}
			if p.Between != nil {
				p.Between(d)
			}
		}
		// The first round without progress is redelivered at once (a crashed owner's lease is
		// still alive: the redelivery must be sent back, not acked); from the second on, time
		// passes as Pub/Sub's retry backoff would let it, past the lease.
		if progress {
			stalled = 0
		} else if stalled++; stalled >= 2 {
			e.Clock.Advance(e.Config.Lease + time.Second)
			jumps++
		}
	}
	return finish(), fmt.Errorf("sim: still delivering after %d rounds", maxRounds)
}

type heldDelivery struct {
	d      Delivery
	plan   Plan
	rounds int
}

// extend keeps a held delivery from being redelivered while it waits.
func (e *Env) extend(ctx context.Context, d Delivery) error {
	sub := emu.SubscriptionName(e.PS, "sim-"+d.Topic)
	err := e.PS.SubscriptionAdminClient.ModifyAckDeadline(ctx, &pubsubpb.ModifyAckDeadlineRequest{Subscription: sub, AckIds: []string{d.AckID}, AckDeadlineSeconds: 600})
	if err != nil {
		return fmt.Errorf("sim: hold %s: %w", d, err)
	}
	return nil
}

// Attributes of a message dead-lettered after Policy.MaxAttempts, as Pub/Sub sets them.
const (
	attrDeliveryCount      = "CloudPubSubDeadLetterSourceDeliveryCount"
	attrSourceSubscription = "CloudPubSubDeadLetterSourceSubscription"
	attrSourceMessageID    = "SimSourceMessageId"
	attrSourceTopic        = "SimSourceTopic"
)

// deadLetter publishes d's message to TopicDead, as Pub/Sub's dead-letter policy does.
func (e *Env) deadLetter(ctx context.Context, d Delivery) error {
	attrs := map[string]string{}
	for k, v := range d.Message.GetAttributes() {
		attrs[k] = v
	}
	attrs[attrDeliveryCount] = strconv.Itoa(d.Attempt)
	attrs[attrSourceSubscription] = "sim-" + d.Topic
	attrs[attrSourceMessageID] = d.Message.GetMessageId()
	attrs[attrSourceTopic] = d.Topic
	if _, err := e.Pub.Publish(ctx, TopicDead, bus.Message{Data: d.Message.GetData(), Attributes: attrs}); err != nil {
		return fmt.Errorf("sim: dead-letter %s: %w", d, err)
	}
	return nil
}

func (e *Env) finish(col *collector, jumps, rounds, acked, nacked, lost int) Stats {
	col.mu.Lock()
	defer col.mu.Unlock()
	s := col.s
	s.ClockJumps, s.Rounds, s.Acked, s.Nacked, s.LostAcks = jumps, rounds, acked, nacked, lost
	return s
}

// Settle drains, then, while Jobs are unfinished, moves the clock past the stuck bound and ticks
// (the recovery sweep) and drains again, up to sweeps times. It returns the combined stats.
func (e *Env) SettleAll(ctx context.Context, p Policy, sweeps int) (Stats, error) {
	var total Stats
	for i := 0; ; i++ {
		s, err := e.Drain(ctx, p, 500)
		total.Add(s)
		if err != nil {
			return total, err
		}
		unfinished, err := e.Unfinished(ctx)
		if err != nil {
			return total, err
		}
		if unfinished == 0 || i >= sweeps {
			return total, nil
		}
		total.Sweeps++
		e.Clock.Advance(e.Config.StuckAfter + time.Minute)
		if err := e.Tick(ctx, fmt.Sprintf("sweep-%d-%d", i, e.Clock.Now().UnixNano())); err != nil {
			return total, err
		}
	}
}

// Unfinished counts Jobs that are neither COMPLETED nor FAILED.
func (e *Env) Unfinished(ctx context.Context) (int, error) {
	jobs, err := e.Jobs(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, j := range jobs {
		if j.Status != "COMPLETED" && j.Status != "FAILED" {
			n++
		}
	}
	return n, nil
}
