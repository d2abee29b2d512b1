// Package stack runs the whole system locally, the way it runs in production, for the demo and
// the benchmark: the real Firestore and Pub/Sub emulators, the fixture Salesforce, the three
// functions served by the functions framework in their own process (`oncesync run`), and the local
// Eventarc pushing binary-mode CloudEvents to them.
package stack

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/oncesync/oncesync/harness/emu"
	"github.com/oncesync/oncesync/harness/eventarc"
	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/harness/sim"
	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/config"
	"github.com/oncesync/oncesync/shared/connection"
	"github.com/oncesync/oncesync/shared/model"
	"github.com/oncesync/oncesync/shared/ops/settings"
)

// Topic IDs of the local deployment (terraform names them the same way, with a prefix).
const (
	topicTicks  = "oncesync-ticks"
	topicExpand = "oncesync-expand"
	topicChunks = "oncesync-chunks"
	topicBulk   = "oncesync-chunks-bulk"
	topicDead   = "oncesync-deadletters"
)

// Options configure a Stack.
type Options struct {
	Project     string            // emulator project (default "oncesync-local")
	LogDir      string            // emulator and function logs (default: a temporary directory)
	Faults      eventarc.Injector // delivery faults (nil: none)
	Concurrency int               // in-flight deliveries per function (default 8)
	ExtraEnv    []string          // more environment for the functions process (e.g. ONCESYNC_* overrides)
	Binary      string            // the oncesync binary that serves the functions (default: this executable)
	RunArgs     []string          // more arguments for `oncesync run` (e.g. the benchmark's --bench)
	FuncPath    string            // path prefix the functions are served under (default "": /Scheduler…)
	Emulators   *emu.Emulators    // running emulators to use, left running by Stop (default: start a pair)
	Log         io.Writer         // progress messages (default os.Stderr)
	Latency     fixture.Latency   // the fixture source's latency model (default: none)
	// SessionTimeout is how long the orgs' access tokens live (the org's session timeout; the
	// token answers do not say it); 0: for ever.
	SessionTimeout time.Duration
}

// Stack is a running local deployment.
type Stack struct {
	opts      Options
	Emu       *emu.Emulators
	ownEmu    bool            // Stop stops Emu
	Fixture   *fixture.Server // the org Seed connects tenants to (DeploymentOrg)
	SourceURL string          // its instance URL
	Login     *fixture.Login  // the login host of every org: tenants connect through it
	LoginURL  string
	orgs      map[string]*fixture.Server // by org ID
	keys      *connection.Keyset         // seals tenants' credentials; the functions read the same file
	ctx       context.Context
	FS        *firestore.Client // this process's client (its calls are counted in Backend)
	Backend   *sim.Backend
	PS        *pubsub.Client
	Pub       *bus.PubSub
	Eventarc  *eventarc.Eventarc
	FuncURL   string
	funcs     *exec.Cmd
	funcsErr  chan error
	cancel    context.CancelFunc
	arcDone   chan error
	Started   time.Time
}

// Start brings the stack up. Stop it with Stop, whatever happens.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	if opts.Project == "" {
		opts.Project = "oncesync-local"
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 8
	}
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	if opts.LogDir == "" {
		if opts.LogDir, err = os.MkdirTemp("", "oncesync-logs-"); err != nil {
			return nil, err
		}
	}
	if opts.Binary == "" {
		if opts.Binary, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	s := &Stack{opts: opts, Started: time.Now()}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if opts.Emulators != nil {
		s.Emu = opts.Emulators
	} else {
		s.logf("starting the Firestore and Pub/Sub emulators")
		if s.Emu, err = emu.Start(ctx, emu.Options{Firestore: true, PubSub: true, LogDir: filepath.Join(opts.LogDir, "emulators")}); err != nil {
			return nil, err
		}
		s.ownEmu = true
	}
	env := append(os.Environ(), s.Emu.Env()...)
	s.ctx = context.WithoutCancel(ctx)
	s.Login = fixture.NewLogin(fixture.LoginOptions{SessionTimeout: opts.SessionTimeout})
	if s.LoginURL, err = fixture.ListenAndServe(ctx, "", s.Login); err != nil {
		return nil, err
	}
	s.Login.SetURL(s.LoginURL)
	s.orgs = map[string]*fixture.Server{}
	s.Fixture = fixture.New(fixture.Options{Latency: opts.Latency, Sessions: s.Login, OrgID: DeploymentOrg})
	if s.SourceURL, err = fixture.ListenAndServe(ctx, "", s.Fixture); err != nil {
		return nil, err
	}
	s.orgs[DeploymentOrg] = s.Fixture
	s.Login.AddOrg(DeploymentOrg, s.SourceURL)
	keys, keysetJSON, err := connection.NewLocal()
	if err != nil {
		return nil, err
	}
	s.keys = keys
	keysetPath := filepath.Join(opts.LogDir, "keyset.json")
	if err := os.WriteFile(keysetPath, keysetJSON, 0o600); err != nil {
		return nil, fmt.Errorf("stack: keyset: %w", err)
	}
	s.Backend = sim.NewBackend()
	if s.FS, err = sim.FirestoreClientAt(ctx, s.Emu.FirestoreHost, opts.Project, s.Backend); err != nil {
		return nil, err
	}
	if s.PS, err = pubsub.NewClient(ctx, opts.Project, option.WithEndpoint(s.Emu.PubSubHost), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))); err != nil {
		return nil, fmt.Errorf("stack: pubsub: %w", err)
	}
	s.Pub = bus.New(s.PS)
	for _, t := range []string{topicTicks, topicExpand, topicChunks, topicBulk, topicDead} {
		if err := emu.EnsureTopic(ctx, s.PS, t); err != nil {
			return nil, err
		}
	}
	// The retaining subscription on the dead-letter topic, as terraform declares it.
	if err := emu.EnsureSubscription(ctx, s.PS, topicDead+"-retained", topicDead, 60*time.Second); err != nil {
		return nil, err
	}

	port, err := emu.FreePort()
	if err != nil {
		return nil, err
	}
	s.FuncURL = "http://127.0.0.1:" + strconv.Itoa(port)
	logf, err := os.Create(filepath.Join(opts.LogDir, "functions.log"))
	if err != nil {
		return nil, err
	}
	s.funcs = exec.Command(opts.Binary, append([]string{"run", "--addr", "127.0.0.1:" + strconv.Itoa(port)}, opts.RunArgs...)...)
	s.funcs.Env = append(append(env,
		config.EnvProject+"="+opts.Project,
		config.EnvTopicTicks+"="+topicTicks,
		config.EnvTopicExpand+"="+topicExpand,
		config.EnvTopicChunks+"="+topicChunks,
		config.EnvTopicBulk+"="+topicBulk,
		config.EnvTopicDead+"="+topicDead,
		config.EnvKeyset+"="+keysetPath,
	), opts.ExtraEnv...)
	s.funcs.Stdout, s.funcs.Stderr = logf, logf
	s.funcs.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	s.logf("starting the functions (oncesync run) on %s; logs in %s", s.FuncURL, logf.Name())
	if err := s.funcs.Start(); err != nil {
		return nil, fmt.Errorf("stack: start functions: %w", err)
	}
	s.funcsErr = make(chan error, 1)
	go func() { s.funcsErr <- s.funcs.Wait(); logf.Close() }()
	fnURL := s.FuncURL + opts.FuncPath
	if err := waitHTTP(ctx, fnURL+"/Scheduler", 30*time.Second, s.funcsErr); err != nil {
		return nil, err
	}

	arcCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.Eventarc, err = eventarc.New(eventarc.Config{
		Client: s.PS, Project: opts.Project,
		Routes: []eventarc.Route{
			{Topic: topicTicks, Subscription: "eventarc-scheduler", URL: fnURL + "/Scheduler"},
			{Topic: topicExpand, Subscription: "eventarc-expander", URL: fnURL + "/Expander"},
			{Topic: topicChunks, Subscription: "eventarc-importer", URL: fnURL + "/Importer"},
			{Topic: topicBulk, Subscription: "eventarc-importer-bulk", URL: fnURL + "/ImporterBulk"},
		},
		Concurrency: opts.Concurrency, MinBackoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second,
		AckDeadline: 600 * time.Second, MaxAttempts: 50, DeadLetterTopic: topicDead, Faults: opts.Faults,
	})
	if err != nil {
		return nil, err
	}
	s.arcDone = make(chan error, 1)
	go func() { s.arcDone <- s.Eventarc.Run(arcCtx) }()
	s.logf("local Eventarc pushing ticks, expand and both chunk lanes to the functions (concurrency %d)", opts.Concurrency)
	return s, nil
}

// DeploymentOrg is the org of the stack's Fixture.
const DeploymentOrg = "00D000000000001"

// AddOrg starts another org: its own instance URL, records, API budget and concurrent-query
// limit, behind the stack's login host.
func (s *Stack) AddOrg(orgID string) (*fixture.Server, error) {
	org := fixture.New(fixture.Options{Latency: s.opts.Latency, Sessions: s.Login, OrgID: orgID})
	url, err := fixture.ListenAndServe(s.ctx, "", org)
	if err != nil {
		return nil, err
	}
	s.orgs[orgID] = org
	s.Login.AddOrg(orgID, url)
	return org, nil
}

// Connect connects tenant to an org through a connected app of its own, with the JWT bearer flow,
// as oncesync-ops tenants connect does (settings.Admin.Connect: the same checks, the same sealed
// documents).
func (s *Stack) Connect(ctx context.Context, tenant, orgID string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	return s.ConnectWith(ctx, tenant, orgID, key)
}

// ConnectWith is Connect with the connected app's key given: the benchmark connects thousands of
// tenants, each through an app of its own, with one key generated once.
func (s *Stack) ConnectWith(ctx context.Context, tenant, orgID string, key *rsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	client, user := "app-"+tenant, "integration@"+tenant+".example"
	s.Login.RegisterApp(fixture.App{ClientID: client, Key: &key.PublicKey})
	s.Login.AddUser(user, orgID, client)
	_, err = settings.Admin{FS: s.FS}.Connect(ctx, s.keys, settings.Connect{Tenant: tenant, LoginURL: s.LoginURL, ClientID: client, Username: user,
		Key: connection.Credential(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))})
	if err != nil {
		return fmt.Errorf("stack: connect %s: %w", tenant, err)
	}
	return nil
}

// SeedOrg adds the setting's tenant (enabled, unless it exists) and the sync setting, as
// oncesync-ops tenants add and settings add do (settings.Admin: the same validation, the same
// documents), and loads rows into orgID's records. Connect the tenant to the org (Connect).
func (s *Stack) SeedOrg(ctx context.Context, orgID string, st model.SyncSetting, rows []fixture.Row) error {
	if _, err := s.seed(ctx, st); err != nil {
		return err
	}
	s.orgs[orgID].PutRecords(st.SourceObject, rows...)
	return nil
}

// Seed is SeedOrg on the stack's Fixture org (DeploymentOrg), with a tenant new to the stack
// connected to it.
func (s *Stack) Seed(ctx context.Context, st model.SyncSetting, rows []fixture.Row) error {
	added, err := s.seed(ctx, st)
	if err != nil {
		return err
	}
	if added {
		if err := s.Connect(ctx, st.TenantID, DeploymentOrg); err != nil {
			return err
		}
	}
	s.Fixture.PutRecords(st.SourceObject, rows...)
	return nil
}

// seed adds the setting's tenant unless it exists (added: it did not), and the setting.
func (s *Stack) seed(ctx context.Context, st model.SyncSetting) (added bool, err error) {
	a := settings.Admin{FS: s.FS}
	err = a.AddTenant(ctx, model.Tenant{ID: st.TenantID, Name: st.TenantID, Enabled: true})
	if err != nil && !errors.Is(err, settings.ErrExists) {
		return false, fmt.Errorf("stack: seed tenant: %w", err)
	}
	if err := a.AddSetting(ctx, st); err != nil {
		return false, fmt.Errorf("stack: seed setting: %w", err)
	}
	return err == nil, nil
}

// Tick publishes a tick as Cloud Scheduler does (an empty JSON object) and returns its message ID,
// which is the tick's identity.
func (s *Stack) Tick(ctx context.Context) (string, error) {
	ids, err := s.Pub.Publish(ctx, topicTicks, bus.Message{Data: []byte("{}")})
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// Quiesce waits until the local Eventarc has been idle for 3 s in a row, so that a copy injected
// 2 s after its message has surely been delivered.
func (s *Stack) Quiesce(ctx context.Context) error {
	idle := 0
	for idle < 6 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if s.Eventarc.Idle() {
			idle++
		} else {
			idle = 0
		}
	}
	return nil
}

// WaitJob polls Job id every interval until it is COMPLETED, and returns it with the time of the
// commit that completed it. A FAILED Job is an error. each, if not nil, sees every poll of the Job
// once it exists (for progress reports).
func (s *Stack) WaitJob(ctx context.Context, id string, every time.Duration, each func(ctx context.Context, j model.Job)) (model.Job, time.Time, error) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return model.Job{}, time.Time{}, fmt.Errorf("stack: job %s did not complete: %w", id, ctx.Err())
		case <-tick.C:
		}
		snap, err := s.FS.Collection(model.Jobs).Doc(id).Get(ctx)
		if err != nil {
			continue // not created yet
		}
		var j model.Job
		if err := snap.DataTo(&j); err != nil {
			return j, time.Time{}, fmt.Errorf("stack: job %s: %w", id, err)
		}
		j.ID = id
		if each != nil {
			each(ctx, j)
		}
		switch j.Status {
		case model.JobCompleted:
			return j, snap.UpdateTime, nil
		case model.JobFailed:
			return j, time.Time{}, fmt.Errorf("stack: job %s failed: %s", id, j.Failure)
		}
	}
}

// FunctionsRSS returns the functions process's peak resident set size in bytes (VmHWM).
func (s *Stack) FunctionsRSS() (int64, error) {
	if s.funcs == nil || s.funcs.Process == nil {
		return 0, errors.New("stack: functions not running")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.funcs.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("stack: no VmHWM")
}

// FunctionsPID returns the functions process's ID (0 when it is not running).
func (s *Stack) FunctionsPID() int {
	if s.funcs == nil || s.funcs.Process == nil {
		return 0
	}
	return s.funcs.Process.Pid
}

// Stop tears everything down; it is safe to call more than once.
func (s *Stack) Stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.arcDone
		s.cancel = nil
	}
	if s.funcs != nil && s.funcs.Process != nil {
		_ = s.funcs.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.funcsErr:
		case <-time.After(5 * time.Second):
			_ = s.funcs.Process.Kill()
			<-s.funcsErr
		}
		s.funcs = nil
	}
	if s.Pub != nil {
		s.Pub.Close()
		s.Pub = nil
	}
	if s.PS != nil {
		s.PS.Close()
		s.PS = nil
	}
	if s.FS != nil {
		s.FS.Close()
		s.FS = nil
	}
	if s.Emu != nil {
		if s.ownEmu {
			_ = s.Emu.Stop()
		}
		s.Emu = nil
	}
}

func (s *Stack) logf(format string, args ...any) {
	fmt.Fprintf(s.opts.Log, "[%6.1fs] %s\n", time.Since(s.Started).Seconds(), fmt.Sprintf(format, args...))
}

// Logf prints a progress line with the time since the stack started.
func (s *Stack) Logf(format string, args ...any) { s.logf(format, args...) }

func waitHTTP(ctx context.Context, url string, timeout time.Duration, exited <-chan error) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("stack: functions process exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
	}
	return fmt.Errorf("stack: %s not answering after %v", url, timeout)
}
