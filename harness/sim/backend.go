package sim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"github.com/oncesync/oncesync/harness/emu"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Backend is a gRPC client interceptor for the Firestore client: it counts the operations the
// pipeline really sends (documents read and written, per RPC) and injects errors on chosen calls,
// before the call reaches the emulator or after it has been applied (an ambiguous failure: the
// write happened, the caller sees an error).
type Backend struct {
	mu       sync.Mutex
	calls    map[string]int // RPC method → calls so far
	ops      Ops
	rules    []Fault
	injected map[string]int // "Method/code" → count
	gate     Gate           // sequences chosen deliveries' calls (nil: none)
	// afterlife records writes made after their delivery returned (and refuses them).
	afterlife *Afterlife
}

// Ops counts Firestore operations as billed: documents read, documents written, and RPCs.
type Ops struct {
	Reads  int64 // documents returned by BatchGetDocuments and RunQuery, 1 per aggregation (up to 1000 entries)
	Writes int64 // writes in Commit and BatchWrite requests
	RPCs   int64
}

// Fault injects code on the Nth call (1-based) of Method ("Commit", "BatchGetDocuments",
// "RunQuery", "RunAggregationQuery", "BeginTransaction"); Every > 0 repeats it every Every calls.
type Fault struct {
	Method string
	Nth    int
	Every  int
	Code   codes.Code
	After  bool // apply the call, then fail it (unary calls only)
}

// NewBackend returns a Backend with no faults.
func NewBackend() *Backend {
	return &Backend{calls: map[string]int{}, injected: map[string]int{}}
}

// Inject adds a fault rule.
func (b *Backend) Inject(f Fault) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rules = append(b.rules, f)
}

// Clear removes every fault rule.
func (b *Backend) Clear() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rules = nil
}

// Ops returns the operations counted so far.
func (b *Backend) Ops() Ops {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ops
}

// Injected returns the faults injected so far, by "Method/Code".
func (b *Backend) Injected() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]int, len(b.injected))
	for k, v := range b.injected {
		out[k] = v
	}
	return out
}

// SetGate makes every call pass g first (nil: no gate); see Interleaver.
func (b *Backend) SetGate(g Gate) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gate = g
}

func (b *Backend) currentGate() Gate {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gate
}

// enter lets the gate hold the call back (or crash its caller) before it is sent.
func (b *Backend) enter(ctx context.Context, method string, req any) {
	if g := b.currentGate(); g != nil {
		g.Enter(ctx, method, req)
	}
}

// Calls returns how many calls of method ("Commit", ...) were made so far.
func (b *Backend) Calls(method string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[method]
}

func shortMethod(full string) string { return full[strings.LastIndex(full, "/")+1:] }

// decide counts the call and returns the fault to inject, if any.
func (b *Backend) decide(method string) *Fault {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[method]++
	b.ops.RPCs++
	n := b.calls[method]
	for i := range b.rules {
		f := b.rules[i]
		if f.Method != method {
			continue
		}
		if firesOn(n, f.Nth, f.Every) {
			b.injected[fmt.Sprintf("%s/%s", method, f.Code)]++
			return &f
		}
	}
	return nil
}

func (b *Backend) count(reads, writes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ops.Reads += reads
	b.ops.Writes += writes
}

// unobservedKey marks the harness's own calls (Unobserved).
type unobservedKey struct{}

// Unobserved marks ctx's Firestore calls as the harness's own, looking at the pipeline's state
// from inside a delivery: they are neither counted, nor gated, nor given faults, so that watching
// changes nothing of what a schedule injects.
func Unobserved(ctx context.Context) context.Context {
	return context.WithValue(ctx, unobservedKey{}, true)
}

func unobserved(ctx context.Context) bool { v, _ := ctx.Value(unobservedKey{}).(bool); return v }

// Unary is the unary client interceptor.
func (b *Backend) Unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if unobserved(ctx) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	m := shortMethod(method)
	if b.lateWrite(ctx, m) {
		return errOutlived
	}
	b.enter(ctx, m, req)
	f := b.decide(m)
	if f != nil && !f.After {
		return status.Errorf(f.Code, "sim: injected %s on %s", f.Code, m)
	}
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err == nil {
		switch r := req.(type) {
		case *firestorepb.CommitRequest:
			b.count(0, int64(len(r.Writes)))
		case *firestorepb.BatchWriteRequest:
			b.count(0, int64(len(r.Writes)))
		}
	}
	if f != nil && f.After && err == nil {
		return status.Errorf(f.Code, "sim: injected %s after %s was applied", f.Code, m)
	}
	return err
}

// Stream is the streaming client interceptor.
func (b *Backend) Stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if unobserved(ctx) {
		return streamer(ctx, desc, cc, method, opts...)
	}
	m := shortMethod(method)
	if b.lateWrite(ctx, m) {
		return nil, errOutlived
	}
	if f := b.decide(m); f != nil {
		return nil, status.Errorf(f.Code, "sim: injected %s on %s", f.Code, m)
	}
	ctx, cancel := context.WithCancel(ctx)
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		cancel()
		return nil, err
	}
	return &countingStream{ClientStream: s, b: b, ctx: ctx, cancel: cancel, method: m}, nil
}

type countingStream struct {
	grpc.ClientStream
	b      *Backend
	ctx    context.Context
	cancel context.CancelFunc // ends the stream when its caller dies at the gate
	method string
}

// SendMsg passes the gate with the request (a server-streaming call sends its one request right
// after opening the stream, before anything reaches the server).
func (s *countingStream) SendMsg(m any) error {
	defer func() {
		if r := recover(); r != nil {
			s.cancel()
			panic(r)
		}
	}()
	s.b.enter(s.ctx, s.method, m)
	return s.ClientStream.SendMsg(m)
}

func (s *countingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.cancel()
		return err
	}
	switch r := m.(type) {
	case *firestorepb.BatchGetDocumentsResponse:
		if r.GetFound() != nil || r.GetMissing() != "" {
			s.b.count(1, 0) // a missing document is billed as a read too
		}
	case *firestorepb.RunQueryResponse:
		if r.GetDocument() != nil {
			s.b.count(1, 0)
		}
	case *firestorepb.RunAggregationQueryResponse:
		if r.GetResult() != nil {
			s.b.count(1, 0)
		}
	}
	return nil
}

// FirestoreClient returns a Firestore client for project on the emulator whose every call goes
// through b.
func FirestoreClient(ctx context.Context, project string, b *Backend) (*firestore.Client, error) {
	host := os.Getenv("FIRESTORE_EMULATOR_HOST")
	if host == "" {
		return nil, errors.New("sim: FIRESTORE_EMULATOR_HOST is not set")
	}
	return FirestoreClientAt(ctx, host, project, b)
}

// FirestoreClientAt is FirestoreClient for the emulator at host.
func FirestoreClientAt(ctx context.Context, host, project string, b *Backend) (*firestore.Client, error) {
	return emu.DialFirestore(ctx, host, project, firestore.DefaultDatabaseID, b.Unary, b.Stream)
}
