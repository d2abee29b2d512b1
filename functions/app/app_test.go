package app

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/oncesync/oncesync/shared/config"
)

func TestEntryFailsClearlyWithoutConfiguration(t *testing.T) {
	e := &Entry{getenv: func(string) string { return "" }, built: map[string]http.Handler{}}
	for name, fn := range map[string]http.HandlerFunc{config.Scheduler: e.Scheduler, config.Expander: e.Expander, config.Importer: e.Importer} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("{}"))
		r.Header.Set("Ce-Id", "1")
		fn(w, r)
		if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), config.EnvProject) {
			t.Errorf("%s without configuration: %d %q, want 500 (a redelivery) naming %s", name, w.Code, w.Body.String(), config.EnvProject)
		}
	}
	if len(e.built) != 0 {
		t.Errorf("handlers built without configuration: %v", e.built)
	}
}

func TestHandlerRejectsUnknownEntryPoint(t *testing.T) {
	if _, err := (Components{}).Handler("Reporter"); err == nil {
		t.Error("unknown entry point accepted")
	}
	if _, err := (Components{}).Handler(config.Importer); err == nil {
		t.Error("importer without dependencies accepted")
	}
}
