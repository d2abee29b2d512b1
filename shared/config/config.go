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
)

// EntryPoints lists every function entry point, in pipeline order.
var EntryPoints = []string{Scheduler, Expander, Importer}

// Environment variable names.
const (
	EnvProject        = "ONCESYNC_PROJECT"
	EnvDatabase       = "ONCESYNC_DATABASE"
	EnvTopicExpand    = "ONCESYNC_TOPIC_EXPAND"
	EnvTopicChunks    = "ONCESYNC_TOPIC_CHUNKS"
	EnvSourceKind     = "ONCESYNC_SOURCE_KIND"
	EnvSourceURL      = "ONCESYNC_SOURCE_URL"
	EnvSourceToken    = "ONCESYNC_SOURCE_TOKEN"
	EnvPageSize       = "ONCESYNC_PAGE_SIZE"
	EnvChunkSize      = "ONCESYNC_DEFAULT_CHUNK_SIZE"
	EnvLease          = "ONCESYNC_LEASE"
	EnvKeyRetention   = "ONCESYNC_KEY_RETENTION"
	EnvStuckAfter     = "ONCESYNC_STUCK_AFTER"
	EnvWindowLag      = "ONCESYNC_WINDOW_LAG"
	EnvSourceTimeout  = "ONCESYNC_SOURCE_TIMEOUT"
	EnvMaxChunkBytes  = "ONCESYNC_MAX_CHUNK_BYTES"
	EnvSweepBatchSize = "ONCESYNC_SWEEP_LIMIT"
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

// Var describes one environment variable: who reads it and whether it is a secret.
type Var struct {
	Name      string
	Functions []string // entry points that need it
	Secret    bool     // must come from Secret Manager, never a plain value
	Required  bool     // no default
	Doc       string
}

// Vars is the single list of environment variables oncesync reads.
var Vars = []Var{
	{EnvProject, all(), false, true, "Google Cloud project that holds Firestore and the topics."},
	{EnvDatabase, all(), false, false, "Firestore database ID (default \"(default)\")."},
	{EnvTopicExpand, []string{Scheduler, Expander}, false, true, "Topic ID expand messages are published to (scheduler; expander's continuations)."},
	{EnvTopicChunks, []string{Scheduler, Expander}, false, true, "Topic ID chunk messages are published to (expander; scheduler's recovery sweep)."},
	{EnvSourceKind, []string{Expander}, false, false, "Which connector the expander searches with (default \"salesforce\", the only one so far; see connectors.New)."},
	{EnvSourceURL, []string{Expander}, false, true, "Base URL of the source API (a Salesforce instance URL)."},
	{EnvSourceToken, []string{Expander}, true, true, "Bearer token for the source API (Secret Manager)."},
	{EnvPageSize, []string{Expander}, false, false, "Records per source page requested (default 2000; the connector checks its own bounds, Salesforce's are 200..2000)."},
	{EnvChunkSize, []string{Scheduler}, false, false, "Chunk size for sync settings that do not set one (default 500)."},
	{EnvLease, all(), false, false, "In-progress lease on an idempotency key (default 15m; must exceed the function timeout)."},
	{EnvKeyRetention, all(), false, false, "How long idempotency keys live before TTL deletion (default 192h)."},
	{EnvStuckAfter, []string{Scheduler}, false, false, "Age after which the recovery sweep re-publishes unfinished work (default 20m)."},
	{EnvWindowLag, []string{Scheduler}, false, false, "How far behind the tick a Job's window ends, for source records that commit after their stamp (default 10m: Salesforce's longest transaction; see docs/operations.md, Late commits and the window lag)."},
	{EnvSourceTimeout, []string{Expander}, false, false, "Deadline of one source page request (default 60s)."},
	{EnvMaxChunkBytes, []string{Expander}, false, false, "Largest encoded chunk document (default 800000 bytes; Firestore's limit is 1 MiB)."},
	{EnvSweepBatchSize, []string{Scheduler}, false, false, "Most unfinished Jobs the recovery sweep visits per tick (default 200)."},
	{EnvTopicDead, all(), false, false, "Topic ID dead letters are also published to (empty: Firestore only)."},
	{EnvMaxDeliveryAge, all(), false, false, "Age after which a message that still fails is dead-lettered and acked (default 23h; Eventarc stops retrying at 24h)."},
	{EnvTimeout, []string{Expander}, false, false, "The function's deployed timeout, as terraform sets it (default 540s; must be shorter than the lease)."},
	{EnvBudgetPercent, []string{Expander}, false, false, "Share of the timeout after which an expansion checkpoints and hands the rest to a continuation (default 50 percent, at most 80)."},
	{EnvSliceRows, []string{Expander}, false, false, "Rows a slice of a Job's window aims at: a larger window is cut into slices searched in parallel, sized by the source's counts (0: never slice)."},
	{EnvMaxSlices, []string{Expander}, false, false, "Most slices one Job's window is cut into (1..999)."},
	{EnvSearchSlots, []string{Expander}, false, false, "Searches a tenant runs at once, for tenants that do not set searchConcurrency, shared by the Jobs of its enabled settings (Salesforce limits concurrent queries per org)."},
	{EnvTraces, all(), false, false, "Where spans go: \"cloudtrace\" (Cloud Trace, in the project), \"file:PATH\" (JSON lines, for the demo's trace page) or \"none\" (the default: the trace context still propagates)."},
	{EnvTraceSample, all(), false, false, "Share of ticks whose trace is recorded, 0..1 (default 1); every delivery of a recorded tick is recorded with it."},
	{EnvMetrics, all(), false, false, "Where metrics go: \"cloudmonitoring\" (Cloud Monitoring, as workload.googleapis.com/<name>, every 60 s) or \"none\" (the default)."},
	{EnvParallelAfter, []string{Expander}, false, false, "A Job's slices are searched in parallel only when its first source page took at least this long to arrive; a faster source is searched one slice after another, since parallel searches would only compete with the imports for Firestore (0s: always parallel)."},
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
	Project        string
	Database       string
	TopicExpand    string
	TopicChunks    string
	SourceKind     string
	SourceURL      string
	SourceToken    string
	PageSize       int
	ChunkSize      int
	Lease          time.Duration
	KeyRetention   time.Duration
	StuckAfter     time.Duration
	WindowLag      time.Duration
	SourceTimeout  time.Duration
	Traces         string  // telemetry.Config.Exporter
	Metrics        string  // telemetry.MeterConfig.Exporter
	TraceSample    float64 // telemetry.Config.SampleRatio
	MaxChunkBytes  int
	SweepLimit     int
	TopicDead      string
	MaxDeliveryAge time.Duration
	Timeout        time.Duration
	BudgetPercent  int
	SliceRows      int
	MaxSlices      int
	SearchSlots    int
	ParallelAfter  time.Duration
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

// Default returns the production defaults with no project, topics or source.
func Default() Config {
	return Config{
		Database:       "(default)",
		SourceKind:     "salesforce",
		PageSize:       2000,
		ChunkSize:      500,
		Lease:          15 * time.Minute,
		KeyRetention:   192 * time.Hour,
		StuckAfter:     20 * time.Minute,
		WindowLag:      10 * time.Minute,
		SourceTimeout:  60 * time.Second,
		MaxChunkBytes:  800_000,
		SweepLimit:     200,
		MaxDeliveryAge: 23 * time.Hour,
		Timeout:        540 * time.Second,
		BudgetPercent:  50,
		SliceRows:      20_000,
		MaxSlices:      32,
		SearchSlots:    4,
		ParallelAfter:  300 * time.Millisecond,
		TraceSample:    1,
	}
}

// Load reads the variables entry point fn needs (all of them when fn is empty) through getenv,
// applies defaults and validates the result.
func Load(fn string, getenv func(string) string) (Config, error) {
	c := Default()
	var errs []error
	need := func(name string) bool { return fn == "" || slices.Contains(VarsFor(fn), name) }
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	num := func(name string, dst *int) {
		if v := getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("config: %s=%q: not a whole number", name, v))
				return
			}
			*dst = n
		}
	}
	dur := func(name string, dst *time.Duration) {
		if v := getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("config: %s=%q: %w", name, v, err))
				return
			}
			*dst = d
		}
	}
	str(EnvProject, &c.Project)
	str(EnvDatabase, &c.Database)
	str(EnvTopicExpand, &c.TopicExpand)
	str(EnvTopicChunks, &c.TopicChunks)
	str(EnvSourceKind, &c.SourceKind)
	str(EnvSourceURL, &c.SourceURL)
	str(EnvSourceToken, &c.SourceToken)
	num(EnvPageSize, &c.PageSize)
	num(EnvChunkSize, &c.ChunkSize)
	dur(EnvLease, &c.Lease)
	dur(EnvKeyRetention, &c.KeyRetention)
	dur(EnvStuckAfter, &c.StuckAfter)
	dur(EnvWindowLag, &c.WindowLag)
	dur(EnvSourceTimeout, &c.SourceTimeout)
	num(EnvMaxChunkBytes, &c.MaxChunkBytes)
	num(EnvSweepBatchSize, &c.SweepLimit)
	str(EnvTopicDead, &c.TopicDead)
	dur(EnvMaxDeliveryAge, &c.MaxDeliveryAge)
	dur(EnvTimeout, &c.Timeout)
	num(EnvBudgetPercent, &c.BudgetPercent)
	num(EnvSliceRows, &c.SliceRows)
	num(EnvMaxSlices, &c.MaxSlices)
	num(EnvSearchSlots, &c.SearchSlots)
	dur(EnvParallelAfter, &c.ParallelAfter)
	str(EnvTraces, &c.Traces)
	str(EnvMetrics, &c.Metrics)
	if v := getenv(EnvTraceSample); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("config: %s=%q: not a number", EnvTraceSample, v))
		}
		c.TraceSample = f
	}
	for _, v := range Vars {
		if v.Required && need(v.Name) && getenv(v.Name) == "" {
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

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.PageSize < 1 {
		errs = append(errs, fmt.Errorf("config: page size %d is not positive", c.PageSize))
	}
	if c.ChunkSize < 1 || c.ChunkSize > MaxChunkSize {
		errs = append(errs, fmt.Errorf("config: chunk size %d outside 1..%d", c.ChunkSize, MaxChunkSize))
	}
	if c.Lease < time.Second {
		errs = append(errs, fmt.Errorf("config: lease %v is too short", c.Lease))
	}
	if c.KeyRetention < c.Lease {
		errs = append(errs, fmt.Errorf("config: key retention %v shorter than the lease %v", c.KeyRetention, c.Lease))
	}
	if c.StuckAfter <= 0 || c.WindowLag < 0 || c.SourceTimeout <= 0 {
		errs = append(errs, errors.New("config: stuck-after and source timeout must be positive, window lag not negative"))
	}
	if c.MaxChunkBytes < 10_000 || c.MaxChunkBytes > 1_000_000 {
		errs = append(errs, fmt.Errorf("config: max chunk bytes %d outside 10000..1000000", c.MaxChunkBytes))
	}
	if c.MaxDeliveryAge < time.Minute {
		errs = append(errs, fmt.Errorf("config: max delivery age %v is too short", c.MaxDeliveryAge))
	}
	if c.Timeout <= 0 || c.Timeout >= c.Lease {
		errs = append(errs, fmt.Errorf("config: function timeout %v must be positive and shorter than the lease %v", c.Timeout, c.Lease))
	}
	if c.BudgetPercent < 1 || c.BudgetPercent > 80 {
		errs = append(errs, fmt.Errorf("config: budget %d%% of the timeout outside 1..80", c.BudgetPercent))
	}
	if c.SliceRows < 0 || c.MaxSlices < 1 || c.MaxSlices > 999 || c.SearchSlots < 1 || c.ParallelAfter < 0 {
		errs = append(errs, fmt.Errorf("config: slice rows %d must not be negative, max slices %d within 1..999, search concurrency %d positive, parallel-after %v not negative", c.SliceRows, c.MaxSlices, c.SearchSlots, c.ParallelAfter))
	}
	if err := c.Telemetry("").Validate(); err != nil {
		errs = append(errs, fmt.Errorf("config: %s, %s: %w", EnvTraces, EnvTraceSample, err))
	}
	if c.Metrics != "" && c.Metrics != "none" && c.Metrics != "cloudmonitoring" {
		errs = append(errs, fmt.Errorf("config: %s=%q is not none or cloudmonitoring", EnvMetrics, c.Metrics))
	}
	if c.SweepLimit < 1 {
		errs = append(errs, fmt.Errorf("config: sweep limit %d must be positive", c.SweepLimit))
	}
	return errors.Join(errs...)
}
