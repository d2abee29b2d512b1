package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oncesync/oncesync/shared/connection"

	"github.com/oncesync/oncesync/shared/source/connectors"

	"cloud.google.com/go/firestore"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/cli"
	"github.com/oncesync/oncesync/shared/ops/reconcile"
	"github.com/oncesync/oncesync/shared/ops/settings"
)

func cmdTenants() cli.Command {
	return cli.Command{
		Summary: "add, list, show, enable, disable, connect and disconnect tenants: tenants add ID [--name N] | list | show ID | enable ID | disable ID | connect ID … | disconnect ID",
		Run: func(ctx context.Context, args []string) int {
			if len(args) > 0 && (args[0] == "connect" || args[0] == "disconnect") {
				return runConnect(ctx, args, os.Getenv, os.Stdin, os.Stdout, os.Stderr)
			}
			return runAdmin(ctx, "tenants", args, os.Getenv, os.Stdout, os.Stderr)
		},
	}
}

func cmdSettings() cli.Command {
	return cli.Command{
		Summary: "add, list, show, enable, disable, resync and reconcile sync settings: settings add ID --tenant T --object O [--fields F,G] [--target K] | list [--tenant T] | show ID | enable ID | disable ID | resync ID --from T --to T | --full | reconcile ID",
		Run: func(ctx context.Context, args []string) int {
			return runAdmin(ctx, "settings", args, os.Getenv, os.Stdout, os.Stderr)
		},
	}
}

const tenantsUsage = `usage: oncesync-ops tenants add ID [--name N] [--search-concurrency N] [--disabled] [flags]
       oncesync-ops tenants list [flags]
       oncesync-ops tenants show ID [flags]
       oncesync-ops tenants enable ID | disable ID [flags]
       oncesync-ops tenants connect ID … | disconnect ID (see oncesync-ops tenants connect --help)

"add" creates tenants/ID (never overwrites one). A disabled tenant's settings are skipped at every
tick, with a dead letter of kind setting (reason tenant_disabled). "enable" and "disable" change
the flag of an existing tenant only. Exit code 0: done; 2: refused (invalid, exists, not found) or
could not run.`

const settingsUsage = `usage: oncesync-ops settings add ID --tenant T --object O [--fields F,G,...] [--target upsert|generated]
                                [--chunk-size N] [--since T] [--api-reserve N] [--disabled] [flags]
       oncesync-ops settings list [--tenant T] [flags]
       oncesync-ops settings show ID [flags]
       oncesync-ops settings enable ID | disable ID [flags]
       oncesync-ops settings resync ID (--from T --to T | --full) [--label L] [--topic T] [flags]
       oncesync-ops settings reconcile ID [flags]

"add" creates syncSettings/ID for an existing tenant (never overwrites one), after checking it as the pipeline will use it: IDs of letters, digits, '-' and '_'; the
object and fields SOQL identifiers (Id and SystemModstamp are always selected: leave them out); a
known target; a chunk size of 1 to 5000 (0: the deployment default). Its first Job imports from
--since (RFC 3339 or 2006-01-02; default: everything the source has) to the tick. "enable" and
"disable" change the flag of an existing setting only; its watermark stays, so the next Job after
enabling covers the time it was disabled. --api-reserve N leaves N of the org's daily API requests
to its other integrations: a search that finds no more than N left pauses, and the recovery sweep
resumes it once the budget is back (0: no reserve).

"resync" imports a window of the setting again, as a Job with the same guarantees as a tick's,
without moving the watermark: after a fixed mapping or a restored backup. Rows as new as the
target's are rewritten; older ones still change nothing. --full is everything up to the watermark.
The same request (setting, window, --label) makes one Job however often it is sent: sent again,
it re-publishes the Job's expand message while the Job is unfinished, and says so once it is
COMPLETED. A new --label asks for another resync of the same window. The window must end by the
watermark (the next tick imports what comes after).

"reconcile" tombstones the setting's target records whose IDs the source no longer has at all (hard
deletes: deletes the source still reports arrive with the Jobs). It reads every ID of the source
object (about 60 bytes of memory an ID), then the target's records, and reports progress on
stderr. A second run changes nothing. It searches the tenant's org through its connection, as the expander
does: set ONCESYNC_KEYSET (and ONCESYNC_KEYSET_KMS_KEY, ONCESYNC_WINDOW_LAG as deployed).

Exit code 0: done; 2: refused (invalid, exists, unknown tenant, not found, window after the
watermark) or could not run.`

// runAdmin runs "tenants" or "settings" (cmd); getenv reads the source's configuration for
// reconcile.
func runAdmin(ctx context.Context, cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	usage := map[string]string{"tenants": tenantsUsage, "settings": settingsUsage}[cmd]
	subs := []string{"add", "list", "show", "enable", "disable"}
	if cmd == "settings" {
		subs = append(subs, "resync", "reconcile")
	}
	sub, fs, code, done := subcommand(cmd, usage, subs, args, stderr)
	if done {
		return code
	}
	cloud := auditCloudFlags(fs)
	jsonOut := fs.Bool("json", false, "list, show: write JSON instead of text")
	disabled := fs.Bool("disabled", false, "add: add it disabled (enable it later)")
	var (
		rs      resyncFlags
		t       model.Tenant
		s       model.SyncSetting
		fields  string
		since   string
		targets = strings.Join(settings.Targets(), " or ")
	)
	switch cmd {
	case "tenants":
		fs.StringVar(&t.Name, "name", "", "add: the tenant's display name (default: its ID)")
		fs.IntVar(&t.SearchConcurrency, "search-concurrency", 0, "add: searches of one Job at once against the tenant's source, 1 up to what its connector allows (Salesforce: 10; 0: the deployment default)")
	case "settings":
		fs.StringVar(&s.TenantID, "tenant", "", "add: the setting's tenant (required); list: only this tenant's settings")
		fs.StringVar(&s.SourceObject, "object", "", "add: the source object, e.g. Contact (required)")
		fs.StringVar(&fields, "fields", "", "add: source fields to import besides Id and SystemModstamp, comma-separated")
		fs.StringVar(&s.Target, "target", model.TargetUpsert, "add: the target kind, "+targets)
		fs.IntVar(&s.ChunkSize, "chunk-size", 0, "add: records per chunk, 1..5000 (0: the deployment default)")
		fs.StringVar(&since, "since", "", "add: the first Job's window starts here (`T`: RFC 3339, 2006-01-02 or a duration ago; default: the beginning)")
		fs.IntVar(&s.APIReserve, "api-reserve", 0, "add: the org's daily API requests to leave to other integrations (0: no reserve)")
		fs.StringVar(&rs.from, "from", "", "resync: the window's start (`T`: RFC 3339 or 2006-01-02)")
		fs.StringVar(&rs.to, "to", "", "resync: the window's end, at most the watermark (`T`)")
		fs.BoolVar(&rs.full, "full", false, "resync: the whole history, up to the watermark")
		fs.StringVar(&rs.label, "label", "", "resync: tells this request from an earlier one of the same window")
		rs.topic = os.Getenv(config.EnvTopicExpand)
		if rs.topic == "" {
			rs.topic = "oncesync-expand"
		}
		fs.StringVar(&rs.topic, "topic", rs.topic, "resync: the expand topic ID (from $"+config.EnvTopicExpand+" when set)")
	}
	pos, code, done := parseArgs(fs, usage, args[1:], stderr)
	if done {
		return code
	}
	var err error
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "oncesync-ops %s %s: %v\n", cmd, sub, err)
		return code
	}
	var id string
	switch {
	case sub == "list" && len(pos) > 0:
		return fail(exitCannot, fmt.Errorf("unexpected arguments %q", pos))
	case sub != "list" && len(pos) != 1:
		return fail(exitCannot, fmt.Errorf("name one %s ID (got %d arguments)", strings.TrimSuffix(cmd, "s"), len(pos)))
	case sub != "list":
		id = pos[0]
	}
	if s.Watermark, err = parseWhen(since, time.Now().UTC()); err != nil {
		return fail(exitCannot, fmt.Errorf("--since: %w", err))
	}

	ctx, cancel := context.WithTimeout(ctx, *cloud.timeout)
	defer cancel()
	client, err := cloud.firestore(ctx, stderr)
	if err != nil {
		return fail(exitCannot, err)
	}
	defer client.Close()
	a := settings.Admin{FS: client}
	switch sub {
	case "resync":
		return runResync(ctx, cloud, client, id, rs, stdout, stderr)
	case "reconcile":
		return runReconcile(ctx, client, *cloud.project, id, getenv, stdout, stderr)
	}

	var out any // what list and show print
	switch {
	case cmd == "tenants" && sub == "add":
		t.ID, t.Enabled = id, !*disabled
		if t.Name == "" {
			t.Name = id
		}
		err = a.AddTenant(ctx, t)
	case cmd == "settings" && sub == "add":
		s.ID, s.Enabled = id, !*disabled
		if fields != "" {
			for f := range strings.SplitSeq(fields, ",") {
				s.Fields = append(s.Fields, strings.TrimSpace(f))
			}
		}
		if s.TenantID == "" {
			return fail(exitCannot, errors.New("--tenant is required"))
		}
		err = a.AddSetting(ctx, s)
	case sub == "enable" || sub == "disable":
		if cmd == "tenants" {
			err = a.EnableTenant(ctx, id, sub == "enable")
		} else {
			err = a.EnableSetting(ctx, id, sub == "enable")
		}
	case cmd == "tenants" && sub == "list":
		out, err = a.Tenants(ctx)
	case cmd == "tenants":
		var v tenantView
		if v.Tenant, err = a.Tenant(ctx, id); err == nil {
			c, cerr := a.Connection(ctx, id)
			v.Connection, v.connErr = &c, cerr
			if cerr != nil {
				v.Connection = nil
			}
		}
		out = v
	case sub == "list":
		out, err = a.Settings(ctx, s.TenantID)
	default:
		out, err = a.Setting(ctx, id)
	}
	if err != nil {
		return fail(exitCannot, err) // refused (invalid, exists, unknown tenant, not found) or could not run
	}
	switch {
	case out == nil:
		fmt.Fprintf(stdout, "%s %s: %s\n", strings.TrimSuffix(cmd, "s"), id, map[string]string{"add": "added", "enable": "enabled", "disable": "disabled"}[sub])
		return exitClean
	case *jsonOut:
		err = writeJSON(stdout, out)
	default:
		err = writeAdmin(stdout, out)
	}
	if err != nil {
		return fail(exitCannot, err)
	}
	return exitClean
}

// tenantView is what "tenants show" prints: the tenant and its connection, never a secret.
type tenantView struct {
	model.Tenant
	Connection *connection.Connection `json:"connectionDetails,omitempty"`
	connErr    error
}

// writeAdmin prints tenants or settings as a table, one of them as fields.
func writeAdmin(w io.Writer, v any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	onOff := map[bool]string{true: "enabled", false: "disabled"}
	when := func(t time.Time) string {
		if t.IsZero() {
			return "(the beginning)"
		}
		return t.UTC().Format(time.RFC3339)
	}
	chunk := func(n int) string {
		if n == 0 {
			return "default"
		}
		return fmt.Sprint(n)
	}
	switch v := v.(type) {
	case []model.Tenant:
		fmt.Fprintln(tw, "TENANT\tNAME\tSTATE\tSEARCH CONCURRENCY")
		for _, t := range v {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Name, onOff[t.Enabled], chunk(t.SearchConcurrency))
		}
	case tenantView:
		fmt.Fprintf(tw, "tenant\t%s\nname\t%s\nstate\t%s\nsearch concurrency\t%s\n", v.ID, v.Name, onOff[v.Enabled], chunk(v.SearchConcurrency))
		switch cs := v.Tenant.Connection; {
		case cs == nil:
		case cs.State == model.Disconnected:
			fmt.Fprintf(tw, "connection state:\tdisconnected since %s: %s\n", when(cs.ChangedAt), cs.Reason)
		default:
			fmt.Fprintf(tw, "connection state:\t%s since %s\n", cs.State, when(cs.ChangedAt))
		}
		c := connection.Connection{}
		if v.Connection != nil {
			c = *v.Connection
		}
		connectionLines(tw, c, v.connErr)
	case []model.SyncSetting:
		fmt.Fprintln(tw, "SETTING\tTENANT\tOBJECT\tTARGET\tCHUNK\tSTATE\tWATERMARK\tLAST JOB")
		for _, s := range v {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.TenantID, s.SourceObject, s.Target, chunk(s.ChunkSize), onOff[s.Enabled], when(s.Watermark), s.LastJobID)
		}
	case model.SyncSetting:
		fmt.Fprintf(tw, "setting\t%s\ntenant\t%s\nobject\t%s\nfields\tId, SystemModstamp%s\ntarget\t%s\nchunk size\t%s\nstate\t%s\nwatermark\t%s\nlast job\t%s\napi reserve\t%d\n",
			v.ID, v.TenantID, v.SourceObject, prefixed(v.Fields), v.Target, chunk(v.ChunkSize), onOff[v.Enabled], when(v.Watermark), v.LastJobID, v.APIReserve)
	default:
		return fmt.Errorf("cannot print %T", v)
	}
	return tw.Flush()
}

func prefixed(fields []string) string {
	if len(fields) == 0 {
		return ""
	}
	return ", " + strings.Join(fields, ", ")
}

type resyncFlags struct {
	from, to, label, topic string
	full                   bool
}

// runResync creates (once) the resync Job of a request and publishes its expand message unless
// the Job is finished.
func runResync(ctx context.Context, cloud *auditCloud, client *firestore.Client, id string, f resyncFlags, stdout, stderr io.Writer) int {
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "oncesync-ops settings resync: %v\n", err)
		return code
	}
	r := settings.Resync{Setting: id, Full: f.full, Label: f.label}
	switch {
	case f.full && (f.from != "" || f.to != ""):
		return fail(exitCannot, errors.New("--full or --from and --to, not both"))
	case !f.full && (f.from == "" || f.to == ""):
		return fail(exitCannot, errors.New("name the window: --from and --to, or --full"))
	case !f.full:
		now := time.Now().UTC()
		var err error
		if r.From, err = parseWhen(f.from, now); err != nil {
			return fail(exitCannot, fmt.Errorf("--from: %w", err))
		}
		if r.To, err = parseWhen(f.to, now); err != nil {
			return fail(exitCannot, fmt.Errorf("--to: %w", err))
		}
	}
	ps, err := cloud.pubsub(ctx)
	if err != nil {
		return fail(exitCannot, err)
	}
	defer ps.Close()
	pub := bus.New(ps)
	defer pub.Close()
	res, err := settings.Admin{FS: client}.Resync(ctx, pub, f.topic, r, config.Default().ChunkSize)
	if err != nil {
		return fail(exitCannot, err) // refused (invalid, not found, unknown tenant) or could not run
	}
	job := res.Job
	switch {
	case !res.Published:
		fmt.Fprintf(stdout, "resync Job %s exists and is %s: nothing published (a new --label asks for another resync)\n", job.ID, job.Status)
		return exitClean
	case res.Created:
		fmt.Fprintf(stdout, "resync Job %s created", job.ID)
	default:
		fmt.Fprintf(stdout, "resync Job %s exists (%s); its expand message published again", job.ID, job.Status)
	}
	fmt.Fprintf(stdout, ": window %s → %s of setting %s; follow it with oncesync-ops audit job %s\n",
		job.WindowFrom.Format(time.RFC3339Nano), job.WindowTo.Format(time.RFC3339Nano), id, job.ID)
	return exitClean
}

// runReconcile tombstones the setting's records the source no longer has (package reconcile),
// searching the tenant's org through its connection as the expander does, configured from the
// environment.
func runReconcile(ctx context.Context, client *firestore.Client, project, id string, getenv func(string) string, stdout, stderr io.Writer) int {
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "oncesync-ops settings reconcile: %v\n", err)
		return code
	}
	// The expander's configuration, for its source variables; reconcile publishes nothing, so the
	// topics it requires are not asked of the operator.
	cfg, err := config.Load(config.Expander, func(name string) string {
		switch v := getenv(name); {
		case v != "":
			return v
		case name == config.EnvProject:
			return project
		case name == config.EnvTopicExpand || name == config.EnvTopicChunks:
			return "unused-by-reconcile"
		}
		return ""
	})
	if err != nil {
		return fail(exitCannot, err)
	}
	// The setting's tenant is searched in its own org, through its connection, as the expander
	// searches it.
	st, err := settings.Admin{FS: client}.Setting(ctx, id)
	if err != nil {
		return fail(exitCannot, err)
	}
	sealer, err := connection.LoadKeyset(ctx, cfg.Keyset, cfg.KeysetKMS)
	if err != nil {
		return fail(exitCannot, err)
	}
	pool := &connectors.Pool{Connections: connection.Store{FS: client, Sealer: sealer}, Config: cfg, MaxTokenAge: cfg.TokenMaxAge}
	src, err := pool.Open(ctx, model.Tenant{ID: st.TenantID})
	if err != nil {
		return fail(exitCannot, err)
	}
	res, err := reconcile.Run(ctx, reconcile.Config{FS: client, Source: src, Lag: cfg.WindowLag, Progress: func(p reconcile.Progress) {
		fmt.Fprintf(stderr, "%s: %d source IDs, %d target records compared, %d tombstoned\n", p.Phase, p.SourceIDs, p.Records, p.Tombstoned)
	}}, id)
	if err != nil {
		return fail(exitCannot, err) // not found, or could not run
	}
	fmt.Fprintf(stdout, "setting %s: the source holds %d IDs (as of %s); %d target records: %d tombstoned now, %d already tombstoned, %d changed meanwhile (left for the next run)\n",
		id, res.SourceIDs, res.Since.Format(time.RFC3339), res.Records, res.Tombstoned, res.AlreadyGone, res.Changed)
	if len(res.TombstonedID) > 0 {
		fmt.Fprintf(stdout, "tombstoned: %s", strings.Join(res.TombstonedID, ", "))
		if res.Tombstoned > len(res.TombstonedID) {
			fmt.Fprintf(stdout, " … (%d more)", res.Tombstoned-len(res.TombstonedID))
		}
		fmt.Fprintln(stdout)
	}
	return exitClean
}
