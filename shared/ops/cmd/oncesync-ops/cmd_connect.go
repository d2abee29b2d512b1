package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/connection"
	"github.com/oncesync/oncesync/shared/ops/cli"
	"github.com/oncesync/oncesync/shared/ops/settings"
)

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
	var keyFile, rtFile, keyset, kmsKey, reason string
	fs.StringVar(&r.LoginURL, "login-url", "https://login.salesforce.com", "connect: https://login.salesforce.com, https://test.salesforce.com (a sandbox) or your My Domain URL")
	fs.StringVar(&r.ClientID, "client-id", "", "connect: the connected app's consumer key")
	fs.StringVar(&r.Username, "username", "", "connect, JWT bearer flow: the user the integration acts as")
	fs.StringVar(&keyFile, "key-file", "", "connect, JWT bearer flow: the PEM private key of the certificate uploaded to the app")
	fs.StringVar(&rtFile, "refresh-token-file", "", "connect, refresh-token flow: a file holding the refresh token, or - for standard input")
	fs.StringVar(&keyset, "keyset", getenv(config.EnvKeyset), "connect: the keyset file that seals credentials (from $"+config.EnvKeyset+" when set)")
	fs.StringVar(&kmsKey, "kms-key", getenv(config.EnvKeysetKMS), "connect: the Cloud KMS key that encrypts the keyset (from $"+config.EnvKeysetKMS+" when set; none: a local cleartext keyset)")
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
			return fail(fmt.Errorf("no keyset to seal the credentials: pass --keyset or set %s", config.EnvKeyset))
		}
		if sealer, err = connection.LoadKeyset(ctx, keyset, kmsKey); err != nil {
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

func cmdKeyset() cli.Command {
	return cli.Command{
		Summary: "make the keyset that seals tenants' credentials: keyset create --kms-key gcp-kms://… | --local",
		Run: func(ctx context.Context, args []string) int {
			return runKeyset(ctx, args, os.Stdout, os.Stderr)
		},
	}
}

const keysetUsage = `usage: oncesync-ops keyset create --kms-key gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K
       oncesync-ops keyset create --local

Writes a new tink AEAD keyset (AES256-GCM) to standard output: encrypted by the Cloud KMS key
(terraform output credentials_kms_key), for the deployment's keyset secret; or, with --local, in
the clear, for local runs only (ONCESYNC_KEYSET). Exit code 0: done; 2: could not.`

func runKeyset(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	_, fs, code, done := subcommand("keyset", keysetUsage, []string{"create"}, args, stderr)
	if done {
		return code
	}
	kmsKey := fs.String("kms-key", "", "the Cloud KMS key that encrypts the keyset (gcp-kms://…)")
	local := fs.Bool("local", false, "write the keyset in the clear, for local runs")
	if _, code, done := parseArgs(fs, keysetUsage, args[1:], stderr); done {
		return code
	}
	var out []byte
	var err error
	switch {
	case (*kmsKey == "") == !*local:
		err = errors.New("name the KMS key (--kms-key) or ask for a local keyset (--local), one of them")
	case *local:
		_, out, err = connection.NewLocal()
	default:
		out, err = connection.NewEncrypted(ctx, *kmsKey)
	}
	if err != nil {
		fmt.Fprintf(stderr, "oncesync-ops keyset create: %v\n", err)
		return exitCannot
	}
	_, _ = stdout.Write(out)
	return exitClean
}
