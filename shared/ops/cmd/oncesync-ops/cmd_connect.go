package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/oncesync/oncesync/shared/connection"
	"github.com/oncesync/oncesync/shared/ops/settings"
)

// EnvKeyset names the keyset that seals credentials (a cleartext local keyset: local runs and the
// demo; see docs/deploy.md for production's KMS-encrypted one).
const EnvKeyset = "ONCESYNC_KEYSET"

const connectUsage = `usage: oncesync-ops tenants connect ID --client-id K --username U --key-file F [--login-url L] [flags]
       oncesync-ops tenants connect ID --client-id K --refresh-token-file F|- [--login-url L] [flags]
       oncesync-ops tenants disconnect ID [--reason R] [flags]

"connect" connects a tenant to its own Salesforce org, through a connected app (its consumer key
is --client-id): with the JWT bearer flow (server to server: the user the integration acts as, and
the private key of the certificate uploaded to the app), or with a refresh token from a user's
web-server consent, read from a file or standard input (never from a flag). The credentials are
proven by one token exchange, which names the org's instance URL, then stored sealed. The tenant's
paused Jobs resume at the next recovery sweep.

"disconnect" removes the tenant's connection and its credential; its Jobs pause.

Exit code 0: done; 2: refused (invalid, unknown tenant, the org refused the credentials) or could
not run.`

// runConnect runs "tenants connect" and "tenants disconnect".
func runConnect(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	sub, fs, code, done := subcommand("tenants", connectUsage, []string{"connect", "disconnect"}, args, stderr)
	if done {
		return code
	}
	cloud := auditCloudFlags(fs)
	var r settings.Connect
	var keyFile, rtFile, keyset, reason string
	fs.StringVar(&r.LoginURL, "login-url", "https://login.salesforce.com", "connect: https://login.salesforce.com, https://test.salesforce.com (a sandbox) or your My Domain URL")
	fs.StringVar(&r.ClientID, "client-id", "", "connect: the connected app's consumer key")
	fs.StringVar(&r.Username, "username", "", "connect, JWT bearer flow: the user the integration acts as")
	fs.StringVar(&keyFile, "key-file", "", "connect, JWT bearer flow: the PEM private key of the certificate uploaded to the app")
	fs.StringVar(&rtFile, "refresh-token-file", "", "connect, refresh-token flow: a file holding the refresh token, or - for standard input")
	fs.StringVar(&keyset, "keyset", getenv(EnvKeyset), "connect: the keyset that seals credentials (from $"+EnvKeyset+" when set)")
	fs.StringVar(&reason, "reason", "disconnected by an operator", "disconnect: why, shown with the tenant")
	pos, code, done := parseArgs(fs, connectUsage, args[1:], stderr)
	if done {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "oncesync-ops tenants %s: %v\n", sub, err)
		return exitCannot
	}
	if len(pos) != 1 {
		return fail(fmt.Errorf("name one tenant ID (got %d arguments)", len(pos)))
	}
	r.Tenant = pos[0]
	var sealer connection.Sealer
	if sub == "connect" {
		var err error
		if r.Key, err = readSecret(keyFile, stdin); err != nil {
			return fail(fmt.Errorf("--key-file: %w", err))
		}
		if r.RefreshToken, err = readSecret(rtFile, stdin); err != nil {
			return fail(fmt.Errorf("--refresh-token-file: %w", err))
		}
		if err := r.Validate(); err != nil {
			return fail(err)
		}
		if keyset == "" {
			return fail(fmt.Errorf("no keyset to seal the credentials: pass --keyset or set %s", EnvKeyset))
		}
		if sealer, err = connection.LoadLocal(keyset); err != nil {
			return fail(err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *cloud.timeout)
	defer cancel()
	client, err := cloud.firestore(ctx, stderr)
	if err != nil {
		return fail(err)
	}
	defer client.Close()
	a := settings.Admin{FS: client}
	if sub == "disconnect" {
		if err := a.Disconnect(ctx, r.Tenant, reason); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "tenant %s: disconnected\n", r.Tenant)
		return exitClean
	}
	c, err := a.Connect(ctx, sealer, r)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "tenant %s: connected to %s (%s flow, client %s)\n", r.Tenant, c.InstanceURL, c.Method, c.ClientID)
	return exitClean
}

// readSecret reads a credential from a file, or from stdin for "-"; "" is none.
func readSecret(path string, stdin io.Reader) (connection.Credential, error) {
	var b []byte
	var err error
	switch path {
	case "":
		return nil, nil
	case "-":
		b, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
	default:
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, errors.New(strings.ReplaceAll(err.Error(), path, "the file")) // the error, not the content
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) == 0 {
		return nil, errors.New("it is empty")
	}
	return connection.Credential(b), nil
}

// connectionLines describes a tenant's connection for "tenants show", never its secret.
func connectionLines(w io.Writer, c connection.Connection, err error) {
	if errors.Is(err, connection.ErrNoConnection) {
		fmt.Fprintln(w, "connection:\tnone (oncesync-ops tenants connect)")
		return
	}
	if err != nil {
		fmt.Fprintf(w, "connection:\tunreadable: %v\n", err)
		return
	}
	when := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(w, "connector:\t%s\ninstance:\t%s\nlogin:\t%s\nmethod:\t%s\nclient:\t%s\n", c.Connector, c.InstanceURL, c.LoginURL, c.Method, c.ClientID)
	if c.Username != "" {
		fmt.Fprintf(w, "user:\t%s\n", c.Username)
	}
	fmt.Fprintf(w, "connected:\t%s\nlast refresh:\t%s\ncredential:\tsealed (version %d)\n", when(c.ConnectedAt), when(c.LastRefresh), c.Version)
}
