package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/audit"

	"github.com/oncesync/oncesync/shared/ops/cli"
)

func cmdDeadLetters() cli.Command {
	return cli.Command{
		Summary: "inspect and replay dead letters: deadletters list [filters] | deadletters replay ID... | --job J | --tenant T",
		Run: func(ctx context.Context, args []string) int {
			return runDeadLetters(ctx, args, os.Stdout, os.Stderr)
		},
	}
}

const deadLettersUsage = `usage: oncesync-ops deadletters list [--tenant T] [--job J] [--kind K] [--function F] [--reason R]
                                [--unreplayed] [--since T] [--until T] [--limit N] [flags]
       oncesync-ops deadletters replay ID... [--topic T] [--force] [--dry-run] [flags]
       oncesync-ops deadletters replay --job J | --tenant T [--function F] [--reason R] [flags]

"list" shows dead letters in the order of their first attempt: reason, first and last attempt,
attempts, replays and a summary of the payload; below, each one's error and whether a replay can
help. Exit code 1 when it lists any that still needs something: a bad row, a skipped setting, or
a message neither replayed nor made unnecessary (its Job COMPLETED since).

"replay" re-publishes dead-lettered messages to the topic they came from (or --topic), after the
cause is fixed. It is idempotent: a dead letter is marked replayed in a transaction before the
publish, so replaying it again changes nothing unless --force. If the message's idempotency key
was left DONE (deployments before keys were abandoned on dead-lettering) and the work is still
undone, the key is reopened so the replay is not acked as a duplicate. A FAILED Job (the source
refused its search) is set back to PENDING, so that the replay re-runs it. Bad source rows (kind
record) and skipped settings (kind setting) are not messages: replay refuses them and says what to
do instead. With --job or --tenant, every message dead letter of it not replayed yet is replayed.
Exit code 1 when a replay is refused.

It reads Firestore (and publishes to Pub/Sub) of --project: the emulators when
FIRESTORE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST are set, production with Application Default
Credentials otherwise. Exit code 2: could not run.`

func runDeadLetters(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	sub, fs, code, done := subcommand("deadletters", deadLettersUsage, []string{"list", "replay"}, args, stderr)
	if done {
		return code
	}
	cloud := auditCloudFlags(fs)
	jsonOut := fs.Bool("json", false, "write JSON instead of text")
	var f audit.DeadLetterFilter
	fs.StringVar(&f.Tenant, "tenant", "", "only dead letters of this tenant")
	fs.StringVar(&f.Job, "job", "", "only dead letters of this Job")
	fs.StringVar(&f.Function, "function", "", "only dead letters of this function (Scheduler, Expander, Importer, ImporterBulk)")
	fs.StringVar(&f.Reason, "reason", "", "only dead letters with this reason (e.g. tenant_disabled)")
	kind := fs.String("kind", "", "list: only this kind (message, record, setting)")
	unreplayed := fs.Bool("unreplayed", false, "list: only dead letters never replayed")
	since := fs.String("since", "", "list: last attempt at or after `T` (RFC 3339, 2006-01-02, or a duration ago such as 24h)")
	until := fs.String("until", "", "list: first attempt before `T`")
	limit := fs.Int("limit", 0, "list: show only the latest N (0: all)")
	topic := fs.String("topic", "", "replay: publish to this topic ID instead of the one the message came from")
	force := fs.Bool("force", false, "replay: replay again, or although the work looks done or the payload invalid")
	dryRun := fs.Bool("dry-run", false, "replay: say what would be replayed, change nothing")
	pos, code, done := parseArgs(fs, deadLettersUsage, args[1:], stderr)
	if done {
		return code
	}
	var err error
	now := time.Now().UTC()
	if f.Since, err = parseWhen(*since, now); err == nil {
		f.Until, err = parseWhen(*until, now)
	}
	if err != nil {
		fmt.Fprintf(stderr, "oncesync-ops deadletters %s: %v\n", sub, err)
		return exitCannot
	}
	f.Kind, f.Unreplayed, f.Limit = *kind, *unreplayed, *limit

	if sub == "list" && len(pos) > 0 {
		fmt.Fprintf(stderr, "oncesync-ops deadletters list: unexpected arguments %q; filter with flags\n", pos)
		return exitCannot
	}
	if sub == "replay" && (len(pos) == 0) == (f.Job == "" && f.Tenant == "") {
		fmt.Fprintln(stderr, "oncesync-ops deadletters replay: name dead letter IDs, or select them with --job or --tenant (not both)")
		return exitCannot
	}

	ctx, cancel := context.WithTimeout(ctx, *cloud.timeout)
	defer cancel()
	client, err := cloud.firestore(ctx, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "oncesync-ops deadletters %s: %v\n", sub, err)
		return exitCannot
	}
	defer client.Close()
	a := audit.New(client)

	if sub == "list" {
		dls, err := a.DeadLetters(ctx, f)
		if err != nil {
			fmt.Fprintf(stderr, "oncesync-ops deadletters list: %v\n", err)
			return exitCannot
		}
		if *jsonOut {
			err = writeJSON(stdout, dls)
		} else {
			err = audit.WriteDeadLetters(stdout, dls)
		}
		if err != nil {
			fmt.Fprintf(stderr, "oncesync-ops deadletters list: %v\n", err)
			return exitCannot
		}
		for _, d := range dls {
			if d.NeedsAction() {
				return exitFindings
			}
		}
		return exitClean
	}

	ids := pos
	if len(ids) == 0 {
		// Every message dead letter of the Job or tenant; those replayed before only with --force.
		f.Kind, f.Unreplayed, f.Since, f.Until, f.Limit = model.DeadMessage, !*force, time.Time{}, time.Time{}, 0
		dls, err := a.DeadLetters(ctx, f)
		if err != nil {
			fmt.Fprintf(stderr, "oncesync-ops deadletters replay: %v\n", err)
			return exitCannot
		}
		for _, d := range dls {
			ids = append(ids, d.ID)
		}
		if len(ids) == 0 {
			fmt.Fprintln(stderr, "oncesync-ops deadletters replay: no dead-lettered message to replay")
			return exitClean
		}
	}
	r := &audit.Replayer{Client: client}
	if !*dryRun {
		ps, err := cloud.pubsub(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "oncesync-ops deadletters replay: %v\n", err)
			return exitCannot
		}
		defer ps.Close()
		pub := bus.New(ps)
		defer pub.Close()
		r.Publisher = pub
	}
	code = exitClean
	var results []audit.ReplayResult
	for _, id := range ids {
		res, err := r.Replay(ctx, id, audit.ReplayOptions{Topic: *topic, Force: *force, DryRun: *dryRun})
		if err != nil {
			fmt.Fprintf(stderr, "oncesync-ops deadletters replay: %v\n", err)
			code = exitCannot
			continue
		}
		if res.Outcome == audit.Refused && code == exitClean {
			code = exitFindings
		}
		results = append(results, res)
	}
	if results == nil {
		results = []audit.ReplayResult{}
	}
	if *jsonOut {
		err = writeJSON(stdout, results)
	} else if len(results) > 0 {
		err = audit.WriteReplays(stdout, results)
	}
	if err != nil {
		fmt.Fprintf(stderr, "oncesync-ops deadletters replay: %v\n", err)
		return exitCannot
	}
	return code
}
