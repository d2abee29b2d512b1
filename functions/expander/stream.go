package expander

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/model"
)

// stream publishes chunk messages in the background while the plan goes on; wait returns the
// first failure. A failed publish fails the delivery, whose retry re-publishes what is not DONE.
type stream struct {
	h     *Handler
	job   model.Job
	topic string // the lane of the Job's class (set at the cut, before any chunk is written)
	g     *errgroup.Group
	ctx   context.Context
	sent  int
}

// streamDepth is how many chunk publishes may be in flight at once.
const streamDepth = 16

func (h *Handler) stream(ctx context.Context, job model.Job) *stream {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(streamDepth)
	return &stream{h: h, job: job, topic: h.lanes().Topic(job.Class), g: g, ctx: gctx}
}

// classify sets the lane once the cut has decided the Job's class.
func (s *stream) classify(job model.Job) { s.job, s.topic = job, s.h.lanes().Topic(job.Class) }

func (s *stream) send(i int) {
	s.sent++
	topic, msg := s.topic, bus.Chunk(s.job, i)
	s.g.Go(func() error {
		if _, err := s.h.cfg.Publisher.Publish(s.ctx, topic, msg); err != nil {
			return fmt.Errorf("expander: publish chunk %d of job %s: %w", i, s.job.ID, err)
		}
		return nil
	})
}

func (s *stream) wait() error { return s.g.Wait() }
