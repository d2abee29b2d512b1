package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/shared/connection"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/settings"
)

// tenants connect, show and disconnect, against the emulator and the fixture's login host: each
// flow connects and is proven by one exchange; every bad input is refused with its reason; no
// output ever shows a secret.
func TestConnectShowDisconnect(t *testing.T) {
	project := emu.ProjectID(t)
	fs := emu.Firestore(t, project)
	ctx := t.Context()
	dir := t.TempDir()
	_, keysetJSON, err := connection.NewLocal()
	if err != nil {
		t.Fatal(err)
	}
	keyset := filepath.Join(dir, "keyset.json")
	if err := os.WriteFile(keyset, keysetJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	login := fixture.NewLogin(fixture.LoginOptions{Rotate: true})
	ls := httptest.NewServer(login)
	t.Cleanup(ls.Close)
	login.SetURL(ls.URL)
	login.AddOrg("00DA", "https://acme.example")
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	keyFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	login.RegisterApp(fixture.App{ClientID: "app", Key: &key.PublicKey})
	login.AddUser("int@acme.example", "00DA", "app")
	login.AddUser("other@acme.example", "00DA") // never approved the app
	rt, err := login.Consent("app", "int@acme.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"acme", "globex"} {
		if err := (settings.Admin{FS: fs}).AddTenant(ctx, model.Tenant{ID: id, Name: id, Enabled: true}); err != nil {
			t.Fatal(err)
		}
	}
	p := []string{"--project", project, "--keyset", keyset, "--login-url", ls.URL}
	secrets := []string{string(pemKey[40:80]), rt}
	run := func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := runConnect(context.Background(), append(args, p...), func(string) string { return "" }, strings.NewReader(stdin), &out, &errb)
		for _, s := range secrets {
			if strings.Contains(out.String()+errb.String(), s) {
				t.Errorf("%q printed a secret:\n%s%s", args, out.String(), errb.String())
			}
		}
		return code, out.String(), errb.String()
	}

	if code, out, errs := run("", "connect", "acme", "--client-id", "app", "--username", "int@acme.example", "--key-file", keyFile); code != exitClean ||
		!strings.Contains(out, "connected to https://acme.example (jwt flow") {
		t.Fatalf("JWT connect: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := run(rt+"\n", "connect", "globex", "--client-id", "app", "--refresh-token-file", "-"); code != exitClean || !strings.Contains(out, "refresh_token flow") {
		t.Fatalf("refresh-token connect: exit %d\n%s%s", code, out, errs)
	}
	var show bytes.Buffer
	if code := runAdmin(ctx, "tenants", []string{"show", "acme", "--project", project}, noEnv, &show, &bytes.Buffer{}); code != exitClean ||
		!strings.Contains(show.String(), "instance:") || !strings.Contains(show.String(), "https://acme.example") || !strings.Contains(show.String(), "sealed (version 1)") ||
		!strings.Contains(show.String(), "connected since") {
		t.Errorf("show: exit %d\n%s", code, show.String())
	}
	for _, s := range secrets {
		if strings.Contains(show.String(), s) {
			t.Errorf("show printed a secret:\n%s", show.String())
		}
	}

	for _, c := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"", []string{"connect", "acme", "--username", "int@acme.example", "--key-file", keyFile}, "no client ID"},
		{rt, []string{"connect", "acme", "--client-id", "app", "--username", "u", "--key-file", keyFile, "--refresh-token-file", "-"}, "choose"},
		{"", []string{"connect", "acme", "--client-id", "app", "--refresh-token-file", "-"}, "empty"},
		{"", []string{"connect", "acme", "--client-id", "app", "--refresh-token", rt}, "not defined"},
		{"", []string{"connect", "acme", "--client-id", "app", "--username", "u"}, "--key-file"},
		{"", []string{"connect", "nobody", "--client-id", "app", "--username", "int@acme.example", "--key-file", keyFile}, "not found"},
		{"", []string{"connect", "acme", "--client-id", "app", "--username", "other@acme.example", "--key-file", keyFile}, "hasn't approved"},
		{"", []string{"connect", "acme", "--client-id", "app", "--username", "int@acme.example", "--key-file", filepath.Join(dir, "missing.pem")}, "--key-file"},
	} {
		if code, out, errs := run(c.stdin, c.args...); code != exitCannot || !strings.Contains(errs, c.want) {
			t.Errorf("%q: exit %d, want 2 and %q:\n%s%s", c.args, code, c.want, out, errs)
		}
	}
	// The refused connects left acme's good connection as it was, a refused refresh token too.
	if code, _, _ := run("not-a-refresh-token", "connect", "acme", "--client-id", "app", "--refresh-token-file", "-"); code != exitCannot {
		t.Errorf("a refused refresh token: exit %d, want 2", code)
	}
	if c, err := (settings.Admin{FS: fs}).Connection(ctx, "acme"); err != nil || c.Username != "int@acme.example" || c.Method != connection.MethodJWT {
		t.Errorf("acme's connection after refused attempts: %+v, %v", c, err)
	}

	if code, out, errs := run("", "disconnect", "acme"); code != exitClean || !strings.Contains(out, "disconnected") {
		t.Fatalf("disconnect: exit %d\n%s%s", code, out, errs)
	}
	tn, err := (settings.Admin{FS: fs}).Tenant(ctx, "acme")
	if err != nil || !tn.IsDisconnected() || tn.Connection.Reason != "disconnected by an operator" {
		t.Errorf("after disconnect: %+v, %v", tn.Connection, err)
	}
	show.Reset()
	runAdmin(ctx, "tenants", []string{"show", "acme", "--project", project}, noEnv, &show, &bytes.Buffer{})
	if !strings.Contains(show.String(), "connection:") || !strings.Contains(show.String(), "none") || !strings.Contains(show.String(), "disconnected since") {
		t.Errorf("show after disconnect:\n%s", show.String())
	}
}

// keyset create --local writes a keyset that seals and opens; asking for both or neither kind is
// refused.
func TestKeysetCreate(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runKeyset(t.Context(), []string{"create", "--local"}, &out, &errb); code != exitClean {
		t.Fatalf("keyset create --local: exit %d: %s", code, errb.String())
	}
	path := filepath.Join(t.TempDir(), "keyset.json")
	if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := connection.LoadLocal(path)
	if err != nil {
		t.Fatal(err)
	}
	if sealed, err := k.Seal([]byte("x"), []byte("ad")); err != nil || len(sealed) == 0 {
		t.Errorf("seal: %v", err)
	}
	for _, args := range [][]string{{"create"}, {"create", "--local", "--kms-key", "gcp-kms://x"}} {
		if code := runKeyset(t.Context(), args, &bytes.Buffer{}, &bytes.Buffer{}); code != exitCannot {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}
