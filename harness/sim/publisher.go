package sim

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"github.com/oncesync/oncesync/functions/app"
	"github.com/oncesync/oncesync/shared/bus"
)

// PublishFault fails the Nth Publish call to Topic (1-based, counted per topic; "" matches every
// topic); Every > 0 repeats it every Every calls after that. Before the messages are stored, or
// After: stored (the subscriber will get them) but the caller sees an error, as when the answer
// of a successful publish is lost.
type PublishFault struct {
	Topic string
	Nth   int
	Every int
	After bool
}

func (f PublishFault) String() string {
	when := "before storing"
	if f.After {
		when = "after storing"
	}
	s := fmt.Sprintf("publish #%d to %s fails %s", f.Nth, f.Topic, when)
	if f.Every > 0 {
		s += fmt.Sprintf(", then every %d", f.Every)
	}
	return s
}

// FaultyPublisher wraps a Publisher and fails chosen calls (see PublishFault). Use it through
// Options.Publisher. Its errors contain "sim: injected".
type FaultyPublisher struct {
	next app.Publisher

	mu       sync.Mutex
	calls    map[string]int
	rules    []PublishFault
	injected map[string]int // "topic/before" or "topic/after" → count
}

var _ app.Publisher = (*FaultyPublisher)(nil)

// NewFaultyPublisher returns a FaultyPublisher with no faults.
func NewFaultyPublisher(next app.Publisher) *FaultyPublisher {
	return &FaultyPublisher{next: next, calls: map[string]int{}, injected: map[string]int{}}
}

// Inject adds a fault rule.
func (p *FaultyPublisher) Inject(f PublishFault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, f)
}

// Clear removes every rule.
func (p *FaultyPublisher) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Reset removes every rule and zeroes the counts.
func (p *FaultyPublisher) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules, p.calls, p.injected = nil, map[string]int{}, map[string]int{}
}

// Injected returns the faults injected so far, by "topic/before" and "topic/after".
func (p *FaultyPublisher) Injected() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.injected)
}

func (p *FaultyPublisher) decide(topic string) *PublishFault {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[topic]++
	n := p.calls[topic]
	for i := range p.rules {
		f := p.rules[i]
		if f.Topic != "" && f.Topic != topic {
			continue
		}
		if firesOn(n, f.Nth, f.Every) {
			when := "before"
			if f.After {
				when = "after"
			}
			p.injected[topic+"/"+when]++
			return &f
		}
	}
	return nil
}

// Publish implements app.Publisher.
func (p *FaultyPublisher) Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	f := p.decide(topic)
	if f == nil {
		return p.next.Publish(ctx, topic, msgs...)
	}
	if !f.After {
		return nil, fmt.Errorf("sim: injected publish failure on %s (nothing stored)", topic)
	}
	ids, err := p.next.Publish(ctx, topic, msgs...)
	if err != nil {
		return ids, err
	}
	return nil, fmt.Errorf("sim: injected publish failure on %s (after %d messages were stored)", topic, len(ids))
}

// firesOn reports whether a fault rule for the nth call (1-based), repeated every every calls after
// that when every > 0, fires on call n.
func firesOn(n, nth, every int) bool {
	return n == nth || (every > 0 && n > nth && (n-nth)%every == 0)
}
