package expander

import (
	"fmt"
	"time"

	"github.com/oncesync/oncesync/shared/model"
)

// A plan write holds at most this many chunks or encoded bytes (Firestore takes 10 MiB a request).
const (
	maxChunksPerWrite = 16
	maxBytesPerWrite  = 4 << 20
)

// chunker cuts one slice's rows into chunks by the chunk rule, in search order. Rows fill the
// chunk being cut; cut chunks wait in ready until the planner writes them (take): a few large plan
// writes instead of one per chunk, since on a store that serializes commits (the emulator) each
// plan write waits behind the imports in flight.
type chunker struct {
	job   model.Job
	rule  model.ChunkRule
	now   func() time.Time
	slice int
	next  int // the index the next chunk gets
	end   int // the first index past the slice's
	cur   []model.ChunkRecord
	size  int
	ready []model.Chunk
	bytes int // encoded bytes in ready
}

func newChunker(job model.Job, slice, maxBytes int, now func() time.Time) *chunker {
	return &chunker{
		job: job, rule: model.ChunkRule{Size: job.ChunkSize, MaxBytes: maxBytes}, now: now, slice: slice,
		next: model.ChunkIndex(slice, 0), end: model.ChunkIndex(slice+1, 0),
	}
}

// add puts row, of n encoded bytes, into the plan, cutting the chunk before it when the rule says
// so, and reports whether ready is full enough to be written.
func (c *chunker) add(row model.ChunkRecord, n int) (full bool, err error) {
	if by, ok := c.rule.CutBefore(len(c.cur), c.size, n); ok {
		if err := c.cut(by); err != nil {
			return false, err
		}
		full = len(c.ready) >= maxChunksPerWrite || c.bytes >= maxBytesPerWrite
	}
	c.cur = append(c.cur, row)
	c.size += n
	return full, nil
}

// cut ends the chunk being cut (if it has rows), for the reason by.
func (c *chunker) cut(by string) error {
	if len(c.cur) == 0 {
		return nil
	}
	if c.next >= c.end {
		return fmt.Errorf("expander: slice %d of job %s needs more than %d chunks: lower ONCESYNC_SLICE_ROWS",
			c.slice, c.job.ID, model.SliceStride)
	}
	last := c.cur[len(c.cur)-1]
	c.ready = append(c.ready, model.Chunk{
		Index: c.next, JobID: c.job.ID, TenantID: c.job.TenantID, Status: model.ChunkPending, Records: c.cur, Count: len(c.cur), CutBy: by,
		LastModstamp: last.Modstamp, LastID: last.ID, PlannedAt: c.now().UTC(),
	})
	c.next++
	c.bytes += c.size
	c.cur, c.size = nil, 0
	return nil
}

// take returns the chunks cut and not yet written, and forgets them.
func (c *chunker) take() []model.Chunk {
	r := c.ready
	c.ready, c.bytes = nil, 0
	return r
}
