package host

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"

	"github.com/hashicorp/go-plugin/runner"
)

// procRunner starts a plugin process the way go-plugin's own runner does,
// and also keeps the process's exit status, which go-plugin only logs.
type procRunner struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr io.ReadCloser

	mu      sync.Mutex
	waitErr error
	exited  bool
	done    chan struct{}
}

var _ runner.Runner = (*procRunner)(nil)

func newProcRunner(argv []string, env []string) (*procRunner, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C at the terminal reaches the
		// engine, which drains and stops the plugins in order.
		Setpgid: true,
		// The plugin dies with the engine, even when the engine is killed.
		Pdeathsig: syscall.SIGKILL,
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	return &procRunner{cmd: cmd, stdout: stdout, stderr: stderr, done: make(chan struct{})}, nil
}

func (r *procRunner) Start(context.Context) error { return r.cmd.Start() }

func (r *procRunner) Diagnose(context.Context) string { return "" }

func (r *procRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *procRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *procRunner) Name() string          { return r.cmd.Path }

func (r *procRunner) Wait(context.Context) error {
	err := r.cmd.Wait()
	r.mu.Lock()
	r.waitErr, r.exited = err, true
	r.mu.Unlock()
	close(r.done)
	return err
}

func (r *procRunner) Kill(context.Context) error {
	if r.cmd.Process == nil {
		return nil
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

func (r *procRunner) ID() string {
	if r.cmd.Process == nil {
		return ""
	}
	return strconv.Itoa(r.cmd.Process.Pid)
}

func (r *procRunner) PluginToHost(n, a string) (string, string, error) { return n, a, nil }
func (r *procRunner) HostToPlugin(n, a string) (string, string, error) { return n, a, nil }

// exitStatus describes how the process ended, or "" while it runs.
func (r *procRunner) exitStatus() (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.exited {
		return "", false
	}
	if r.waitErr == nil {
		return "exit status 0", true
	}
	var ee *exec.ExitError
	if errors.As(r.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String(), true
		}
		return "exit status " + strconv.Itoa(ee.ExitCode()), true
	}
	return r.waitErr.Error(), true
}
