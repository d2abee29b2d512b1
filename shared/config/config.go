// Package config reads oncesync's settings from the environment, once, at cold start.
//
// Every variable the functions read is declared in Vars, with the functions that need it. The
// terraform drift test (terraform/drift_test.go) parses the HCL and fails when a function resource
// sets a variable that is not declared here, or misses one its entry point needs.
//
// # Defaults
//
// Durations use Go syntax ("15m", "192h"). Every default is chosen for production: the lease
// outlives the 540 s maximum timeout of an event-driven function by a wide margin, and idempotency
// keys outlive Pub/Sub's maximum message retention (7 days), so a redelivery always finds its key.
package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oncesync/oncesync/shared/telemetry"
)

// Entry point names, as registered with the functions framework and deployed by terraform.
const (
	Scheduler = "Scheduler"
	Expander  = "Expander"
	Importer  = "Importer"
	// ImporterBulk is the importer of the bulk lane: the same handler as Importer, deployed as
	// a function of its own on its own topic (ONCESYNC_TOPIC_CHUNKS_BULK), so bulk Jobs' chunks
	// have instances of their own (model.Class).
	ImporterBulk = "ImporterBulk"
)

// EntryPoints lists every function entry point, in pipeline order.
var EntryPoints = []string{Scheduler, Expander, Importer, ImporterBulk}

// Importers lists the entry points that import chunks, one per lane.
var Importers = []string{Importer, ImporterBulk}

// Environment variable names.
const (
	EnvProject        = "ONCESYNC_PROJECT"
	EnvDatabase       = "ONCESYNC_DATABASE"
	EnvTopicTicks     = "ONCESYNC_TOPIC_TICKS"
	EnvTopicExpand    = "ONCESYNC_TOPIC_EXPAND"
	EnvTopicChunks    = "ONCESYNC_TOPIC_CHUNKS"
	EnvTopicBulk      = "ONCESYNC_TOPIC_CHUNKS_BULK"
	EnvBulkAfter      = "ONCESYNC_BULK_AFTER"
	EnvSourceKind     = "ONCESYNC_SOURCE_KIND"
	EnvKeyset         = "ONCESYNC_KEYSET"
	EnvKeysetKMS      = "ONCESYNC_KEYSET_KMS_KEY"
	EnvTokenMaxAge    = "ONCESYNC_TOKEN_MAX_AGE"
	EnvPageSize       = "ONCESYNC_PAGE_SIZE"
	EnvChunkSize      = "ONCESYNC_DEFAULT_CHUNK_SIZE"
	EnvLease          = "ONCESYNC_LEASE"
	EnvKeyRetention   = "ONCESYNC_KEY_RETENTION"
	EnvStuckAfter     = "ONCESYNC_STUCK_AFTER"
	EnvWindowLag      = "ONCESYNC_WINDOW_LAG"
	EnvSourceTimeout  = "ONCESYNC_SOURCE_TIMEOUT"
	EnvMaxChunkBytes  = "ONCESYNC_MAX_CHUNK_BYTES"
	EnvSweepBatchSize = "ONCESYNC_SWEEP_LIMIT"
	EnvTickUnit       = "ONCESYNC_TICK_UNIT"
	EnvTopicDead      = "ONCESYNC_TOPIC_DEADLETTERS"
	EnvMaxDeliveryAge = "ONCESYNC_MAX_DELIVERY_AGE"
	EnvTimeout        = "ONCESYNC_FUNCTION_TIMEOUT"
	EnvBudgetPercent  = "ONCESYNC_BUDGET_PERCENT"
	EnvSliceRows      = "ONCESYNC_SLICE_ROWS"
	EnvMaxSlices      = "ONCESYNC_MAX_SLICES"
	EnvSearchSlots    = "ONCESYNC_SEARCH_CONCURRENCY"
	EnvParallelAfter  = "ONCESYNC_PARALLEL_AFTER"
	EnvTraces         = "ONCESYNC_TRACES"
	EnvTraceSample    = "ONCESYNC_TRACE_SAMPLE_RATIO"
	EnvMetrics        = "ONCESYNC_METRICS"
)

// Var is one environment variable, the one entry that drives everything about it: who reads it,
// where it goes in Config, its default and bounds, and its documentation. Load, Default and
// Validate read the table; so do the generated reference (docs/configuration.md) and the terraform
// drift test, which checks terraform's validations against Min and Max. A new setting is one
// entry here and one field of Config.
type Var struct {
	Name      string
	Functions []string // entry points that need it
	Secret    bool     // must come from Secret Manager, never a plain value
	File      bool     // with Secret: the value is the path of a file a secret volume mounts
	Required  bool     // no default
	Doc       string
	// Default is its value when unset, spelled as in the environment ("" for none).
	Default string
	// Min and Max bound it, spelled the same way ("" for no bound).
	Min, Max string
	// Tuned marks a default tuned on the emulators and this project's 2-core machines rather
	// than derived from a production limit: measure on the real services before relying on it.
	Tuned bool
	// Field is where it goes in a Config: a *string, *int, *float64 or *time.Duration.
	Field func(c *Config) any
}

// Vars is the single list of environment variables oncesync reads.
var Vars = []Var{
	{Name: EnvProject, Functions: all(), Required: true, Doc: "Google Cloud project that holds Firestore and the topics.",
		Field: func(c *Config) any { return &c.Project }},
	{Name: EnvDatabase, Functions: all(), Default: "(default)", Doc: "Firestore database ID.",
		Field: func(c *Config) any { return &c.Database }},
	{Name: EnvTopicTicks, Functions: []string{Scheduler}, Required: true, Doc: "Topic ID of the ticks (the scheduler's trigger): a tick publishes its parts there, units of settings and pages of the recovery sweep.",
		Field: func(c *Config) any { return &c.TopicTicks }},
	{Name: EnvTopicExpand, Functions: []string{Scheduler, Expander}, Required: true, Doc: "Topic ID expand messages are published to (scheduler; expander's continuations).",
		Field: func(c *Config) any { return &c.TopicExpand }},
	{Name: EnvTopicChunks, Functions: []string{Scheduler, Expander}, Required: true, Doc: "Topic ID chunk messages are published to (expander; scheduler's recovery sweep).",
		Field: func(c *Config) any { return &c.TopicChunks }},
	{Name: EnvTopicBulk, Functions: []string{Scheduler, Expander}, Doc: "Topic ID of the bulk lane: chunk messages of Jobs whose window counts more than " + EnvBulkAfter + " records, served by the ImporterBulk function with instances of its own, so a small tenant's Job never queues behind a bulk Job's chunks (empty: one lane, every chunk on " + EnvTopicChunks + ").",
		Field: func(c *Config) any { return &c.TopicChunksBulk }},
	{Name: EnvBulkAfter, Functions: []string{Expander}, Default: "20000", Min: "0", Tuned: true, Doc: "A Job whose window counts more records than this is bulk: its chunks go to " + EnvTopicBulk + " (decided once, at the cut; 0: no bulk class).",
		Field: func(c *Config) any { return &c.BulkAfter }},
	{Name: EnvSourceKind, Functions: []string{Expander}, Default: "salesforce", Doc: "The connector whose limits and query rules settings are checked against (the only one so far; each tenant's connection names its own).",
		Field: func(c *Config) any { return &c.SourceKind }},
	{Name: EnvKeyset, Functions: []string{Expander}, Required: true, Secret: true, File: true, Doc: "The tink keyset that seals tenants' credentials in connections/{tenant}: a file, cleartext for local runs, or encrypted by " + EnvKeysetKMS + ". Each tenant is searched in its own org through its connection (oncesync-ops tenants connect); there is no deployment-wide source.",
		Field: func(c *Config) any { return &c.Keyset }},
	{Name: EnvTokenMaxAge, Functions: []string{Expander}, Default: "15m", Min: "1m", Max: "24h", Doc: "A tenant's access token this old is refreshed before it is used (15m: the shortest session timeout an org can set; a token refused sooner is refreshed at once).",
		Field: func(c *Config) any { return &c.TokenMaxAge }},
	{Name: EnvKeysetKMS, Functions: []string{Expander}, Doc: "The Cloud KMS key (gcp-kms://projects/…/cryptoKeys/…) that encrypts " + EnvKeyset + " (empty: the keyset is cleartext, for local runs only).",
		Field: func(c *Config) any { return &c.KeysetKMS }},
	{Name: EnvPageSize, Functions: []string{Expander}, Default: "2000", Min: "1", Doc: "Records per source page requested (the connector checks its own bounds, Salesforce's are 200..2000).",
		Field: func(c *Config) any { return &c.PageSize }},
	{Name: EnvChunkSize, Functions: []string{Scheduler}, Default: "500", Min: "1", Max: strconv.Itoa(MaxChunkSize), Tuned: true, Doc: "Chunk size for sync settings that do not set one.",
		Field: func(c *Config) any { return &c.ChunkSize }},
	{Name: EnvLease, Functions: all(), Default: "15m", Min: "1s", Doc: "In-progress lease on an idempotency key (must exceed the function timeout).",
		Field: func(c *Config) any { return &c.Lease }},
	{Name: EnvKeyRetention, Functions: all(), Default: "192h", Doc: "How long idempotency keys live before TTL deletion (at least the lease; past Pub/Sub's 7-day retention).",
		Field: func(c *Config) any { return &c.KeyRetention }},
	{Name: EnvStuckAfter, Functions: []string{Scheduler}, Default: "20m", Min: "1ms", Doc: "Age after which the recovery sweep re-publishes unfinished work.",
		Field: func(c *Config) any { return &c.StuckAfter }},
	{Name: EnvWindowLag, Functions: []string{Scheduler}, Default: "10m", Min: "0s", Doc: "How far behind the tick a Job's window ends, for source records that commit after their stamp (10m: Salesforce's longest transaction; see docs/operations.md, Late commits and the window lag).",
		Field: func(c *Config) any { return &c.WindowLag }},
	{Name: EnvSourceTimeout, Functions: []string{Expander}, Default: "60s", Min: "1ms", Doc: "Deadline of one source page request.",
		Field: func(c *Config) any { return &c.SourceTimeout }},
	{Name: EnvMaxChunkBytes, Functions: []string{Expander}, Default: "800000", Min: "10000", Max: "1000000", Doc: "Largest encoded chunk document in bytes (Firestore's limit is 1 MiB).",
		Field: func(c *Config) any { return &c.MaxChunkBytes }},
	{Name: EnvSweepBatchSize, Functions: []string{Scheduler}, Default: "200", Min: "1", Max: "500", Doc: "Unfinished Jobs per page of the recovery sweep: each page is one delivery, and a tick's sweep visits every page.",
		Field: func(c *Config) any { return &c.SweepLimit }},
	{Name: EnvTickUnit, Functions: []string{Scheduler}, Default: "100", Min: "1", Max: "1000", Tuned: true, Doc: "Sync settings per unit of a tick: each unit is one delivery of the scheduler, which creates its Jobs 8 at a time.",
		Field: func(c *Config) any { return &c.TickUnit }},
	{Name: EnvTopicDead, Functions: all(), Doc: "Topic ID dead letters are also published to (empty: Firestore only).",
		Field: func(c *Config) any { return &c.TopicDead }},
	{Name: EnvMaxDeliveryAge, Functions: all(), Default: "23h", Min: "1m", Doc: "Age after which a message that still fails is dead-lettered and acked (Eventarc stops retrying at 24h).",
		Field: func(c *Config) any { return &c.MaxDeliveryAge }},
	{Name: EnvTimeout, Functions: []string{Scheduler, Expander}, Default: "540s", Min: "1ms", Doc: "The function's deployed timeout, as terraform sets it (must be shorter than the lease).",
		Field: func(c *Config) any { return &c.Timeout }},
	{Name: EnvBudgetPercent, Functions: []string{Scheduler, Expander}, Default: "50", Min: "1", Max: "80", Tuned: true, Doc: "Share of the timeout, in percent, after which an expansion checkpoints and hands the rest to a continuation (and a tick's listing or unit hands its rest off).",
		Field: func(c *Config) any { return &c.BudgetPercent }},
	{Name: EnvSliceRows, Functions: []string{Expander}, Default: "20000", Min: "0", Tuned: true, Doc: "Rows a slice of a Job's window aims at: a larger window is cut into slices searched in parallel, sized by the source's counts (0: never slice).",
		Field: func(c *Config) any { return &c.SliceRows }},
	{Name: EnvMaxSlices, Functions: []string{Expander}, Default: "32", Min: "1", Max: "999", Tuned: true, Doc: "Most slices one Job's window is cut into.",
		Field: func(c *Config) any { return &c.MaxSlices }},
	{Name: EnvSearchSlots, Functions: []string{Expander}, Default: "4", Min: "1", Tuned: true, Doc: "Searches a tenant runs at once, for tenants that do not set searchConcurrency, shared by the Jobs of its enabled settings (at most what its connector allows: Salesforce runs 10 long-running queries of an org at once).",
		Field: func(c *Config) any { return &c.SearchSlots }},
	{Name: EnvTraces, Functions: all(), Default: "none", Doc: "Where spans go: \"cloudtrace\" (Cloud Trace, in the project), \"file:PATH\" (JSON lines, for the demo's trace page) or \"none\" (the trace context still propagates).",
		Field: func(c *Config) any { return &c.Traces }},
	{Name: EnvTraceSample, Functions: all(), Default: "1", Min: "0", Max: "1", Doc: "Share of ticks whose trace is recorded; every delivery of a recorded tick is recorded with it.",
		Field: func(c *Config) any { return &c.TraceSample }},
	{Name: EnvMetrics, Functions: all(), Default: "none", Doc: "Where metrics go: \"cloudmonitoring\" (Cloud Monitoring, as workload.googleapis.com/<name>, every 60 s) or \"none\".",
		Field: func(c *Config) any { return &c.Metrics }},
	{Name: EnvParallelAfter, Functions: []string{Expander}, Default: "300ms", Min: "0s", Tuned: true, Doc: "A Job's slices are searched in parallel only when its first source page took at least this long to arrive; a faster source is searched one slice after another, since parallel searches would only compete with the imports for Firestore (0s: always parallel).",
		Field: func(c *Config) any { return &c.ParallelAfter }},
}

func all() []string { return slices.Clone(EntryPoints) }

// VarsFor returns the names of the variables entry point fn reads.
func VarsFor(fn string) []string {
	var out []string
	for _, v := range Vars {
		if slices.Contains(v.Functions, fn) {
			out = append(out, v.Name)
		}
	}
	return out
}

// Config is oncesync's runtime configuration.
type Config struct {
	Project         string
	Database        string
	TopicTicks      string
	TopicExpand     string
	TopicChunks     string
	TopicChunksBulk string
	BulkAfter       int
	SourceKind      string
	Keyset          string // the credentials keyset's file
	KeysetKMS       string // the KMS key that encrypts it
	TokenMaxAge     time.Duration
	PageSize        int
	ChunkSize       int
	Lease           time.Duration
	KeyRetention    time.Duration
	StuckAfter      time.Duration
	WindowLag       time.Duration
	SourceTimeout   time.Duration
	Traces          string  // telemetry.Config.Exporter
	Metrics         string  // telemetry.MeterConfig.Exporter
	TraceSample     float64 // telemetry.Config.SampleRatio
	MaxChunkBytes   int
	SweepLimit      int
	TickUnit        int
	TopicDead       string
	MaxDeliveryAge  time.Duration
	Timeout         time.Duration
	BudgetPercent   int
	SliceRows       int
	MaxSlices       int
	SearchSlots     int
	ParallelAfter   time.Duration
}

// Budget is how long one expansion delivery searches before it hands off: BudgetPercent of
// Timeout. What runs after it (the page being read, the last chunk's write and the waits for
// its messages) must fit in the rest of the timeout.
// Meters is the metrics configuration of entry point fn.
func (c Config) Meters(fn string) telemetry.MeterConfig {
	return telemetry.MeterConfig{Exporter: c.Metrics, Project: c.Project, Service: "oncesync-" + strings.ToLower(fn)}
}

// Telemetry is the tracing configuration of entry point fn (its service name).
func (c Config) Telemetry(fn string) telemetry.Config {
	return telemetry.Config{Exporter: c.Traces, SampleRatio: c.TraceSample, Project: c.Project, Service: "oncesync-" + strings.ToLower(fn)}
}

func (c Config) Budget() time.Duration { return c.Timeout * time.Duration(c.BudgetPercent) / 100 }

// Default returns the production defaults (each Var's Default) with no project, topics or source.
func Default() Config {
	var c Config
	for _, v := range Vars {
		if v.Default != "" {
			if err := set(v.Field(&c), v.Default); err != nil {
				panic(fmt.Sprintf("config: %s: default %q: %v", v.Name, v.Default, err)) // TestEveryVarIsWellFormed
			}
		}
	}
	return c
}

// set parses s into the field dst points to.
func set(dst any, s string) error {
	switch p := dst.(type) {
	case *string:
		*p = s
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return errors.New("not a whole number")
		}
		*p = n
	case *float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return errors.New("not a number")
		}
		*p = f
	case *time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*p = d
	default:
		return fmt.Errorf("unsupported field type %T", dst)
	}
	return nil
}

// Within reports whether value, spelled as in the environment, parses and lies within v's bounds.
func (v Var) Within(value string) error {
	var c Config
	dst := v.Field(&c)
	if err := set(dst, value); err != nil {
		return err
	}
	cmp := func(bound string) (int, error) {
		var b Config
		bd := v.Field(&b)
		if err := set(bd, bound); err != nil {
			return 0, fmt.Errorf("bound %q: %w", bound, err)
		}
		switch p := dst.(type) {
		case *int:
			return compare(*p, *bd.(*int)), nil
		case *float64:
			return compare(*p, *bd.(*float64)), nil
		case *time.Duration:
			return compare(*p, *bd.(*time.Duration)), nil
		}
		return 0, fmt.Errorf("%s has bounds but no order", v.Name)
	}
	if v.Min != "" {
		if c, err := cmp(v.Min); err != nil || c < 0 {
			return errors.Join(err, fmt.Errorf("below its minimum %s", v.Min))
		}
	}
	if v.Max != "" {
		if c, err := cmp(v.Max); err != nil || c > 0 {
			return errors.Join(err, fmt.Errorf("above its maximum %s", v.Max))
		}
	}
	return nil
}

func compare[T int | float64 | time.Duration](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Lookup returns the Var called name.
func Lookup(name string) (Var, bool) {
	for _, v := range Vars {
		if v.Name == name {
			return v, true
		}
	}
	return Var{}, false
}

// Load reads the variables entry point fn needs (all of them when fn is empty) through getenv,
// applies defaults and validates the result.
func Load(fn string, getenv func(string) string) (Config, error) {
	c := Default()
	var errs []error
	need := func(name string) bool { return fn == "" || slices.Contains(VarsFor(fn), name) }
	for _, v := range Vars {
		s := getenv(v.Name)
		switch {
		case s != "":
			if err := set(v.Field(&c), s); err != nil {
				errs = append(errs, fmt.Errorf("config: %s=%q: %w", v.Name, s, err))
			}
		case v.Required && need(v.Name):
			errs = append(errs, fmt.Errorf("config: %s is required for %s", v.Name, orAll(fn)))
		}
	}
	if err := errors.Join(append(errs, c.Validate())...); err != nil {
		return Config{}, err
	}
	return c, nil
}

func orAll(fn string) string {
	if fn == "" {
		return "every function"
	}
	return fn
}

// MaxChunkSize is the largest chunk size, of the deployment's default and of a sync setting.
const MaxChunkSize = 5000

// Validate reports settings that cannot work: each value outside its Var's bounds, then the rules
// that relate several.
func (c Config) Validate() error {
	var errs []error
	for _, v := range Vars {
		if v.Min == "" && v.Max == "" {
			continue
		}
		value := fmt.Sprint(reflectValue(v.Field(&c)))
		if err := v.Within(value); err != nil {
			errs = append(errs, fmt.Errorf("config: %s=%s: %w", v.Name, value, err))
		}
	}
	if c.KeyRetention < c.Lease {
		errs = append(errs, fmt.Errorf("config: key retention %v shorter than the lease %v", c.KeyRetention, c.Lease))
	}
	if c.Timeout >= c.Lease {
		errs = append(errs, fmt.Errorf("config: function timeout %v must be shorter than the lease %v", c.Timeout, c.Lease))
	}
	if err := c.Telemetry("").Validate(); err != nil {
		errs = append(errs, fmt.Errorf("config: %s, %s: %w", EnvTraces, EnvTraceSample, err))
	}
	if c.Metrics != "" && c.Metrics != "none" && c.Metrics != "cloudmonitoring" {
		errs = append(errs, fmt.Errorf("config: %s=%q is not none or cloudmonitoring", EnvMetrics, c.Metrics))
	}
	return errors.Join(errs...)
}

// reflectValue is what field pointer p points to.
func reflectValue(p any) any {
	switch p := p.(type) {
	case *string:
		return *p
	case *int:
		return *p
	case *float64:
		return strconv.FormatFloat(*p, 'g', -1, 64)
	case *time.Duration:
		return p.String()
	}
	return nil
}
