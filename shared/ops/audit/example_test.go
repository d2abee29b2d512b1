package audit_test

import (
	"context"
	"log"
	"os"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/shared/ops/audit"
)

// Audit one Job and print the report for people; the findings come first.
func Example() {
	ctx := context.Background()
	fs, err := firestore.NewClientWithDatabase(ctx, "my-project", "(default)") // the emulator if FIRESTORE_EMULATOR_HOST is set
	if err != nil {
		log.Fatal(err)
	}
	defer fs.Close()
	rep, err := audit.New(fs).Job(ctx, "acme-generated-628b49d96dcde97a")
	if err != nil {
		log.Fatal(err)
	}
	if err := rep.WriteText(os.Stdout); err != nil {
		log.Fatal(err)
	}
	if !rep.Clean() {
		os.Exit(1)
	}
}
