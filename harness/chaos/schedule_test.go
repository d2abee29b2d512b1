package chaos

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"pgregory.net/rapid"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/functions/importer"
	"github.com/oncesync/oncesync/functions/scheduler"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
)

// Case is one generated world and everything that happens to it: the source data, the sync
// settings, the ticks, the poison inputs and the fault schedule. It is drawn before anything
// runs, so that a seed names it completely.
type Case struct {
	PageSize int // rows per source page
	// SearchSlots is every tenant's searchConcurrency: how many slices of a Job are searched at
	// once (0: the deployment's 2).
	SearchSlots int
	Objects     []Object
	Settings    []Setting
	Ticks       []Tick
	Poison      []string // poison messages published with the first tick (see poisonKinds)
	Resyncs     []Resync // resync requests, each after a tick's drain, with the faults on
	// Budget, when Reserve is set, gives every setting that API reserve and the source's daily
	// API requests only Left more than it while the faults are on (a new day comes with the
	// settling), so Jobs pause and must resume without loss.
	Budget Budget
	// Purges, when set, hard-deletes that many records of each object from the source once
	// everything has settled, and reconciles every setting twice, with the case's Firestore faults
	// on again.
	Purges int
	Faults Schedule
}

// Budget is a case's API budget (see Case.Budget).
type Budget struct {
	Reserve int // every setting's apiReserve
	Left    int // requests the source allows beyond the reserve when the case starts
}

// apiLimit is the fixture's daily API requests in a case with a Budget.
const apiLimit = 10_000

// Resync is an operator's request to import a setting's history again (oncesync-ops settings
// resync --full), sent after a tick's drain: its window ends at the watermark as it is then.
type Resync struct {
	Setting   int  // index into Case.Settings
	AfterTick int  // sent once this tick's deliveries are drained
	Twice     bool // sent twice (the operator retries): still one Job
}

// Object is one source object's dataset.
type Object struct {
	Name    string
	Prefix  string // Salesforce key prefix of its IDs
	Rows    int    // records in the first window
	Updated int    // percent of them with a second, newer version in the same window
	Seed    int64
	Bad     int // malformed rows (no usable SystemModstamp) filed inside the first window
}

// Setting is one sync setting.
type Setting struct {
	ID        string
	Tenant    string
	Object    int // index into Case.Objects
	Target    string
	ChunkSize int
	Ghost     bool // its tenant does not exist: the scheduler must dead-letter the setting
}

// Tick is one tick of Cloud Scheduler and the source changes before it.
type Tick struct {
	After   time.Duration // simulated time that passes before it (after the previous tick's drain)
	New     []int         // new records per object, inside this tick's window
	Updates []int         // newer versions of existing records per object, inside this tick's window
	Twice   bool          // published twice with the same tick ID (Cloud Scheduler is at-least-once)
}

// TickID is the ID of tick k.
func TickID(k int) string { return fmt.Sprintf("tick-%d", k) }

// Schedule is the fault schedule of a case.
type Schedule struct {
	Deliveries  []DeliveryFault
	Firestore   []sim.Fault
	Publish     []sim.PublishFault
	Source      []SourceFault
	MaxAttempts int    // Pub/Sub dead-letter policy (0: none)
	Shuffle     uint64 // non-zero: every pulled batch is shuffled with this seed (reordering)
}

// Target names messages by what they mean, so that a schedule replays whatever IDs Pub/Sub gives
// them: -1 matches any setting, tick or chunk.
type Target struct {
	Function string
	Setting  int
	Tick     int
	Chunk    int
}

func (t Target) String() string {
	part := func(name string, v int) string {
		if v < 0 {
			return name + " *"
		}
		return fmt.Sprintf("%s %d", name, v)
	}
	switch t.Function {
	case config.Scheduler:
		return "tick message (" + part("tick", t.Tick) + ")"
	case config.Expander:
		return "expand message (" + part("setting", t.Setting) + ", " + part("tick", t.Tick) + ")"
	}
	return "chunk message (" + part("setting", t.Setting) + ", " + part("tick", t.Tick) + ", " + part("chunk", t.Chunk) + ")"
}

func (t Target) matches(o Target) bool {
	return t.Function == o.Function && (t.Setting < 0 || t.Setting == o.Setting) &&
		(t.Tick < 0 || t.Tick == o.Tick) && (t.Chunk < 0 || t.Chunk == o.Chunk)
}

// DeliveryFault is what happens to the Nth delivery (from Pub/Sub, 1-based) of the messages
// Target names.
type DeliveryFault struct {
	Target
	Nth int
	sim.Plan
}

func (d DeliveryFault) String() string {
	return fmt.Sprintf("delivery #%d of %s: %s", d.Nth, d.Target, d.Plan)
}

// SourceFault makes the source API misbehave on one page of one object's searches.
type SourceFault struct {
	Object int    // index into Case.Objects
	Page   int    // 0: the first page of a search, k: its k-th next page
	Kind   string // see sourceKinds
	Times  int    // requests it fires on
}

func (s SourceFault) String() string {
	return fmt.Sprintf("source %s on page %d of object %d, %d time(s)", s.Kind, s.Page, s.Object, s.Times)
}

func (c Case) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "source pages of %d rows, %d slices of a Job searched at once (0: 2)\n", c.PageSize, c.SearchSlots)
	for i, o := range c.Objects {
		fmt.Fprintf(&b, "object %d %s: %d rows (%d%% updated in the window, seed %d), %d malformed\n", i, o.Name, o.Rows, o.Updated, o.Seed, o.Bad)
	}
	for i, s := range c.Settings {
		ghost := ""
		if s.Ghost {
			ghost = " (tenant does not exist: poison)"
		}
		fmt.Fprintf(&b, "setting %d %s: tenant %s, object %d, %s target, chunks of %d%s\n", i, s.ID, s.Tenant, s.Object, s.Target, s.ChunkSize, ghost)
	}
	for k, t := range c.Ticks {
		twice := ""
		if t.Twice {
			twice = ", published twice"
		}
		fmt.Fprintf(&b, "tick %d after %v: new rows %v, updated rows %v%s\n", k, t.After, t.New, t.Updates, twice)
	}
	if len(c.Poison) > 0 {
		fmt.Fprintf(&b, "poison messages: %s\n", strings.Join(c.Poison, ", "))
	}
	for _, r := range c.Resyncs {
		twice := ""
		if r.Twice {
			twice = ", sent twice"
		}
		fmt.Fprintf(&b, "resync of setting %d after tick %d%s\n", r.Setting, r.AfterTick, twice)
	}
	if c.Budget.Reserve > 0 {
		fmt.Fprintf(&b, "API budget: reserve %d, %d requests left beyond it until the faults stop\n", c.Budget.Reserve, c.Budget.Left)
	}
	if c.Purges > 0 {
		fmt.Fprintf(&b, "then %d records of each object hard-deleted, every setting reconciled twice\n", c.Purges)
	}
	b.WriteString(c.Faults.String())
	return b.String()
}

func (s Schedule) String() string {
	var b strings.Builder
	b.WriteString("fault schedule:")
	n := 0
	line := func(format string, args ...any) {
		n++
		fmt.Fprintf(&b, "\n  "+format, args...)
	}
	for _, d := range s.Deliveries {
		line("%s", d)
	}
	for _, f := range s.Firestore {
		when := "before it is applied"
		if f.After {
			when = "after it is applied"
		}
		every := ""
		if f.Every > 0 {
			every = fmt.Sprintf(", then every %d", f.Every)
		}
		line("Firestore %s call #%d fails with %s %s%s", f.Method, f.Nth, f.Code, when, every)
	}
	for _, p := range s.Publish {
		line("%s", p)
	}
	for _, f := range s.Source {
		line("%s", f)
	}
	if s.MaxAttempts > 0 {
		line("dead-letter after %d delivery attempts", s.MaxAttempts)
	}
	if s.Shuffle != 0 {
		line("every pulled batch shuffled (seed %d)", s.Shuffle)
	}
	if n == 0 {
		b.WriteString(" none")
	}
	return b.String()
}

// Faults counts the faults a schedule plans (each may fire several times, or never).
func (s Schedule) Faults() int {
	n := len(s.Deliveries) + len(s.Firestore) + len(s.Publish) + len(s.Source)
	if s.MaxAttempts > 0 {
		n++
	}
	if s.Shuffle != 0 {
		n++
	}
	return n
}

// Poison message kinds, each dead-lettered by the function it reaches.
var poisonKinds = []string{"tick-not-json", "expand-unknown-job", "chunk-missing-fields", "chunk-unknown-job"}

// Source fault kinds.
var sourceKinds = []string{"429", "500", "slow", "timeout", "abort"}

// Steps lists, per function, the step boundaries where a crash or a duplicate can be injected.
type Steps map[string][]string

// pipelineSteps are the production functions' probe steps. Expander's chunk_written, the boundary
// between partial writes of the plan, is listed twice to draw it more often.
var pipelineSteps = Steps{
	config.Scheduler: {scheduler.StepClaimed, scheduler.StepScheduled, scheduler.StepPublished},
	config.Expander:  {expander.StepChunkWritten, expander.StepChunkWritten, expander.StepClaimed, expander.StepSearched, expander.StepPlanned, expander.StepPublished},
	config.Importer:  {importer.StepCommitted, importer.StepClaimed, importer.StepFinished},
}

func (s Steps) with(fn string, steps ...string) Steps {
	out := Steps{}
	for k, v := range s {
		out[k] = slices.Clone(v)
	}
	out[fn] = append(steps, out[fn]...)
	return out
}

// gen shapes the cases a property draws.
type gen struct {
	Steps Steps
	Large bool          // draw datasets of thousands of records
	Lease time.Duration // the deployment's lease (a duplicate this late finds it expired)
}

// maxChunks bounds the chunks of a Job's first window, which bounds a case's cost.
const maxChunks = 40

var objectNames = []struct{ name, prefix string }{{"Contact", "003"}, {"Lead", "00Q"}, {"Account", "001"}}

// chance is true with probability pct/100; it shrinks to false.
func chance(t *rapid.T, label string, pct int) bool {
	return rapid.IntRange(0, 99).Draw(t, label) >= 100-pct
}

// draw draws a case.
func (g gen) draw(t *rapid.T) Case {
	var c Case
	c.PageSize = rapid.SampledFrom([]int{2000, 7, 50, 200, 1, 3}).Draw(t, "pageSize")
	nObj := rapid.IntRange(1, len(objectNames)).Draw(t, "objects")
	for i := range nObj {
		o := Object{Name: objectNames[i].name, Prefix: objectNames[i].prefix, Seed: rapid.Int64Range(1, 1<<40).Draw(t, "seed")}
		switch {
		case g.Large:
			o.Rows = rapid.IntRange(1000, 3000).Draw(t, "rows")
		case chance(t, "emptyObject", 10):
			o.Rows = 0
		default:
			o.Rows = rapid.IntRange(1, 200).Draw(t, "rows")
		}
		o.Updated = rapid.SampledFrom([]int{0, 10, 30}).Draw(t, "updatedPct")
		if chance(t, "malformedRows", 15) {
			o.Bad = rapid.IntRange(1, 3).Draw(t, "malformed")
		}
		c.Objects = append(c.Objects, o)
	}
	nTenants := rapid.IntRange(1, 3).Draw(t, "tenants")
	nSettings := rapid.IntRange(1, 3).Draw(t, "settings")
	seen := map[string]bool{}
	for i := range nSettings {
		s := Setting{
			Tenant: fmt.Sprintf("t%d", rapid.IntRange(0, nTenants-1).Draw(t, "tenant")),
			Object: rapid.IntRange(0, nObj-1).Draw(t, "object"),
			Target: rapid.SampledFrom([]string{model.TargetGenerated, model.TargetUpsert}).Draw(t, "target"),
		}
		if key := fmt.Sprint(s.Tenant, s.Object); seen[key] {
			s.Tenant = fmt.Sprintf("t%d", nTenants+i) // one setting per tenant and object
		}
		seen[fmt.Sprint(s.Tenant, s.Object)] = true
		switch {
		case g.Large:
			s.ChunkSize = rapid.IntRange(40, 600).Draw(t, "chunkSize")
		case chance(t, "tinyChunks", 30):
			s.ChunkSize = rapid.IntRange(1, 5).Draw(t, "chunkSize")
		default:
			s.ChunkSize = rapid.IntRange(1, 120).Draw(t, "chunkSize")
		}
		// At most about maxChunks chunks per Job: chunk size 1 is drawn, but only for small data.
		s.ChunkSize = max(s.ChunkSize, (c.Objects[s.Object].Rows+maxChunks-1)/maxChunks)
		s.ID = fmt.Sprintf("s%d-%s-%s", i, s.Tenant, strings.ToLower(c.Objects[s.Object].Name))
		c.Settings = append(c.Settings, s)
	}
	if chance(t, "ghostSetting", 8) {
		c.Settings = append(c.Settings, Setting{ID: fmt.Sprintf("s%d-ghost", len(c.Settings)), Tenant: "ghost", Object: 0, Target: model.TargetUpsert, ChunkSize: 10, Ghost: true})
	}
	nTicks := rapid.IntRange(1, 3).Draw(t, "ticks")
	for k := range nTicks {
		tk := Tick{Twice: chance(t, "tickTwice", 15)}
		if k > 0 {
			tk.After = time.Duration(rapid.IntRange(1, 30).Draw(t, "minutesBetweenTicks")) * time.Minute
			for range c.Objects {
				tk.New = append(tk.New, rapid.IntRange(0, 30).Draw(t, "newRows"))
				tk.Updates = append(tk.Updates, rapid.IntRange(0, 10).Draw(t, "updatedRows"))
			}
		}
		c.Ticks = append(c.Ticks, tk)
	}
	if chance(t, "poisonMessages", 12) {
		c.Poison = rapid.SliceOfN(rapid.SampledFrom(poisonKinds), 1, 2).Draw(t, "poison")
	}
	c.Faults = g.drawSchedule(t, &c)
	// Derived from a value drawn already, not drawn: a new draw would change what the committed
	// fail files under testdata/rapid decode to, and they would no longer replay their cases.
	c.SearchSlots = []int{0, 1, 3}[c.Objects[0].Seed%3]
	// A resync in about one case in four, derived the same way.
	if v := c.Objects[0].Seed / 3; v%4 == 0 {
		if i := int(v/4) % len(c.Settings); !c.Settings[i].Ghost {
			c.Resyncs = append(c.Resyncs, Resync{Setting: i, AfterTick: int(v/16) % len(c.Ticks), Twice: v/8%2 == 0})
		}
	}
	// An API budget that runs down to the reserve in about one case in four, derived the same way.
	if v := c.Objects[0].Seed / 7; v%4 == 1 {
		c.Budget = Budget{Reserve: 1 + int(v/4%50), Left: int(v / 200 % 8)}
	}
	// Hard deletes and a reconcile in about one case in three, derived the same way.
	if v := c.Objects[0].Seed / 11; v%3 == 2 {
		c.Purges = 1 + int(v/3%4)
	}
	return c
}

// functions weights where delivery faults go: the expander and the importer do the work.
var functions = []string{config.Expander, config.Importer, config.Expander, config.Importer, config.Scheduler}

func (g gen) drawSchedule(t *rapid.T, c *Case) Schedule {
	var s Schedule
	n := rapid.IntRange(0, 5).Draw(t, "deliveryFaults")
	for range n {
		s.Deliveries = append(s.Deliveries, g.drawDeliveryFault(t, c))
	}
	if chance(t, "incidentPattern", 15) {
		// The incident's pattern, drawn more often than chance would: the expand message again
		// while the first delivery is writing the chunk plan.
		s.Deliveries = append(s.Deliveries, DeliveryFault{
			Target: Target{Function: config.Expander, Setting: -1, Tick: -1, Chunk: -1}, Nth: 1,
			Plan: sim.Plan{CopyAt: expander.StepChunkWritten, CopyDelay: rapid.SampledFrom([]time.Duration{2 * time.Second, 0, g.Lease + time.Second}).Draw(t, "copyDelay")},
		})
	}
	for range rapid.IntRange(0, 2).Draw(t, "firestoreFaults") {
		f := sim.Fault{
			Method: rapid.SampledFrom([]string{"Commit", "BatchGetDocuments", "RunQuery", "RunAggregationQuery", "BeginTransaction"}).Draw(t, "method"),
			Nth:    rapid.IntRange(1, 80).Draw(t, "nth"),
			Code:   rapid.SampledFrom([]codes.Code{codes.Unavailable, codes.Aborted, codes.DeadlineExceeded}).Draw(t, "code"),
		}
		if chance(t, "repeating", 8) {
			f.Every = rapid.IntRange(15, 40).Draw(t, "every")
		}
		if f.Method == "Commit" || f.Method == "BeginTransaction" {
			f.After = chance(t, "afterApplied", 40)
		}
		s.Firestore = append(s.Firestore, f)
	}
	for range rapid.IntRange(0, 2).Draw(t, "publishFaults") {
		s.Publish = append(s.Publish, sim.PublishFault{
			Topic: rapid.SampledFrom([]string{sim.TopicExpand, sim.TopicChunks, sim.TopicDead}).Draw(t, "topic"),
			Nth:   rapid.IntRange(1, 4).Draw(t, "nth"),
			After: chance(t, "afterStored", 50),
		})
	}
	for range rapid.IntRange(0, 2).Draw(t, "sourceFaults") {
		s.Source = append(s.Source, SourceFault{
			Object: rapid.IntRange(0, len(c.Objects)-1).Draw(t, "object"),
			Page:   rapid.IntRange(0, 3).Draw(t, "page"),
			Kind:   rapid.SampledFrom(sourceKinds).Draw(t, "kind"),
			Times:  rapid.IntRange(1, 6).Draw(t, "times"),
		})
	}
	if chance(t, "deadLetterPolicy", 30) {
		s.MaxAttempts = rapid.IntRange(3, 6).Draw(t, "maxAttempts")
	}
	if chance(t, "reorder", 30) {
		s.Shuffle = rapid.Uint64Range(1, 1<<62).Draw(t, "shuffleSeed")
	}
	return s
}

// deliveryFault is one kind of fault around a delivery, drawn with its weight. Adding a kind of
// delivery fault is a field of sim.Plan (what the simulator does) and a row here (how often the
// generator draws it, and with what parameters).
type deliveryFault struct {
	name   string
	weight int
	draw   func(t *rapid.T, g gen, steps []string, p *sim.Plan)
}

type faultTable []deliveryFault

func (ft faultTable) total() int {
	n := 0
	for _, f := range ft {
		n += f.weight
	}
	return n
}

// pick returns the kind that draw k (in [0, total)) falls on.
func (ft faultTable) pick(k int) deliveryFault {
	for _, f := range ft {
		if k < f.weight {
			return f
		}
		k -= f.weight
	}
	return ft[len(ft)-1]
}

// deliveryFaults are the kinds of delivery faults, by weight (out of 20). The order and weights
// are part of replaying committed fail files: append new kinds at the end.
var deliveryFaults = faultTable{
	{"ack lost", 2, func(_ *rapid.T, _ gen, _ []string, p *sim.Plan) { p.LoseAck = true }},
	{"duplicate after completion", 2, func(t *rapid.T, _ gen, _ []string, p *sim.Plan) {
		p.CopyAfter = true
		p.LoseAck = chance(t, "andLoseAck", 50)
	}},
	{"held back", 2, func(t *rapid.T, _ gen, _ []string, p *sim.Plan) { p.Hold = rapid.IntRange(1, 3).Draw(t, "rounds") }},
	{"crash", 5, func(t *rapid.T, _ gen, steps []string, p *sim.Plan) {
		p.CrashAt = rapid.SampledFrom(steps).Draw(t, "crashAt")
	}},
	{"duplicate at a step", 8, func(t *rapid.T, g gen, steps []string, p *sim.Plan) {
		p.CopyAt = rapid.SampledFrom(steps).Draw(t, "copyAt")
		p.CopyDelay = rapid.SampledFrom([]time.Duration{0, 2 * time.Second, g.Lease + time.Second}).Draw(t, "copyDelay")
		if chance(t, "copyCrashes", 20) {
			p.CopyPlan = &sim.Plan{CrashAt: rapid.SampledFrom(steps).Draw(t, "copyCrashAt")}
		}
		p.CopyAfter = chance(t, "andAfterCompletion", 20) // N-fold: the same message three times
	}},
	{"concurrent duplicates", 1, func(t *rapid.T, _ gen, _ []string, p *sim.Plan) {
		p.Concurrent = rapid.IntRange(1, 2).Draw(t, "concurrent")
	}},
}

func (g gen) drawDeliveryFault(t *rapid.T, c *Case) DeliveryFault {
	fn := rapid.SampledFrom(functions).Draw(t, "function")
	d := DeliveryFault{Target: Target{Function: fn, Setting: -1, Tick: -1, Chunk: -1}, Nth: 1}
	if fn != config.Scheduler && chance(t, "oneSetting", 50) {
		d.Setting = rapid.IntRange(0, len(c.Settings)-1).Draw(t, "setting")
	}
	if chance(t, "oneTick", 50) {
		d.Tick = rapid.IntRange(0, len(c.Ticks)-1).Draw(t, "tick")
	}
	if fn == config.Importer && chance(t, "oneChunk", 50) {
		d.Chunk = rapid.IntRange(0, 3).Draw(t, "chunk")
	}
	if chance(t, "laterDelivery", 25) {
		d.Nth = rapid.IntRange(2, 3).Draw(t, "nth")
	}
	steps := g.Steps[fn]
	k := rapid.IntRange(0, deliveryFaults.total()-1).Draw(t, "kind")
	deliveryFaults.pick(k).draw(t, g, steps, &d.Plan)
	// Independently of the fault above, an expansion may run out of its time budget after a chunk
	// write: it hands off, and a continuation (a new message) resumes the plan.
	if fn == config.Expander && chance(t, "budgetSpent", 30) {
		d.BudgetAt = expander.StepChunkWritten
	}
	return d
}
