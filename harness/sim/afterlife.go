package sim

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/functions/app"
	"github.com/oncesync/oncesync/shared/bus"
)

// A delivery ends when its handler returns. Cloud Functions throttles an instance's CPU once the
// response is sent, and may stop it at any time after: work a delivery left running does not
// run, or runs much later. So Env.Call cancels the delivery's context when the handler returns
// (or crashes), and refuses, and records, any publish or Firestore write made under that
// delivery afterwards: in the simulator, as deployed, nothing may outlive its delivery.

// life is one delivery's: whether its handler has returned.
type life struct {
	d     Delivery
	ended atomic.Bool
	done  chan struct{} // closed when the handler has returned
}

type lifeKey struct{}

// endedDelivery returns the delivery ctx belongs to, if that delivery has returned.
func endedDelivery(ctx context.Context) (Delivery, bool) {
	l, _ := ctx.Value(lifeKey{}).(*life)
	if l == nil || !l.ended.Load() {
		return Delivery{}, false
	}
	return l.d, true
}

// Returned returns a channel closed once the delivery ctx belongs to has returned (already
// closed outside any delivery): for harness code that acts as late work would.
func Returned(ctx context.Context) <-chan struct{} {
	if l, _ := ctx.Value(lifeKey{}).(*life); l != nil {
		return l.done
	}
	c := make(chan struct{})
	close(c)
	return c
}

// Afterlife records what was attempted after its delivery had returned.
type Afterlife struct {
	mu   sync.Mutex
	list []string
}

func (a *Afterlife) add(d Delivery, what string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.list = append(a.list, fmt.Sprintf("%s after its delivery (%s, message %s) returned", what, d.Function(), d.Message.GetMessageId()))
}

// List returns what was recorded.
func (a *Afterlife) List() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.list)
}

func (a *Afterlife) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.list = nil
}

// errOutlived is what a publish or write made after its delivery returned gets.
var errOutlived = status.Error(codes.Canceled, "sim: the delivery has returned: its instance may be throttled or gone")

// lateGuard is the innermost publisher: it refuses the publishes of deliveries that have
// returned.
type lateGuard struct {
	next app.Publisher
	a    *Afterlife
}

func (g lateGuard) Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	if d, ended := endedDelivery(ctx); ended {
		g.a.add(d, fmt.Sprintf("a publish of %d message(s) to %s", len(msgs), topic))
		return nil, errOutlived
	}
	return g.next.Publish(ctx, topic, msgs...)
}

// lateWrite reports whether a Firestore call is a write made after its delivery returned, and
// records it.
func (b *Backend) lateWrite(ctx context.Context, method string) bool {
	if b.afterlife == nil || !(strings.HasSuffix(method, "Commit") || strings.HasSuffix(method, "BatchWrite")) {
		return false
	}
	d, ended := endedDelivery(ctx)
	if ended {
		b.afterlife.add(d, "a Firestore "+method)
	}
	return ended
}
