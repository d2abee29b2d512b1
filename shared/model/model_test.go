package model_test

import (
	"strings"
	"testing"

	"github.com/oncesync/oncesync/shared/model"
)

func TestDocIDIsValidAndInjective(t *testing.T) {
	cases := [][]string{{"a", "b~c"}, {"a~b", "c"}, {"a/b", "c"}, {"a", "b/c"}, {"..", "x"}, {strings.Repeat("z", 2000)}}
	seen := map[string]bool{}
	for _, parts := range cases {
		id := model.DocID(parts...)
		if strings.Contains(id, "/") || len(id) > 1500 || id == "." || id == ".." {
			t.Errorf("DocID(%q) = %q is not a valid document ID", parts, id)
		}
		if seen[id] {
			t.Errorf("DocID(%q) = %q collides", parts, id)
		}
		seen[id] = true
	}
	if model.JobID("s", "t1") != model.JobID("s", "t1") || model.JobID("s", "t1") == model.JobID("s", "t2") {
		t.Error("JobID is not a function of setting and tick")
	}
	if model.ChunkID(7) != "000007" {
		t.Errorf("ChunkID(7) = %s", model.ChunkID(7))
	}
}
