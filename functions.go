// Package oncesync is the Cloud Functions (2nd gen) bundle: this file registers the four entry
// points with the functions framework and nothing else. The Go buildpack builds only the module's
// root package, so this is the one place the deployable functions are named; their logic lives in
// functions/<name> and shared/.
//
// Each entry point builds its dependencies from the environment once, on its first event (cold
// start), and reuses them for every later event the instance serves.
//
// They are registered as HTTP functions, not CloudEvent functions, though Eventarc delivers
// CloudEvents: the framework answers a request that is not a valid CloudEvent (no ce-source, no
// ce-specversion, a body it cannot convert) with 400 or 415 before any of our code runs, which
// records nothing while Pub/Sub redelivers it. delivery.Gate.HTTP decodes the CloudEvent with the
// same SDK and dead-letters what it cannot decode.
package oncesync

import (
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/oncesync/oncesync/functions/app"
)

func init() {
	entry := app.NewEntry()
	functions.HTTP("Scheduler", entry.Scheduler)
	functions.HTTP("Expander", entry.Expander)
	functions.HTTP("Importer", entry.Importer)
	functions.HTTP("ImporterBulk", entry.ImporterBulk)
}
