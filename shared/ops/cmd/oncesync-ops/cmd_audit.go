package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/grpc/status"

	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/audit"

	"github.com/oncesync/oncesync/shared/ops/cli"
)

// Exit codes of audit and deadletters.
const (
	exitClean    = 0 // nothing found
	exitFindings = 1 // findings (or dead letters listed, or a replay refused)
	exitCannot   = 2 // could not run: bad usage, no access, not found
)

func cmdAudit() cli.Command {
	return cli.Command{
		Summary: "was anything imported twice, or lost, and why: audit job ID | audit tenant ID [--since T] [--until T]",
		Run: func(ctx context.Context, args []string) int {
			return runAudit(ctx, args, os.Stdout, os.Stderr)
		},
	}
}

const auditUsage = `usage: oncesync-ops audit job ID [flags]
       oncesync-ops audit tenant ID [--since T] [--until T] [flags]

"audit job" reads one Job: its window, status and timeline; chunks expected (ceil(rows / chunk
size)) against chunks found; rows per chunk; the target records of every row (more than one per
external ID is a duplicate, none or an older version is a lost record); the source searches run;
the deliveries each step saw and the duplicates it suppressed; leases taken over; dead letters.

"audit tenant" does the same for every Job of the tenant created in [--since, --until), and
reports its unfinished Jobs of any age, expired leases and dead letters.

It reads Firestore of --project: the emulator when FIRESTORE_EMULATOR_HOST is set, production with
Application Default Credentials otherwise. Exit code: 0 clean, 1 findings, 2 could not run.`

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	sub, fs, code, done := subcommand("audit", auditUsage, []string{"job", "tenant"}, args, stderr)
	if done {
		return code
	}
	cloud := auditCloudFlags(fs)
	jsonOut := fs.Bool("json", false, "write the report as JSON (for monitoring) instead of text")
	noRecords := fs.Bool("no-records", false, "skip the target-record checks: read Job, chunk and key metadata only (cheap on big Jobs)")
	stuck := fs.Duration("stuck-after", config.Default().StuckAfter, "an unfinished Job this old is stuck")
	parallel := fs.Int("parallel", 8, "chunks checked at once")
	maxFindings := fs.Int("max-findings", 100, "findings listed per kind; the rest are counted")
	allChunks := fs.Bool("all-chunks", false, "list every chunk (text report of a Job of more than 50 chunks)")
	since := fs.String("since", "", "tenant: Jobs created at or after `T` (RFC 3339, 2006-01-02, or a duration ago such as 24h)")
	until := fs.String("until", "", "tenant: Jobs created before `T` (same forms as --since)")
	scan := fs.Bool("scan-targets", false, "tenant: also stream every target record of the tenant to find duplicates of any age (one read per record)")
	pos, code, done := parseArgs(fs, auditUsage, args[1:], stderr)
	if done {
		return code
	}
	if len(pos) != 1 || pos[0] == "" {
		fmt.Fprintf(stderr, "oncesync-ops audit %s: want exactly one %s ID, got %d arguments\n", sub, sub, len(pos))
		return exitCannot
	}
	now := time.Now().UTC()
	var (
		from, to time.Time
		err      error
	)
	if sub == "tenant" {
		if from, err = parseWhen(*since, now); err == nil {
			to, err = parseWhen(*until, now)
		}
		if err != nil {
			fmt.Fprintf(stderr, "oncesync-ops audit tenant: %v\n", err)
			return exitCannot
		}
	} else if *since != "" || *until != "" || *scan {
		fmt.Fprintln(stderr, "oncesync-ops audit job: --since, --until and --scan-targets are tenant flags")
		return exitCannot
	}

	ctx, cancel := context.WithTimeout(ctx, *cloud.timeout)
	defer cancel()
	client, err := cloud.firestore(ctx, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "oncesync-ops audit %s: %v\n", sub, err)
		return exitCannot
	}
	defer client.Close()
	a := audit.New(client)
	a.StuckAfter, a.CheckRecords, a.ScanTargets, a.Parallel, a.MaxFindings = *stuck, !*noRecords, *scan, *parallel, *maxFindings

	var rep interface {
		Clean() bool
	}
	var write func(io.Writer) error
	switch sub {
	case "job":
		r, err := a.Job(ctx, pos[0])
		if err != nil {
			return auditFailed(stderr, "audit job", cloud, err)
		}
		rep, write = r, func(w io.Writer) error { return r.WriteTextWith(w, audit.TextOptions{AllChunks: *allChunks}) }
	case "tenant":
		r, err := a.Tenant(ctx, pos[0], from, to)
		if err != nil {
			return auditFailed(stderr, "audit tenant", cloud, err)
		}
		rep, write = r, r.WriteText
	}
	if *jsonOut {
		write = func(w io.Writer) error { return writeJSON(w, rep) }
	}
	if err := write(stdout); err != nil {
		fmt.Fprintf(stderr, "oncesync-ops audit: write report: %v\n", err)
		return exitCannot
	}
	if rep.Clean() {
		return exitClean
	}
	return exitFindings
}

func auditFailed(stderr io.Writer, what string, cloud *auditCloud, err error) int {
	if errors.Is(err, audit.ErrNotFound) {
		fmt.Fprintf(stderr, "oncesync-ops %s: %v (project %s, database %s)\n", what, err, *cloud.project, *cloud.database)
	} else {
		fmt.Fprintf(stderr, "oncesync-ops %s: %v\n", what, err)
	}
	return exitCannot
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// auditCloud holds the flags that say which project and database to read.
type auditCloud struct {
	project, database *string
	timeout           *time.Duration
	connect           *time.Duration
}

func auditCloudFlags(fs *flag.FlagSet) *auditCloud {
	project := os.Getenv(config.EnvProject)
	if project == "" {
		project = os.Getenv("GOOGLE_CLOUD_PROJECT")
	}
	database := os.Getenv(config.EnvDatabase)
	if database == "" {
		database = config.Default().Database
	}
	return &auditCloud{
		project:  fs.String("project", project, "Google Cloud project (from $"+config.EnvProject+" or $GOOGLE_CLOUD_PROJECT when set)"),
		database: fs.String("database", database, "Firestore database ID (from $"+config.EnvDatabase+" when set)"),
		timeout:  fs.Duration("timeout", 10*time.Minute, "give up after this long"),
		connect:  fs.Duration("connect-timeout", 20*time.Second, "give up at once when Firestore does not answer a first read within this long"),
	}
}

// firestore returns a client for the project: the emulator when FIRESTORE_EMULATOR_HOST is set,
// production with Application Default Credentials otherwise. It says which on stderr.
func (c *auditCloud) firestore(ctx context.Context, stderr io.Writer) (*firestore.Client, error) {
	if *c.project == "" {
		return nil, fmt.Errorf("no project: pass --project or set %s", config.EnvProject)
	}
	where := "production (Application Default Credentials)"
	if h := os.Getenv("FIRESTORE_EMULATOR_HOST"); h != "" {
		where = "the Firestore emulator at " + h
	}
	fmt.Fprintf(stderr, "reading project %s, database %s, on %s\n", *c.project, *c.database, where)
	client, err := firestore.NewClientWithDatabase(ctx, *c.project, *c.database)
	if err != nil {
		return nil, fmt.Errorf("firestore client: %w", err)
	}
	// One small read first, with a short deadline: an unreachable Firestore or refused
	// credentials fail now, with what to check, instead of after the whole --timeout.
	pctx, cancel := context.WithTimeout(ctx, *c.connect)
	defer cancel()
	if _, err := client.Collection(model.Tenants).Limit(1).Documents(pctx).GetAll(); err != nil {
		client.Close()
		return nil, fmt.Errorf("cannot read Firestore of project %s, database %s, on %s within %v (%v): check the network, FIRESTORE_EMULATOR_HOST, or the credentials (gcloud auth application-default login)",
			*c.project, *c.database, where, *c.connect, status.Code(err))
	}
	return client, nil
}

func (c *auditCloud) pubsub(ctx context.Context) (*pubsub.Client, error) {
	client, err := pubsub.NewClient(ctx, *c.project)
	if err != nil {
		return nil, fmt.Errorf("pubsub client: %w", err)
	}
	return client, nil
}

// subcommand starts "oncesync-ops <cmd> <sub> [flags]", where sub is one of subs: with no
// arguments or help it prints usage (the command's own, without a flags section: each subcommand
// has its flags) and is done; an unknown sub is refused.
func subcommand(cmd, usage string, subs, args []string, stderr io.Writer) (sub string, fs *flag.FlagSet, code int, done bool) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, usage)
		fmt.Fprintf(stderr, "\nRun \"oncesync-ops %s <%s> --help\" for its flags.\n", cmd, strings.Join(subs, "|"))
		if len(args) == 0 {
			return "", nil, exitCannot, true
		}
		return "", nil, exitClean, true
	}
	sub = args[0]
	if !slices.Contains(subs, sub) {
		fmt.Fprintf(stderr, "oncesync-ops %s: unknown subcommand %q (%s)\n", cmd, sub, strings.Join(subs, " or "))
		return "", nil, exitCannot, true
	}
	fs = flag.NewFlagSet("oncesync-ops "+cmd+" "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // parseArgs says what is wrong in one line; --help prints the usage
	return sub, fs, 0, false
}

// parseArgs parses flags anywhere among the positional arguments. --help prints usage and the
// flags (done, exit 0); a bad flag or value is one line, naming the flag, and a pointer to --help
// (done, exit 2): never the whole usage.
func parseArgs(fs *flag.FlagSet, usage string, args []string, stderr io.Writer) (pos []string, code int, done bool) {
	pos, err := parseInterspersed(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintln(stderr, usage)
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
		return nil, exitClean, true
	case err != nil:
		// The flag package has printed the error line itself.
		fmt.Fprintf(stderr, "Run \"%s --help\" for its flags.\n", fs.Name())
		return nil, exitCannot, true
	}
	return pos, 0, false
}

func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseWhen reads a time: RFC 3339, a date, a date and minute, or a duration before now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-01-02T15:04:05Z), a date (2026-01-02) or a duration ago (24h)", s)
}
