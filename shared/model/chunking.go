package model

import (
	"encoding/json"
	"fmt"
)

// How a chunk was cut (Chunk.CutBy).
const (
	CutRows  = "rows"  // it holds the Job's chunk size
	CutBytes = "bytes" // the next row would have taken it past the byte limit
	CutEnd   = "end"   // the search ended: the plan's last chunk
)

// ChunkRule is the one rule a Job's records are cut into chunks by. The expander cuts with it,
// and the audit and the simulator's checker check plans with it (CheckPlan): a chunk holds up to
// Size rows, and is cut early rather than grow past MaxBytes encoded bytes (EncodedSize); a row
// larger than MaxBytes on its own is too large for any chunk and is dead-lettered instead.
type ChunkRule struct {
	Size     int // rows per chunk (the setting's chunk size, fixed on the Job)
	MaxBytes int // encoded bytes per chunk (ONCESYNC_MAX_CHUNK_BYTES)
}

// TooLarge reports whether a row of n encoded bytes fits in no chunk.
func (r ChunkRule) TooLarge(n int) bool { return n > r.MaxBytes }

// CutBefore reports whether the chunk being filled, holding rows rows of bytes encoded bytes, is
// cut before a row of n bytes joins it, and why (CutRows or CutBytes).
func (r ChunkRule) CutBefore(rows, bytes, n int) (string, bool) {
	switch {
	case rows == 0:
		return "", false
	case rows >= r.Size:
		return CutRows, true
	case bytes+n > r.MaxBytes:
		return CutBytes, true
	}
	return "", false
}

// EncodedSize is a row's size inside a chunk document, as ChunkRule counts it.
func EncodedSize(rec ChunkRecord) (int, error) {
	b, err := json.Marshal(rec.Fields)
	return len(b) + len(rec.ID) + 64, err
}

// CheckPlan returns what is wrong with a plan's chunks, given in index order, under r: each chunk
// holds 1..Size rows; one cut by rows holds exactly Size; only the last of each slice (SliceOf) may
// end the search; one
// cut by bytes holds fewer than Size. A chunk written before CutBy existed (empty) must be full
// unless it is the last. When r.MaxBytes is known (not 0) and the chunks carry their records,
// the byte cuts are checked too: no chunk is over MaxBytes, and a chunk cut by bytes would have
// gone over with the next chunk's first row.
func (r ChunkRule) CheckPlan(chunks []Chunk) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for i, c := range chunks {
		last := i == len(chunks)-1 || SliceOf(chunks[i+1].Index) != SliceOf(c.Index) // each slice's search ends once
		switch {
		case c.Count < 1 || c.Count > r.Size:
			bad("chunk %d holds %d rows, outside 1..%d", c.Index, c.Count, r.Size)
		case c.CutBy == CutRows && c.Count != r.Size:
			bad("chunk %d was cut by rows with %d rows, not %d", c.Index, c.Count, r.Size)
		case c.CutBy == CutBytes && c.Count == r.Size:
			bad("chunk %d was cut by bytes but holds the full %d rows", c.Index, r.Size)
		case c.CutBy == CutEnd && !last:
			bad("chunk %d ended the search but chunk %d follows it", c.Index, chunks[i+1].Index)
		case c.CutBy == "" && !last && c.Count != r.Size:
			bad("chunk %d holds %d rows, not %d, and is not the last", c.Index, c.Count, r.Size)
		case c.CutBy != "" && c.CutBy != CutRows && c.CutBy != CutBytes && c.CutBy != CutEnd:
			bad("chunk %d was cut by %q, which is no rule", c.Index, c.CutBy)
		}
		if r.MaxBytes == 0 || len(c.Records) != c.Count {
			continue
		}
		size := 0
		for _, rec := range c.Records {
			n, _ := EncodedSize(rec)
			size += n
		}
		if size > r.MaxBytes {
			bad("chunk %d holds %d encoded bytes, over the %d-byte limit", c.Index, size, r.MaxBytes)
		}
		if c.CutBy == CutBytes && !last && len(chunks[i+1].Records) > 0 {
			if n, _ := EncodedSize(chunks[i+1].Records[0]); size+n <= r.MaxBytes {
				bad("chunk %d was cut by bytes at %d bytes, but the next row (%d bytes) fitted under %d", c.Index, size, n, r.MaxBytes)
			}
		}
	}
	return out
}
