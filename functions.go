// Package oncesync is the Cloud Functions (2nd gen) bundle: this file registers the three entry
// points with the functions framework and nothing else. The Go buildpack builds only the module's
// root package, so this is the one place the deployable functions are named; their logic lives in
// functions/<name> and shared/.
//
// Each entry point builds its dependencies from the environment once, on its first event (cold
// start), and reuses them for every later event the instance serves.
package oncesync

import (
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/oncesync/oncesync/functions/app"
)

func init() {
	entry := app.NewEntry()
	functions.CloudEvent("Scheduler", entry.Scheduler)
	functions.CloudEvent("Expander", entry.Expander)
	functions.CloudEvent("Importer", entry.Importer)
}
