package chaos

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/oncesync/oncesync/functions/app"
	"github.com/oncesync/oncesync/functions/expander"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
)

// Fair import across tenants (issue #24): a Job's size class, decided once at its cut, sends every
// chunk of the Job to its class's lane, so a small Job's chunks never queue behind a bulk Job's.
// What the harness watches of the lanes, the checker, and the mutants it catches.

// laneWatch records the lane of every chunk message published, by Job.
type laneWatch struct {
	app.Publisher
	h *Harness
}

func (w laneWatch) Publish(ctx context.Context, topic string, msgs ...bus.Message) ([]string, error) {
	if st := w.h.cur.Load(); st != nil && (topic == sim.TopicChunks || topic == sim.TopicBulk) {
		st.mu.Lock()
		for _, m := range msgs {
			var cm model.ChunkMessage
			if json.Unmarshal(m.Data, &cm) != nil {
				continue
			}
			if st.lanes[cm.JobID] == nil {
				st.lanes[cm.JobID] = map[string]int{}
			}
			st.lanes[cm.JobID][topic]++
		}
		st.mu.Unlock()
	}
	return w.Publisher.Publish(ctx, topic, msgs...)
}

// checkLanes holds the size classes: every cut Job's class is the class of its window's count
// (the sum of its slices' estimates, as measured at the cut), and every chunk message of a Job,
// from any delivery (the expander's, a takeover's, the sweep's), went to its class's lane.
func checkLanes(ctx context.Context, e *sim.Env, st *caseState, jobs []model.Job, r *ExtraReport) error {
	lanes := bus.Lanes{Standard: e.Config.TopicChunks, Bulk: e.Config.TopicChunksBulk}
	look := sim.Unobserved(ctx)
	for _, j := range jobs {
		if j.SliceCount > 0 {
			slices, err := e.Comps.Store.Slices(look, j.ID)
			if err != nil {
				return err
			}
			estimate := 0
			for _, sl := range slices {
				estimate += sl.Estimate
			}
			if want := model.ClassOf(estimate, bulkAfter); j.Class != want {
				r.LaneErrors++
				r.violate("job %s: its window counted %d rows at the cut (bulk after %d), so its class is %q, not %q", j.ID, estimate, bulkAfter, want, j.Class)
			}
		}
		st.mu.Lock()
		byTopic := st.lanes[j.ID]
		st.mu.Unlock()
		want := lanes.Topic(j.Class)
		topics := make([]string, 0, len(byTopic))
		for t := range byTopic {
			topics = append(topics, t)
		}
		sort.Strings(topics)
		for _, t := range topics {
			if t != want {
				r.LaneErrors++
				r.violate("job %s (class %q): %d chunk messages published to %s, its lane is %s", j.ID, j.Class, byTopic[t], t, want)
			}
		}
	}
	return nil
}

// The lanes' mutants.
var (
	// MutantClassForgotten is "a resumed expansion forgets the Job's class": every expansion
	// after the cut reads the Job without its class, and streams to the standard lane.
	MutantClassForgotten = Mutation{
		Name:          "an expansion after the cut forgets its Job's class",
		ExpanderStore: func(_ *Harness, s expander.Store) expander.Store { return classless{s} },
	}
	// MutantOneLane is "no size classes": the deployment leaves the bulk threshold at 0, and a
	// Job of any size shares the one lane.
	MutantOneLane = Mutation{
		Name:   "no size classes: every Job on one lane",
		Config: func(c *config.Config) { c.BulkAfter = 0 },
	}
)

// classless is MutantClassForgotten's store.
type classless struct{ expander.Store }

func (c classless) Job(ctx context.Context, id string) (model.Job, error) {
	j, err := c.Store.Job(ctx, id)
	j.Class = model.ClassStandard
	return j, err
}
