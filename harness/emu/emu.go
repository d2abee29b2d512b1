// Package emu starts the real Google Cloud Firestore and Pub/Sub emulators and gives tests the
// clients, project IDs and clean-up that let many tests share one emulator pair.
//
// # Starting the emulators
//
// [Start] launches the emulator jars of the installed Google Cloud SDK directly with java (not via
// "gcloud beta emulators", which leaves the java child running when it is killed), each on a free
// port of 127.0.0.1, sends their logs to files and waits until GET / answers 200 "Ok". [Run]
// wraps a command with them: it is what "oncesync emulators -- go test ./..." uses.
//
// # Tests
//
// Tests that need the emulators call [Require], which fails the test (it never skips) when
// FIRESTORE_EMULATOR_HOST or PUBSUB_EMULATOR_HOST is unset. Every test isolates its data by project:
// [ProjectID] returns a fresh lower-case project ID, and [Firestore] and [PubSub] return clients
// for it that are closed, and whose data is deleted, in t.Cleanup. Tests must never reset the
// Pub/Sub emulator (POST /reset): other packages' tests share it.
package emu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Environment variables the Google Cloud client libraries read to find the emulators.
const (
	FirestoreEnv = "FIRESTORE_EMULATOR_HOST"
	pubSubEnv    = "PUBSUB_EMULATOR_HOST"
)

const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 10 * time.Second
	startRetries = 3 // a free port can be taken between choosing and binding it
)

// ErrNoSDK is returned by [Start] when the Google Cloud SDK or one of its emulator jars is not found.
var ErrNoSDK = errors.New("emu: Google Cloud SDK emulator not found")

// Options selects the emulators to start.
type Options struct {
	// Firestore and PubSub select the emulators to start; at least one must be true.
	Firestore, PubSub bool
	// LogDir receives firestore.log and pubsub.log. Default: a temporary directory that Stop removes.
	LogDir string
	// FirestoreMaxHeap caps the Firestore emulator's Java heap (-Xmx), e.g. "2g". Default: the JVM's.
	// The emulator grows to ~700 MB after ~60k documents and never shrinks.
	FirestoreMaxHeap string
	// SDKRoot is the Google Cloud SDK directory. Default: found from the gcloud on PATH, then from
	// "gcloud info --format=value(installation.sdk_root)".
	SDKRoot string
}

// Emulators is a running emulator pair. Stop it when done.
type Emulators struct {
	// FirestoreHost and PubSubHost are "127.0.0.1:PORT", empty for an emulator not started.
	FirestoreHost, PubSubHost string
	// LogDir holds firestore.log and pubsub.log.
	LogDir string

	removeLogDir bool
	procs        []*proc
	stopOnce     sync.Once
	stopErr      error
}

// proc is one running emulator JVM.
type proc struct {
	name    string
	host    string
	logPath string
	cmd     *exec.Cmd
	logFile *os.File
	exited  chan struct{} // closed when cmd.Wait returned
	waitErr error         // valid after exited is closed
}

// Start launches the selected emulators and returns once each answers GET / with 200 "Ok". On
// error, whatever was started is stopped again; the error includes the tail of the failing
// emulator's log.
func Start(ctx context.Context, opts Options) (*Emulators, error) {
	if !opts.Firestore && !opts.PubSub {
		return nil, errors.New("emu: no emulator selected")
	}
	sdk, err := sdkRoot(ctx, opts.SDKRoot)
	if err != nil {
		return nil, err
	}
	e := &Emulators{LogDir: opts.LogDir}
	if e.LogDir == "" {
		dir, err := os.MkdirTemp("", "oncesync-emu-")
		if err != nil {
			return nil, fmt.Errorf("emu: log dir: %w", err)
		}
		e.LogDir, e.removeLogDir = dir, true
	} else if err := os.MkdirAll(e.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("emu: log dir: %w", err)
	}

	type spec struct {
		name string
		argv func(port int) []string
		host *string
	}
	var specs []spec
	if opts.Firestore {
		jar := filepath.Join(sdk, "platform", "cloud-firestore-emulator", "cloud-firestore-emulator.jar")
		if _, err := os.Stat(jar); err != nil {
			e.Stop()
			return nil, fmt.Errorf("%w: %v", ErrNoSDK, err)
		}
		heap := opts.FirestoreMaxHeap
		specs = append(specs, spec{"firestore", func(port int) []string {
			argv := []string{"java"}
			if heap != "" {
				argv = append(argv, "-Xmx"+heap)
			}
			return append(argv, "-cp", jar, "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
				"start", "--host=127.0.0.1", fmt.Sprintf("--port=%d", port))
		}, &e.FirestoreHost})
	}
	if opts.PubSub {
		jars, _ := filepath.Glob(filepath.Join(sdk, "platform", "pubsub-emulator", "lib", "cloud-pubsub-emulator-*-all.jar"))
		if len(jars) == 0 {
			e.Stop()
			return nil, fmt.Errorf("%w: no cloud-pubsub-emulator-*-all.jar under %s", ErrNoSDK, sdk)
		}
		jar := jars[len(jars)-1] // Glob sorts; the last is the newest version
		specs = append(specs, spec{"pubsub", func(port int) []string {
			return []string{"java", "-jar", jar, "--host=127.0.0.1", fmt.Sprintf("--port=%d", port)}
		}, &e.PubSubHost})
	}

	// Launch all, then wait for all: the JVMs start in parallel.
	type started struct {
		p   *proc
		err error
	}
	results := make([]chan started, len(specs))
	for i, s := range specs {
		results[i] = make(chan started, 1)
		go func() {
			p, err := launchReady(ctx, s.name, s.argv, filepath.Join(e.LogDir, s.name+".log"))
			results[i] <- started{p, err}
		}()
	}
	var errs []error
	for i, s := range specs {
		r := <-results[i]
		if r.p != nil {
			e.procs = append(e.procs, r.p)
			*s.host = r.p.host
		}
		errs = append(errs, r.err)
	}
	if err := errors.Join(errs...); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// launchReady starts one emulator on a free port and waits until it is ready, retrying with
// another port when the chosen one was taken in the meantime.
func launchReady(ctx context.Context, name string, argv func(port int) []string, logPath string) (*proc, error) {
	var lastErr error
	for range startRetries {
		port, err := FreePort()
		if err != nil {
			return nil, fmt.Errorf("emu: %s: free port: %w", name, err)
		}
		p, err := launch(name, argv(port), logPath, fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return nil, err
		}
		err = p.waitReady(ctx, readyTimeout)
		if err == nil {
			return p, nil
		}
		exited := p.hasExited()
		_ = p.stop()
		lastErr = err
		if !exited || !strings.Contains(tail(logPath, 8192), "Address already in use") {
			break
		}
	}
	return nil, lastErr
}

func launch(name string, argv []string, logPath, host string) (*proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("emu: %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a terminal's Ctrl-C reaches us, and we stop the JVMs in order.
		Setpgid: true,
		// Do not outlive us if we are killed without the chance to stop them.
		Pdeathsig: syscall.SIGKILL,
	}
	waited, err := startLocked(cmd)
	if err != nil {
		logFile.Close()
		return nil, fmt.Errorf("emu: %s: start %s: %w", name, argv[0], err)
	}
	p := &proc{name: name, host: host, logPath: logPath, cmd: cmd, logFile: logFile, exited: make(chan struct{})}
	go func() {
		p.waitErr = <-waited
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// startLocked starts cmd from an OS thread that stays alive until cmd has exited, and returns the
// result of cmd.Wait on a channel. Pdeathsig fires when the thread that forked the child exits, not
// the process, and Go may retire threads; holding the thread keeps Pdeathsig meaning "when we die".
func startLocked(cmd *exec.Cmd) (<-chan error, error) {
	started := make(chan error, 1)
	waited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return waited, nil
}

func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// waitReady polls GET / until it answers 200 "Ok", the process exits, ctx ends or timeout passes.
func (p *proc) waitReady(parent context.Context, timeout time.Duration) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	url := "http://" + p.host + "/"
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok(ctx, client, url) {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("emu: %s exited before it was ready (%v); log %s ends:\n%s", p.name, p.waitErr, p.logPath, tail(p.logPath, 2048))
		case <-ctx.Done():
			why := fmt.Sprintf("not ready after %v", timeout)
			if parent.Err() != nil {
				why = fmt.Sprintf("not ready after %v: the caller's context ended first", time.Since(start).Round(time.Millisecond))
			}
			return fmt.Errorf("emu: %s at %s %s: %w; log %s ends:\n%s", p.name, p.host, why, ctx.Err(), p.logPath, tail(p.logPath, 2048))
		case <-tick.C:
		}
	}
}

func ok(ctx context.Context, c *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	return resp.StatusCode == http.StatusOK && bytes.Equal(bytes.TrimSpace(body), []byte("Ok"))
}

// stop sends SIGTERM, waits up to stopTimeout and then sends SIGKILL.
func (p *proc) stop() error {
	if p.hasExited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("emu: stop %s (pid %d): %w", p.name, p.cmd.Process.Pid, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopTimeout):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("emu: kill %s (pid %d): %w", p.name, p.cmd.Process.Pid, err)
	}
	<-p.exited
	return nil
}

// Stop stops every emulator this Emulators started: SIGTERM to each java process, SIGKILL to those
// still running 10 s later. It removes the log directory if Start created it. Stop is idempotent
// and safe for concurrent use; later calls return the first call's result.
func (e *Emulators) Stop() error {
	if e == nil {
		return nil
	}
	e.stopOnce.Do(func() {
		errs := make([]error, len(e.procs))
		var wg sync.WaitGroup
		for i, p := range e.procs {
			wg.Go(func() { errs[i] = p.stop() })
		}
		wg.Wait()
		if e.removeLogDir {
			errs = append(errs, os.RemoveAll(e.LogDir))
		}
		e.stopErr = errors.Join(errs...)
	})
	return e.stopErr
}

// Env returns the environment variables that point the client libraries at the emulators, as
// "KEY=VALUE" for each emulator started.
func (e *Emulators) Env() []string {
	var env []string
	if e.FirestoreHost != "" {
		env = append(env, FirestoreEnv+"="+e.FirestoreHost)
	}
	if e.PubSubHost != "" {
		env = append(env, pubSubEnv+"="+e.PubSubHost)
	}
	return env
}

// tail returns up to the last n bytes of the file at path.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// sdkRoot finds the Google Cloud SDK: explicit, then next to the gcloud on PATH, then by asking gcloud.
func sdkRoot(ctx context.Context, explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	gcloud, err := exec.LookPath("gcloud")
	if err != nil {
		return "", fmt.Errorf("%w: gcloud is not on PATH (set Options.SDKRoot)", ErrNoSDK)
	}
	if real, err := filepath.EvalSymlinks(gcloud); err == nil {
		root := filepath.Dir(filepath.Dir(real)) // <sdk>/bin/gcloud
		if fi, err := os.Stat(filepath.Join(root, "platform")); err == nil && fi.IsDir() {
			return root, nil
		}
	}
	out, err := exec.CommandContext(ctx, gcloud, "info", "--format=value(installation.sdk_root)").Output()
	if err != nil {
		return "", fmt.Errorf("%w: gcloud info: %v", ErrNoSDK, err)
	}
	root := strings.TrimSpace(string(out))
	if root == "" {
		return "", fmt.Errorf("%w: gcloud info printed no sdk_root", ErrNoSDK)
	}
	return root, nil
}
