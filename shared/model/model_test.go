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

func TestTargetKinds(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range model.TargetKinds {
		if k.Name == "" || k.Records == "" || seen[k.Name] || seen[k.Records] {
			t.Errorf("target kind %+v: needs a unique name and records collection", k)
		}
		seen[k.Name], seen[k.Records] = true, true
		if got, ok := model.Kind(k.Name); !ok || got != k {
			t.Errorf("Kind(%q) = %+v, %v", k.Name, got, ok)
		}
	}
	if _, ok := model.Kind("spreadsheet"); ok {
		t.Error("Kind(spreadsheet) found a kind")
	}
	for _, want := range []string{model.TargetUpsert, model.TargetGenerated} {
		if !seen[want] {
			t.Errorf("no target kind %q", want)
		}
	}
}
