package logging_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/oncesync/oncesync/shared/logging"
)

func TestCloudLoggingKeys(t *testing.T) {
	var b bytes.Buffer
	ctx := logging.NewContext(t.Context(), logging.New(&b, slog.LevelDebug))
	ctx = logging.With(ctx, slog.String(logging.Job, "j1"))
	logging.From(ctx).Warn("hello", logging.Trace("p", "abc", "def")...)
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"severity": "WARNING", "message": "hello", "job": "j1",
		"logging.googleapis.com/trace": "projects/p/traces/abc", "logging.googleapis.com/spanId": "def"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v (line %s)", k, m[k], v, b.String())
		}
	}
	if _, ok := m["level"]; ok {
		t.Error("level key left in")
	}
}
