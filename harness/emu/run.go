package emu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

// Run starts the emulators selected by opts, runs argv with the emulator variables added to this
// process's environment (stdin, stdout and stderr passed through), stops the emulators and returns
// the command's exit code. A command killed by a signal reports 128+signal, as a shell does.
//
// When ctx ends or this process receives SIGINT, SIGTERM or SIGHUP, the command is sent SIGTERM,
// and SIGKILL 10 s later if it is still running; the emulators are stopped in every case.
// err is non-nil only when the emulators or the command could not be started or stopped; the
// exit code is then 125 (emulators) or 127 (command), unless the command ran.
func Run(ctx context.Context, opts Options, argv []string) (exitCode int, err error) {
	if len(argv) == 0 {
		return 2, errors.New("emu: run: no command")
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	e, err := Start(ctx, opts)
	if err != nil {
		return 125, err
	}
	defer func() {
		if serr := e.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()

	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), e.Env()...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopTimeout
	// If we are killed outright, take the command with us: its emulators are gone too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	waited, err := startLocked(cmd)
	if err != nil {
		return 127, fmt.Errorf("emu: run %s: %w", argv[0], err)
	}
	werr := <-waited
	state := cmd.ProcessState
	if state == nil {
		return 127, fmt.Errorf("emu: run %s: %w", argv[0], werr)
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return state.ExitCode(), nil
}
