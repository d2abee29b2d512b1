package app

import (
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/oncesync/oncesync/shared/config"
)

func TestEntryFailsClearlyWithoutConfiguration(t *testing.T) {
	e := &Entry{getenv: func(string) string { return "" }, built: map[string]CloudEventFunc{}}
	ev := event.New()
	ev.SetID("1")
	for name, fn := range map[string]CloudEventFunc{config.Scheduler: e.Scheduler, config.Expander: e.Expander, config.Importer: e.Importer} {
		err := fn(t.Context(), ev)
		if err == nil || !strings.Contains(err.Error(), config.EnvProject) {
			t.Errorf("%s without configuration: %v, want an error naming %s (and a redelivery)", name, err, config.EnvProject)
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
