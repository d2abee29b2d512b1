// Package app wires the three functions from configuration: the production entry points (built
// from the environment at cold start) and the same wiring with parts swapped for the local runner,
// the demo, the benchmark and the chaos harness.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/oncesync/oncesync/shared/connection"

	"github.com/oncesync/oncesync/shared/source/connectors"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/functions/importer"
	"github.com/oncesync/oncesync/functions/scheduler"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/deadletter"
	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
	"github.com/oncesync/oncesync/shared/logging"
	"github.com/oncesync/oncesync/shared/probe"
	"github.com/oncesync/oncesync/shared/store"
	"github.com/oncesync/oncesync/shared/target"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Keys is everything the three functions need of idempotency keys: the lease lifecycle that
// idem.Guard runs, and the fence of the expander's plan writes.
type Keys interface {
	idem.Keys
	store.Fencer
}

// Publisher publishes messages.
type Publisher interface {
	Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error)
}

// CloudEventFunc is the signature functions.CloudEvent registers.
type CloudEventFunc = func(context.Context, event.Event) error

// Components are the parts the functions are built from. Defaults fills them for production;
// tests and the harness replace single parts (a fault-injecting publisher, a clock, a probe).
type Components struct {
	Config      config.Config
	Firestore   *firestore.Client
	Store       *store.Store
	Keys        Keys
	Publisher   Publisher
	Sources     expander.Sources // each tenant's source, through its connection
	Committer   importer.Committer
	DeadLetters delivery.Sink
	Logger      *slog.Logger
	Now         func() time.Time
	Elapsed     func() time.Time // the expander's time-budget clock (nil: real time)
	Probe       probe.Func
	// Traces records each delivery's spans (telemetry.Off when nil: the trace context is still
	// passed on from message to message).
	Traces *telemetry.Traces
	// Metrics counts what the functions do (nil: nothing).
	Metrics *telemetry.Metrics
	// SchedulerStore, ExpanderStore and ImporterStore, when set, wrap the stores the functions
	// are built with (the chaos harness's mutants change what a function does with its store).
	SchedulerStore func(scheduler.Store) scheduler.Store
	ExpanderStore  func(expander.Store) expander.Store
	ImporterStore  func(importer.Store) importer.Store
}

// Defaults returns the production components on the given clients, with no Sources: the
// expander's are set by the caller (Entry: each tenant's connection).
func Defaults(cfg config.Config, fs *firestore.Client, pub Publisher, now func() time.Time, logger *slog.Logger) (Components, error) {
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = logging.New(os.Stdout, slog.LevelInfo)
	}
	keys, err := idem.New(idem.Config{Client: fs, Lease: cfg.Lease, Retention: cfg.KeyRetention, Now: now})
	if err != nil {
		return Components{}, err
	}
	return Components{
		Config: cfg, Firestore: fs, Store: store.New(fs, now), Keys: keys, Publisher: pub,
		Committer:   target.NewCommitter(fs, now),
		DeadLetters: &deadletter.Store{Client: fs, Publisher: pub, Topic: cfg.TopicDead},
		Logger:      logger, Now: now,
	}, nil
}

func (c Components) gate(fn string) *delivery.Gate {
	traces := c.Traces
	if traces == nil {
		traces = telemetry.Off()
	}
	return &delivery.Gate{Function: fn, Project: c.Config.Project, Logger: c.Logger, Sink: c.DeadLetters, MaxAge: c.Config.MaxDeliveryAge, Now: c.Now,
		Tracer: traces.Tracer(), Flush: traces.Flush, Metrics: c.Metrics}
}

// Handler returns entry point fn's handler as a CloudEvent function, decoding and deciding
// deliveries through a Gate (what the harness calls in process).
func (c Components) Handler(fn string) (CloudEventFunc, error) {
	h, err := c.handler(fn)
	if err != nil {
		return nil, err
	}
	return c.gate(fn).CloudEvent(h), nil
}

// HTTPHandler returns entry point fn's handler behind the Gate's HTTP front (what is deployed):
// requests the functions framework would reject before any CloudEvent exists are dead-lettered
// too (see delivery.Gate.HTTP).
func (c Components) HTTPHandler(fn string) (http.Handler, error) {
	h, err := c.handler(fn)
	if err != nil {
		return nil, err
	}
	return c.gate(fn).HTTP(h), nil
}

func (c Components) handler(fn string) (delivery.Handler, error) {
	var h delivery.Handler
	switch fn {
	case config.Scheduler:
		var ss scheduler.Store = c.Store
		if c.SchedulerStore != nil {
			ss = c.SchedulerStore(ss)
		}
		s, err := scheduler.New(scheduler.Config{
			Store: ss, Guard: idem.Guard{Keys: c.Keys}, Publisher: c.Publisher, DeadLetters: c.DeadLetters,
			TopicTicks: c.Config.TopicTicks, TopicExpand: c.Config.TopicExpand, TopicChunks: c.Config.TopicChunks, TopicChunksBulk: c.Config.TopicChunksBulk, ChunkSize: c.Config.ChunkSize,
			WindowLag: c.Config.WindowLag, StuckAfter: c.Config.StuckAfter, SweepLimit: c.Config.SweepLimit,
			UnitSize: c.Config.TickUnit, Budget: c.Config.Budget(), Elapsed: c.Elapsed, Now: c.Now, Probe: c.Probe,
		})
		if err != nil {
			return nil, err
		}
		h = s.Handle
	case config.Expander:
		var es expander.Store = store.Planner{Store: c.Store, Fence: c.Keys}
		if c.ExpanderStore != nil {
			es = c.ExpanderStore(es)
		}
		e, err := expander.New(expander.Config{
			Jobs: es, Plans: es, Guard: idem.Guard{Keys: c.Keys}, Sources: c.Sources,
			Publisher: c.Publisher, DeadLetters: c.DeadLetters, TopicExpand: c.Config.TopicExpand, TopicChunks: c.Config.TopicChunks,
			TopicChunksBulk: c.Config.TopicChunksBulk, BulkAfter: c.Config.BulkAfter,
			MaxChunkBytes: c.Config.MaxChunkBytes, Budget: c.Config.Budget(),
			SliceRows: c.Config.SliceRows, MaxSlices: c.Config.MaxSlices, SearchSlots: c.Config.SearchSlots,
			ParallelAfter: c.Config.ParallelAfter, Now: c.Now, Elapsed: c.Elapsed, Probe: c.Probe,
		})
		if err != nil {
			return nil, err
		}
		h = e.Handle
	case config.Importer, config.ImporterBulk: // one handler, a function per lane
		var is importer.Store = c.Store
		if c.ImporterStore != nil {
			is = c.ImporterStore(is)
		}
		i, err := importer.New(importer.Config{Store: is, Guard: idem.Guard{Keys: c.Keys}, Committer: c.Committer, Probe: c.Probe})
		if err != nil {
			return nil, err
		}
		h = i.Handle
	default:
		return nil, fmt.Errorf("app: unknown entry point %q", fn)
	}
	return h, nil
}

// Entry is the production entry points. Each builds its handler from the environment on its
// first event, once, and reuses it; a failed build is retried on the next event (the delivery
// fails and Pub/Sub redelivers it).
type Entry struct {
	getenv func(string) string
	mu     sync.Mutex
	built  map[string]http.Handler
	fs     *firestore.Client
	ps     *pubsub.Client
	pub    *bus.PubSub
	traces *telemetry.Traces
	meters *telemetry.Meters
}

// NewEntry returns entry points reading the process environment.
func NewEntry() *Entry { return &Entry{getenv: os.Getenv, built: map[string]http.Handler{}} }

// Scheduler is the Scheduler entry point.
func (e *Entry) Scheduler(w http.ResponseWriter, r *http.Request) { e.serve(config.Scheduler, w, r) }

// Expander is the Expander entry point.
func (e *Entry) Expander(w http.ResponseWriter, r *http.Request) { e.serve(config.Expander, w, r) }

// Importer is the Importer entry point (the standard lane's).
func (e *Entry) Importer(w http.ResponseWriter, r *http.Request) { e.serve(config.Importer, w, r) }

// ImporterBulk is the bulk lane's importer entry point.
func (e *Entry) ImporterBulk(w http.ResponseWriter, r *http.Request) {
	e.serve(config.ImporterBulk, w, r)
}

// serve answers 500 while the function cannot be built (bad configuration, a client that cannot
// start): Pub/Sub redelivers, and the message is not lost.
func (e *Entry) serve(fn string, w http.ResponseWriter, r *http.Request) {
	h, err := e.handler(r.Context(), fn)
	if err != nil {
		logging.New(os.Stderr, slog.LevelInfo).Error("function cannot start", slog.String(logging.Function, fn),
			slog.String(logging.MessageID, r.Header.Get("Ce-Id")), slog.String("error", err.Error()))
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h.ServeHTTP(w, r)
}

// NewSources builds the expander's sources: each tenant's own connection, sealed by the keyset
// cfg names (connectors.Pool). A tenant with no connection is refused, and pauses as
// disconnected. tune adjusts the connectors' HTTP (the benchmark counts requests).
func NewSources(ctx context.Context, cfg config.Config, fs *firestore.Client, tune connectors.Tuning) (expander.Sources, error) {
	if err := connectors.Check(cfg); err != nil {
		return nil, err
	}
	keys, err := connection.LoadKeyset(context.WithoutCancel(ctx), cfg.Keyset, cfg.KeysetKMS)
	if err != nil {
		return nil, err
	}
	return &connectors.Pool{Connections: connection.Store{FS: fs, Sealer: keys}, Config: cfg, MaxTokenAge: cfg.TokenMaxAge, Tuning: tune}, nil
}

func (e *Entry) handler(ctx context.Context, fn string) (http.Handler, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if h, ok := e.built[fn]; ok {
		return h, nil
	}
	cfg, err := config.Load(fn, e.getenv)
	if err != nil {
		return nil, err
	}
	if e.fs == nil {
		// Clients outlive the event that created them: they serve the instance's later events.
		fs, err := firestore.NewClientWithDatabase(context.WithoutCancel(ctx), cfg.Project, cfg.Database)
		if err != nil {
			return nil, fmt.Errorf("app: firestore client: %w", err)
		}
		ps, err := pubsub.NewClient(context.WithoutCancel(ctx), cfg.Project)
		if err != nil {
			fs.Close()
			return nil, fmt.Errorf("app: pubsub client: %w", err)
		}
		e.fs, e.ps, e.pub = fs, ps, bus.New(ps)
	}
	if e.traces == nil {
		// One provider per instance, named after the first function it serves (deployed, an
		// instance serves one).
		t, err := telemetry.New(context.WithoutCancel(ctx), cfg.Telemetry(fn))
		if err != nil {
			return nil, err
		}
		e.traces = t
	}
	if e.meters == nil {
		m, err := telemetry.NewMeters(cfg.Meters(fn))
		if err != nil {
			return nil, err
		}
		e.meters = m
	}
	var sources expander.Sources
	if fn == config.Expander {
		if sources, err = NewSources(ctx, cfg, e.fs, connectors.Tuning{}); err != nil {
			return nil, err
		}
	}
	comps, err := Defaults(cfg, e.fs, e.pub, nil, nil)
	if err != nil {
		return nil, err
	}
	comps.Sources = sources
	comps.Traces, comps.Metrics = e.traces, e.meters.Metrics
	h, err := comps.HTTPHandler(fn)
	if err != nil {
		return nil, err
	}
	e.built[fn] = h
	return h, nil
}
