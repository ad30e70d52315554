package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "modernc.org/sqlite"
)

// outboxState is what the state file says about the run's deliveries.
type outboxState struct {
	byStatus map[string]int // deliveries rows by status
	rows     int            // deliveries rows
	attempts int            // attempts rows
	ok2xx    int            // attempts with a 2xx status code
}

func (s outboxState) String() string {
	var parts []string
	for _, st := range []string{"delivered", "pending", "dead"} {
		if n := s.byStatus[st]; n > 0 || st == "delivered" {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	for st, n := range s.byStatus {
		if st != "delivered" && st != "pending" && st != "dead" {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	return fmt.Sprintf("deliveries: %d rows (%s), attempts: %d rows (%d 2xx)", s.rows, strings.Join(parts, ", "), s.attempts, s.ok2xx)
}

// readOutbox opens the state file read-only and counts the deliveries and
// the attempts logged.
func readOutbox(path string) (outboxState, error) {
	st := outboxState{byStatus: map[string]int{}}
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?mode=ro&_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return st, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := db.QueryContext(ctx, `SELECT status, COUNT(*) FROM deliveries GROUP BY status`)
	if err != nil {
		return st, fmt.Errorf("%s: %w", path, err)
	}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			rows.Close()
			return st, err
		}
		st.byStatus[s] = n
		st.rows += n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, err
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(status_code BETWEEN 200 AND 299), 0) FROM attempts`).Scan(&st.attempts, &st.ok2xx); err != nil {
		return st, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// createdAt reads when each delivery was enqueued (deliveries.created_at,
// Unix ms: the outbox's clock when the enqueue transaction began).
func createdAt(path string) (map[string]int64, error) {
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?mode=ro&_pragma=busy_timeout(10000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.Query(`SELECT id, created_at FROM deliveries`)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var at int64
		if err := rows.Scan(&id, &at); err != nil {
			return nil, err
		}
		out[id] = at
	}
	return out, rows.Err()
}

// saveStats writes the receiver's stats next to a kept run.
func saveStats(path string, st *stats) {
	b, err := json.Marshal(st)
	if err == nil {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchdeliver:", err)
	}
}

// checks collects what a run got wrong.
type checks []string

func (c *checks) expect(ok bool, format string, args ...any) {
	if !ok {
		*c = append(*c, fmt.Sprintf(format, args...))
	}
}

// arrivalChecks compares the receiver's stats with the ids expected.
func arrivalChecks(c *checks, st *stats, ids func(yield func(string) bool)) (missing int) {
	var first string
	for id := range ids {
		if _, ok := st.Arrivals[id]; !ok {
			if missing == 0 {
				first = id
			}
			missing++
		}
	}
	c.expect(missing == 0, "%d ids never arrived (the first: %s)", missing, first)
	c.expect(st.Duplicates == 0, "%d deliveries arrived twice", st.Duplicates)
	c.expect(st.BadSig == 0, "%d signatures did not verify (the first: %s)", st.BadSig, st.FirstBad)
	c.expect(st.Other == 0, "%d requests to paths other than /hook", st.Other)
	return missing
}

// proc is a pipeline process in its own process group (so that a timeout
// can kill it with its plugins), its output in files.
type proc struct {
	cmd              *exec.Cmd
	outPath, errPath string
	stdout, stderr   *os.File

	mu     sync.Mutex
	reaped bool
	done   chan struct{}
	err    error
}

// pipelineCmd prepares `pipeline args...` in dir, its stdout and stderr
// going to dir/name.stdout and dir/name.stderr.
func pipelineCmd(o options, dir, name string, args ...string) (*proc, error) {
	cmd := exec.Command(o.pipeline, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PIPELINE_ALLOW_PRIVATE_NETWORKS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proc{cmd: cmd, outPath: filepath.Join(dir, name+".stdout"), errPath: filepath.Join(dir, name+".stderr"), done: make(chan struct{})}
	var err error
	if p.stdout, err = os.Create(p.outPath); err != nil {
		return nil, err
	}
	if p.stderr, err = os.Create(p.errPath); err != nil {
		p.stdout.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	return p, nil
}

// start starts the process; the cleanups kill it if it is still running.
func (p *proc) start() error {
	if err := p.cmd.Start(); err != nil {
		return err
	}
	go func() {
		err := p.cmd.Wait()
		p.mu.Lock()
		p.reaped, p.err = true, err
		p.mu.Unlock()
		close(p.done)
	}()
	atCleanup(p.kill)
	return nil
}

// kill kills the process group, unless the process was already waited for
// (its group id may then belong to someone else).
func (p *proc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped && p.cmd.Process != nil {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// signal sends sig to the process alone (not its plugins), if it runs.
func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		p.cmd.Process.Signal(sig)
	}
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process; after timeout it kills its process group.
func (p *proc) wait(timeout time.Duration) (timedOut bool, err error) {
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		<-p.done
		timedOut = true
	}
	return timedOut, p.err
}

// output returns what the process printed (call after wait).
func (p *proc) output() (stdout, stderr string) {
	p.stdout.Close()
	p.stderr.Close()
	o, _ := os.ReadFile(p.outPath)
	e, _ := os.ReadFile(p.errPath)
	return string(o), string(e)
}

// maxRSS is ru_maxrss of a waited-for process (on Linux the largest of the
// process and the descendants it waited for), in bytes.
func (p *proc) maxRSS() int64 {
	if p.cmd.ProcessState == nil {
		return 0
	}
	ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	return ru.Maxrss * 1024
}

// tail is the last n lines of s, indented, for error messages.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\t" + strings.Join(lines, "\n\t")
}
