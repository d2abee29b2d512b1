package model_test

import (
	"strings"
	"testing"

	"github.com/oncesync/oncesync/shared/model"
)

func rec(id string, fieldBytes int) model.ChunkRecord {
	return model.ChunkRecord{ID: id, Fields: map[string]any{"f": strings.Repeat("x", fieldBytes)}}
}

func TestChunkRuleCuts(t *testing.T) {
	r := model.ChunkRule{Size: 3, MaxBytes: 300}
	for _, c := range []struct {
		rows, bytes, n int
		by             string
		cut            bool
	}{
		{0, 0, 500, "", false}, // an empty chunk takes any row that fits alone
		{1, 100, 100, "", false},
		{3, 100, 10, model.CutRows, true},
		{2, 250, 51, model.CutBytes, true},
		{2, 250, 50, "", false},
	} {
		by, cut := r.CutBefore(c.rows, c.bytes, c.n)
		if by != c.by || cut != c.cut {
			t.Errorf("CutBefore(%d, %d, %d) = %q %v, want %q %v", c.rows, c.bytes, c.n, by, cut, c.by, c.cut)
		}
	}
	if !r.TooLarge(301) || r.TooLarge(300) {
		t.Error("TooLarge is not n > MaxBytes")
	}
}

func TestCheckPlan(t *testing.T) {
	r := model.ChunkRule{Size: 3}
	ch := func(i, n int, by string) model.Chunk { return model.Chunk{Index: i, Count: n, CutBy: by} }
	for _, c := range []struct {
		name  string
		plan  []model.Chunk
		wrong int
	}{
		{"full chunks then the end", []model.Chunk{ch(0, 3, model.CutRows), ch(1, 3, model.CutRows), ch(2, 1, model.CutEnd)}, 0},
		{"a byte cut", []model.Chunk{ch(0, 2, model.CutBytes), ch(1, 3, model.CutEnd)}, 0},
		{"chunks from before CutBy", []model.Chunk{ch(0, 3, ""), ch(1, 2, "")}, 0},
		{"short chunk cut by rows", []model.Chunk{ch(0, 2, model.CutRows), ch(1, 1, model.CutEnd)}, 1},
		{"full chunk cut by bytes", []model.Chunk{ch(0, 3, model.CutBytes), ch(1, 1, model.CutEnd)}, 1},
		{"the end in the middle", []model.Chunk{ch(0, 1, model.CutEnd), ch(1, 1, model.CutEnd)}, 1},
		{"short chunk from before CutBy in the middle", []model.Chunk{ch(0, 2, ""), ch(1, 1, "")}, 1},
		{"too many rows", []model.Chunk{ch(0, 4, model.CutRows)}, 1},
		{"empty chunk", []model.Chunk{ch(0, 0, model.CutEnd)}, 1},
		{"unknown cut", []model.Chunk{ch(0, 1, "whim")}, 1},
	} {
		if got := r.CheckPlan(c.plan); len(got) != c.wrong {
			t.Errorf("%s: %d violations %v, want %d", c.name, len(got), got, c.wrong)
		}
	}
}

func TestCheckPlanChecksByteCutsWithTheRecords(t *testing.T) {
	n, _ := model.EncodedSize(rec("a", 100))
	r := model.ChunkRule{Size: 3, MaxBytes: 2*n + 10}
	justified := []model.Chunk{
		{Index: 0, Count: 2, CutBy: model.CutBytes, Records: []model.ChunkRecord{rec("a", 100), rec("b", 100)}},
		{Index: 1, Count: 1, CutBy: model.CutEnd, Records: []model.ChunkRecord{rec("c", 100)}},
	}
	if got := r.CheckPlan(justified); len(got) != 0 {
		t.Errorf("a justified byte cut: %v", got)
	}
	early := []model.Chunk{
		{Index: 0, Count: 1, CutBy: model.CutBytes, Records: []model.ChunkRecord{rec("a", 100)}},
		{Index: 1, Count: 2, CutBy: model.CutEnd, Records: []model.ChunkRecord{rec("b", 100), rec("c", 100)}},
	}
	if got := r.CheckPlan(early); len(got) != 1 || !strings.Contains(got[0], "fitted") {
		t.Errorf("a byte cut the next row fitted under: %v", got)
	}
	over := []model.Chunk{{Index: 0, Count: 3, CutBy: model.CutEnd, Records: []model.ChunkRecord{rec("a", 100), rec("b", 100), rec("c", 100)}}}
	if got := r.CheckPlan(over); len(got) != 1 || !strings.Contains(got[0], "over the") {
		t.Errorf("a chunk over the byte limit: %v", got)
	}
}
