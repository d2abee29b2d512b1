package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	rpprof "runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/oncesync/oncesync/shared/source/connectors"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"cloud.google.com/go/pubsub/v2"
	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/functions/app"
	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/idem"
)

// PathPrefix is where the bench-mode functions are served: /bench/Scheduler, /bench/Expander,
// /bench/Importer, and the counters at /bench/stats. The deployable functions, which the root
// package registers, stay at /Scheduler, /Expander and /Importer, unused.
const PathPrefix = "/bench"

// Delivery classes: the first POST of a message ID to an entry point, and every later one (an
// injected copy or a redelivery by Pub/Sub).
const (
	First  = "first"
	Repeat = "repeat"
)

// Counts is what the bench-mode functions counted for one entry point and delivery class.
type Counts struct {
	Deliveries int64            `json:"deliveries"`
	Failed     int64            `json:"failed"` // answered with an error (HTTP 500: redeliver)
	Reads      int64            `json:"reads"`  // Firestore documents read, as sim.Backend counts them
	Writes     int64            `json:"writes"` // Firestore writes committed
	RPCs       int64            `json:"rpcs"`   // Firestore RPCs, failed ones included
	RPCErrors  map[string]int64 `json:"rpcErrors,omitempty"`
	Aborts     []string         `json:"aborts,omitempty"` // what the first 20 aborted commits wrote
	// RPCTime is the time spent in Firestore calls, by method (summed over concurrent calls).
	RPCTime     map[string]time.Duration `json:"rpcTime,omitempty"`
	SourceCalls int64                    `json:"sourceCalls"` // source API requests (pages)
	Busy        time.Duration            `json:"busy"`        // time spent in the handler, summed
	Longest     time.Duration            `json:"longest"`     // the longest single delivery
}

// Ops returns billed Firestore operations: reads plus writes.
func (c Counts) Ops() int64 { return c.Reads + c.Writes }

func (c *Counts) add(o Counts) {
	c.Deliveries += o.Deliveries
	c.Failed += o.Failed
	c.Reads += o.Reads
	c.Writes += o.Writes
	c.RPCs += o.RPCs
	c.SourceCalls += o.SourceCalls
	c.Busy += o.Busy
	c.Longest = max(c.Longest, o.Longest)
	c.Aborts = append(c.Aborts, o.Aborts...)
	for k, v := range o.RPCTime {
		if c.RPCTime == nil {
			c.RPCTime = map[string]time.Duration{}
		}
		c.RPCTime[k] += v
	}
	for k, v := range o.RPCErrors {
		if c.RPCErrors == nil {
			c.RPCErrors = map[string]int64{}
		}
		c.RPCErrors[k] += v
	}
}

// Stats is the answer of /bench/stats.
type Stats struct {
	PID       int               `json:"pid"`
	Unguarded bool              `json:"unguarded"`
	Counts    map[string]Counts `json:"counts"` // by "Function/class"; "other" for calls outside a delivery
	// FirstImport is when the first Importer delivery returned success: the first chunk's records
	// were committed.
	FirstImport time.Time `json:"firstImport"`
}

// Sum adds the counts whose key is one of keys (all of them when keys is empty).
func (s Stats) Sum(keys ...string) Counts {
	var out Counts
	for k, c := range s.Counts {
		if len(keys) == 0 || slices.Contains(keys, k) {
			out.add(c)
		}
	}
	return out
}

// Imports sums the first deliveries of both lanes' importers.
func (s Stats) Imports() Counts {
	var keys []string
	for _, fn := range config.Importers {
		keys = append(keys, fn+"/"+First)
	}
	return s.Sum(keys...)
}

// Class sums one delivery class over every entry point.
func (s Stats) Class(class string) Counts {
	var keys []string
	for _, fn := range config.EntryPoints {
		keys = append(keys, fn+"/"+class)
	}
	return s.Sum(keys...)
}

// tag marks a delivery's context, so that the Firestore interceptor and the source transport can
// attribute the calls made on its behalf.
type tag struct{ key string }

type tagKey struct{}

// meter counts, per tag, with one sim.Backend each (the project's counting interceptor).
type meter struct {
	mu        sync.Mutex
	backends  map[string]*sim.Backend
	extra     map[string]*Counts // deliveries, failures, RPC errors, source calls, busy time
	seen      map[string]int     // Function + message ID → POSTs so far
	first     time.Time
	unguarded bool
}

func newMeter(unguarded bool) *meter {
	return &meter{backends: map[string]*sim.Backend{}, extra: map[string]*Counts{}, seen: map[string]int{}, unguarded: unguarded}
}

func keyOf(ctx context.Context) string {
	if t, ok := ctx.Value(tagKey{}).(tag); ok {
		return t.key
	}
	return "other"
}

// get returns the backend and extra counts of key. Called with m.mu held.
func (m *meter) get(key string) (*sim.Backend, *Counts) {
	b := m.backends[key]
	if b == nil {
		b = sim.NewBackend()
		m.backends[key] = b
		m.extra[key] = &Counts{}
	}
	return b, m.extra[key]
}

func (m *meter) backend(ctx context.Context) (*sim.Backend, string) {
	key := keyOf(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	b, _ := m.get(key)
	return b, key
}

func (m *meter) update(key string, f func(c *Counts)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, c := m.get(key)
	f(c)
}

func (m *meter) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	b, key := m.backend(ctx)
	start := time.Now()
	err := b.Unary(ctx, method, req, reply, cc, invoker, opts...)
	m.took(key, method, time.Since(start))
	if err != nil {
		m.rpcError(key, err)
		if status.Code(err) == codes.Aborted {
			m.aborted(key, method, req)
		}
	}
	return err
}

// aborted notes what a failed commit wrote: the collections of its writes, e.g.
// "Commit: chunks, engagementIndex×500, engagementsGen×500".
func (m *meter) aborted(key, method string, req any) {
	what := method[strings.LastIndexByte(method, '/')+1:]
	if c, ok := req.(*firestorepb.CommitRequest); ok {
		n := map[string]int{}
		var order []string
		for _, w := range c.Writes {
			name := w.GetUpdate().GetName()
			if name == "" {
				name = w.GetDelete()
			}
			parts := strings.Split(name, "/")
			coll := "?"
			if len(parts) >= 2 {
				coll = parts[len(parts)-2]
			}
			if n[coll] == 0 {
				order = append(order, coll)
			}
			n[coll]++
		}
		var b strings.Builder
		for i, coll := range order {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(coll)
			if n[coll] > 1 {
				fmt.Fprintf(&b, "×%d", n[coll])
			}
		}
		what += ": " + b.String()
	}
	m.update(key, func(c *Counts) {
		if len(c.Aborts) < 20 {
			c.Aborts = append(c.Aborts, what)
		}
	})
}

func (m *meter) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	b, key := m.backend(ctx)
	start := time.Now()
	s, err := b.Stream(ctx, desc, cc, method, streamer, opts...)
	if err != nil {
		m.rpcError(key, err)
		return s, err
	}
	return &timedStream{ClientStream: s, done: func() { m.took(key, method, time.Since(start)) }}, nil
}

// timedStream reports when a streaming call has ended (its first RecvMsg error, io.EOF included).
type timedStream struct {
	grpc.ClientStream
	once sync.Once
	done func()
}

func (s *timedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.once.Do(s.done)
	}
	return err
}

// took adds the duration of one call of method.
func (m *meter) took(key, method string, d time.Duration) {
	method = method[strings.LastIndexByte(method, '/')+1:]
	m.update(key, func(c *Counts) {
		if c.RPCTime == nil {
			c.RPCTime = map[string]time.Duration{}
		}
		c.RPCTime[method] += d
	})
}

func (m *meter) rpcError(key string, err error) {
	code := status.Code(err).String()
	m.update(key, func(c *Counts) {
		if c.RPCErrors == nil {
			c.RPCErrors = map[string]int64{}
		}
		c.RPCErrors[code]++
	})
}

// countingTransport counts the source client's requests, attributed like Firestore calls.
type countingTransport struct {
	m    *meter
	next http.RoundTripper
}

// RoundTrip counts a source API request and sends it.
func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.m.update(keyOf(r.Context()), func(c *Counts) { c.SourceCalls++ })
	return t.next.RoundTrip(r)
}

// wrap tags each delivery of entry point fn and counts it.
func (m *meter) wrap(fn string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Ce-Id")
		m.mu.Lock()
		m.seen[fn+"\x00"+id]++
		class := First
		if m.seen[fn+"\x00"+id] > 1 {
			class = Repeat
		}
		m.mu.Unlock()
		key := fn + "/" + class
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), tagKey{}, tag{key})))
		busy := time.Since(start)
		failed := sw.code >= 300
		m.update(key, func(c *Counts) {
			c.Deliveries++
			c.Busy += busy
			c.Longest = max(c.Longest, busy)
			if failed {
				c.Failed++
			}
		})
		if !failed && slices.Contains(config.Importers, fn) && class == First {
			m.mu.Lock()
			if m.first.IsZero() {
				m.first = time.Now()
			}
			m.mu.Unlock()
		}
	})
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// Snapshot returns the counts so far.
func (m *meter) snapshot() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Stats{PID: os.Getpid(), Unguarded: m.unguarded, Counts: map[string]Counts{}, FirstImport: m.first}
	for key, b := range m.backends {
		ops := b.Ops()
		c := *m.extra[key]
		c.Reads, c.Writes, c.RPCs = ops.Reads, ops.Writes, ops.RPCs
		s.Counts[key] = c
	}
	return s
}

func (m *meter) serveStats(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(m.snapshot())
}

// firestoreClient dials the emulator the way the Firestore client does when
// FIRESTORE_EMULATOR_HOST is set (one connection, owner credentials, no message size limit),
// with the meter's interceptors added.
func (m *meter) firestoreClient(ctx context.Context, host, project, database string) (*firestore.Client, error) {
	return emu.DialFirestore(ctx, host, project, database, m.unary, m.stream)
}

// ServeOptions configure Serve.
type ServeOptions struct {
	Host, Port string // listen address
	// Unguarded removes the idempotency guard (see Unguarded): the incident's design, for pricing
	// the guard. Never used by the deployable functions.
	Unguarded bool
}

// Serve serves the three functions through the functions framework, as `oncesync run` does,
// built from the same environment by the production wiring (app.Defaults and
// Components.Handler) with two parts swapped: the Firestore client counts every call, by entry
// point and delivery class, with a gRPC client interceptor, and the source client counts its
// requests. With Unguarded, the idempotency keys are replaced by Unguarded. It also serves the
// counters at /bench/stats and the runtime profiles at /debug/pprof/. It returns when ctx ends or
// the server fails. It needs the emulators (FIRESTORE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST).
func Serve(ctx context.Context, o ServeOptions) error {
	host := os.Getenv(emu.FirestoreEnv)
	if host == "" {
		return errors.New("bench: the bench-mode functions run on the emulators only: FIRESTORE_EMULATOR_HOST is not set")
	}
	cfg, err := config.Load("", os.Getenv)
	if err != nil {
		return err
	}
	m := newMeter(o.Unguarded)
	fs, err := m.firestoreClient(context.WithoutCancel(ctx), host, cfg.Project, cfg.Database)
	if err != nil {
		return err
	}
	defer fs.Close()
	ps, err := pubsub.NewClient(context.WithoutCancel(ctx), cfg.Project)
	if err != nil {
		return fmt.Errorf("bench: pubsub client: %w", err)
	}
	defer ps.Close()
	pub := bus.New(ps)
	defer pub.Close()
	sources, err := app.NewSources(ctx, cfg, fs, connectors.Tuning{HTTPClient: &http.Client{Transport: countingTransport{m: m, next: http.DefaultTransport}}})
	if err != nil {
		return err
	}
	comps, err := app.Defaults(cfg, fs, pub, nil, nil)
	if err != nil {
		return err
	}
	comps.Sources = sources
	if o.Unguarded {
		comps.Keys = Unguarded{Client: fs, Lease: cfg.Lease}
	}
	for _, fn := range config.EntryPoints {
		h, err := comps.HTTPHandler(fn)
		if err != nil {
			return err
		}
		if err := funcframework.RegisterHTTPFunctionContext(ctx, PathPrefix+"/"+fn, m.wrap(fn, h).ServeHTTP); err != nil {
			return err
		}
	}
	var cpu cpuProfile
	handlers := map[string]http.HandlerFunc{
		PathPrefix + "/stats":            m.serveStats,
		PathPrefix + "/cpuprofile/start": cpu.start,
		PathPrefix + "/cpuprofile/stop":  cpu.stop,
		"/debug/pprof/":                  pprof.Index,
		"/debug/pprof/profile":           pprof.Profile,
		"/debug/pprof/trace":             pprof.Trace,
	}
	paths := make([]string, 0, len(handlers))
	for p := range handlers {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if err := funcframework.RegisterHTTPFunctionContext(ctx, p, handlers[p]); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- funcframework.StartHostPort(o.Host, o.Port) }()
	select {
	case err := <-errc:
		return fmt.Errorf("bench: serve: %w", err)
	case <-ctx.Done():
		return nil
	}
}

// cpuProfile records a CPU profile between two requests.
type cpuProfile struct {
	mu  sync.Mutex
	buf *bytes.Buffer
}

func (p *cpuProfile) start(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.buf != nil {
		http.Error(w, "a profile is already running", http.StatusConflict)
		return
	}
	p.buf = &bytes.Buffer{}
	if err := rpprof.StartCPUProfile(p.buf); err != nil {
		p.buf = nil
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

func (p *cpuProfile) stop(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.buf == nil {
		http.Error(w, "no profile is running", http.StatusConflict)
		return
	}
	rpprof.StopCPUProfile()
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(p.buf.Bytes())
	p.buf = nil
}

// Unguarded is the incident's design, for pricing the guard: idempotency keys removed. Every
// claim succeeds without touching Firestore, fenced commits are plain batches, and completing or
// releasing a key does nothing. Duplicate deliveries would duplicate work (and, with generated
// IDs, records), so the bench runs it only without injected duplicates.
type Unguarded struct {
	Client *firestore.Client
	Lease  time.Duration
}

var _ app.Keys = Unguarded{}

// Claim always succeeds.
func (u Unguarded) Claim(_ context.Context, k idem.Key, owner string, _ map[string]string) (*idem.Lease, error) {
	return &idem.Lease{Key: k, Owner: owner, Attempt: 1, Until: time.Now().Add(u.Lease)}, nil
}

// CommitFenced commits stage's writes in one batch, without a fence.
func (u Unguarded) CommitFenced(ctx context.Context, _ *idem.Lease, stage func(b *firestore.WriteBatch)) error {
	b := u.Client.Batch()
	stage(b)
	if _, err := b.Commit(ctx); err != nil {
		return fmt.Errorf("bench: unguarded commit: %w", err)
	}
	return nil
}

// Complete does nothing.
func (Unguarded) Complete(context.Context, *idem.Lease) error { return nil }

// Release does nothing.
func (Unguarded) Release(context.Context, *idem.Lease) error { return nil }

// Abandon does nothing.
func (Unguarded) Abandon(context.Context, *idem.Lease) error { return nil }

// HandOff does nothing.
func (Unguarded) HandOff(context.Context, *idem.Lease) error { return nil }
