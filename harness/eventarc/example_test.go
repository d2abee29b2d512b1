package eventarc_test

import (
	"context"
	"log"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/oncesync/oncesync/harness/eventarc"
)

// Deliver the "jobs" topic to a locally running function, every message twice, the copy two
// seconds after the original, as "make demo DUPLICATES=1" does.
func ExampleNew() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client, err := pubsub.NewClient(ctx, "demo") // PUBSUB_EMULATOR_HOST points at the emulator
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ea, err := eventarc.New(eventarc.Config{
		Client: client,
		Routes: []eventarc.Route{
			{Topic: "jobs", Subscription: "jobs-scheduler", URL: "http://127.0.0.1:8080/Scheduler"},
		},
		MaxAttempts:     5,
		DeadLetterTopic: "dead-letters",
		Faults:          eventarc.Duplicate(2 * time.Second),
	})
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		if err := ea.Run(ctx); err != nil {
			log.Print(err)
		}
	}()
	// … publish, then wait until ea.Idle() and nothing is left undelivered in Pub/Sub.
}
