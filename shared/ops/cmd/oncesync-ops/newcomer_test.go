package main

import (
	"bytes"
	"context"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/audit"
)

// The operator's tool as a newcomer meets it: each finding of #22 part 6, held here.

type cliFunc = func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) int

// every command, with a read it can do.
var everyRead = []struct {
	name string
	cli  cliFunc
	args []string
}{
	{"audit job", auditCLI, []string{"job", "j1"}},
	{"audit tenant", auditCLI, []string{"tenant", "acme"}},
	{"deadletters list", deadLettersCLI, []string{"list"}},
	{"tenants list", tenantsCLI, []string{"list"}},
	{"settings list", settingsCLI, []string{"list"}},
}

// closedPort is an address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// With Firestore unreachable, every command fails at once with what to check, exit 2, instead of
// hanging for its whole --timeout.
func TestUnreachableFirestoreFailsFast(t *testing.T) {
	t.Setenv("FIRESTORE_EMULATOR_HOST", closedPort(t))
	for _, c := range everyRead {
		t.Run(c.name, func(t *testing.T) {
			args := append(append([]string{}, c.args...), "--project", "p", "--connect-timeout", "1s", "--timeout", "10m")
			done := make(chan struct{})
			var (
				code int
				errs string
			)
			go func() {
				defer close(done)
				code, _, errs = invoke(t, c.cli, args...)
			}()
			select {
			case <-done:
			case <-time.After(2 * time.Minute): // a hang, not a timing assertion: the command waits on --timeout (10m)
				t.Fatal("the command did not give up: it waits for --timeout")
			}
			if code != exitCannot || !strings.Contains(errs, "cannot read Firestore") || !strings.Contains(errs, "oncesync-ops "+c.name) {
				t.Errorf("exit %d, stderr %q; want 2 and 'oncesync-ops %s: cannot read Firestore …'", code, errs, c.name)
			}
		})
	}
}

// Every line the tool writes that names a program names oncesync-ops, in usage, help and errors.
func TestTheToolNamesItself(t *testing.T) {
	foreign := regexp.MustCompile(`(^|[\s"])oncesync (audit|deadletters|tenants|settings)\b`)
	for _, c := range []struct {
		cli  cliFunc
		args []string
	}{
		{auditCLI, nil}, {auditCLI, []string{"--help"}}, {auditCLI, []string{"job", "--help"}}, {auditCLI, []string{"jobs"}},
		{auditCLI, []string{"job"}}, {auditCLI, []string{"job", "x", "--since", "1h"}},
		{deadLettersCLI, nil}, {deadLettersCLI, []string{"list", "--help"}}, {deadLettersCLI, []string{"lst"}},
		{deadLettersCLI, []string{"replay"}},
		{tenantsCLI, nil}, {tenantsCLI, []string{"add", "--help"}}, {tenantsCLI, []string{"add"}},
		{settingsCLI, nil}, {settingsCLI, []string{"resync", "--help"}}, {settingsCLI, []string{"show", "a", "b"}},
	} {
		_, out, errs := invoke(t, c.cli, c.args...)
		if m := foreign.FindString(out + errs); m != "" {
			t.Errorf("%q: says %q instead of oncesync-ops:\n%s%s", c.args, m, out, errs)
		}
		if !strings.Contains(out+errs, "oncesync-ops") {
			t.Errorf("%q: does not name itself:\n%s%s", c.args, out, errs)
		}
	}
}

// Help: a command's group help has no empty flags section; a subcommand's lists its flags, and
// no flag says its default twice.
func TestHelpIsWhole(t *testing.T) {
	for _, c := range []struct {
		cli cliFunc
		arg string
	}{{auditCLI, "job"}, {deadLettersCLI, "replay"}, {tenantsCLI, "add"}, {settingsCLI, "resync"}} {
		_, _, group := invoke(t, c.cli)
		if regexp.MustCompile(`flags:\s*$`).MatchString(group) || strings.Contains(group, "flags:\n\n") {
			t.Errorf("group help ends in an empty flags section:\n%s", group)
		}
		code, _, sub := invoke(t, c.cli, c.arg, "--help")
		if code != exitClean || !strings.Contains(sub, "flags:\n  -") {
			t.Errorf("%s --help: exit %d, want 0 and the flags listed:\n%s", c.arg, code, sub)
		}
		for _, line := range strings.Split(sub, "\n") {
			if n := strings.Count(line, "(default "); n > 1 {
				t.Errorf("a flag says its default twice: %q", line)
			}
		}
	}
	_, _, sub := invoke(t, settingsCLI, "resync", "--help")
	for _, line := range strings.Split(sub, "\n") {
		if strings.Contains(line, "oncesync-expand") && strings.Contains(line, "$ONCESYNC_TOPIC_EXPAND or") {
			t.Errorf("--topic names its default in its text and again in (default …): %q", line)
		}
	}
}

// A bad flag or value is one short message naming the flag, and exit 2; never the whole usage.
func TestABadFlagIsOneLine(t *testing.T) {
	for _, c := range []struct {
		cli  cliFunc
		args []string
		flag string
	}{
		{auditCLI, []string{"job", "x", "--parallel", "lots"}, "parallel"},
		{auditCLI, []string{"tenant", "x", "--no-such-flag"}, "no-such-flag"},
		{deadLettersCLI, []string{"list", "--limit", "many"}, "limit"},
		{tenantsCLI, []string{"add", "x", "--search-concurrency", "two"}, "search-concurrency"},
		{settingsCLI, []string{"add", "x", "--chunk-size=big"}, "chunk-size"},
	} {
		code, out, errs := invoke(t, c.cli, c.args...)
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		if code != exitCannot || len(lines) > 3 || !strings.Contains(errs, c.flag) || !strings.Contains(errs, "--help") || out != "" {
			t.Errorf("%q: exit %d, %d lines on stderr; want 2 and at most 3 lines naming -%s and --help:\n%s", c.args, code, len(lines), c.flag, errs)
		}
	}
}

// Invalid input exits 2 in every command, with the reason; 1 is only for findings (an audit that
// is not clean, dead letters listed, a replay refused).
func TestInvalidInputExitsTwoEverywhere(t *testing.T) {
	project := emu.ProjectID(t)
	emu.Firestore(t, project)
	p := []string{"--project", project}
	for _, c := range []struct {
		cli  cliFunc
		args []string
	}{
		{tenantsCLI, []string{"add", "bad id!"}},
		{tenantsCLI, []string{"show", "nope"}},
		{tenantsCLI, []string{"add", "acme", "--search-concurrency", "99"}},
		{settingsCLI, []string{"add", "s1", "--tenant", "nope", "--object", "Contact"}},
		{settingsCLI, []string{"add", "s1", "--tenant", "acme", "--object", "1bad"}},
		{settingsCLI, []string{"show", "nope"}},
		{settingsCLI, []string{"resync", "nope", "--full"}},
		{auditCLI, []string{"job", "nope"}},
		{auditCLI, []string{"tenant", "nope"}},
		{deadLettersCLI, []string{"replay", "nope", "--dry-run"}},
	} {
		code, _, errs := invoke(t, c.cli, append(append([]string{}, c.args...), p...)...)
		if code != exitCannot || strings.TrimSpace(errs) == "" {
			t.Errorf("%q: exit %d, want 2 with the reason; stderr %q", c.args, code, errs)
		}
	}
}

// An audit of a tenant that does not exist (no tenant document, no Jobs) is not clean: it is
// refused, naming the tenant; a tenant that exists with no Jobs is clean.
func TestAuditOfAnUnknownTenantIsNotClean(t *testing.T) {
	project := emu.ProjectID(t)
	fs := emu.Firestore(t, project)
	p := []string{"--project", project}
	code, out, errs := invoke(t, auditCLI, append([]string{"tenant", "nobody"}, p...)...)
	if code != exitCannot || strings.Contains(out, "clean") || !strings.Contains(errs, `"nobody"`) || !strings.Contains(errs, "not found") {
		t.Errorf("unknown tenant: exit %d, stdout %q, stderr %q; want 2 and not found", code, out, errs)
	}
	if _, err := fs.Collection(model.Tenants).Doc("quiet").Set(t.Context(), model.Tenant{Name: "Quiet", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := invoke(t, auditCLI, append([]string{"tenant", "quiet"}, p...)...); code != exitClean || !strings.Contains(out, "RESULT  clean") {
		t.Errorf("a tenant with no Jobs: exit %d, want 0 and clean:\n%s%s", code, out, errs)
	}
}

// A source error of several lines stays on its row of the dead-letter table.
func TestMultiLineErrorsKeepTheirRow(t *testing.T) {
	var b bytes.Buffer
	dls := []audit.DeadLetterSummary{
		{ID: "d1", Kind: "message", Function: "Expander", Reason: "source_rejected_search", Error: "salesforce: 400 MALFORMED_QUERY:\nline 2 of the query\n\tat column 7", Tenant: "acme", Job: "j1"},
		{ID: "d2", Kind: "message", Function: "Importer", Reason: "bad_chunk", Error: "one line", Tenant: "acme", Job: "j2"},
	}
	if err := audit.WriteDeadLetters(&b, dls); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "line 2") || strings.HasPrefix(strings.TrimSpace(line), "at column") {
			t.Errorf("a line of the error broke out of its row: %q\n%s", line, b.String())
		}
	}
	if !strings.Contains(b.String(), "MALFORMED_QUERY: ⏎ line 2 of the query ⏎ at column 7") {
		t.Errorf("the error's lines are not kept, joined on its row:\n%s", b.String())
	}
}
