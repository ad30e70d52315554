package state

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A pipeline runs at most once at a time on one state store: two runs would
// both read from the same checkpoint and deliver everything twice. The run
// lock is an OS file lock (flock on Unix, LockFileEx on Windows) on a file
// beside the state file, one per pipeline, so different pipelines sharing a
// store still run side by side, and the lock goes away with its process,
// however that process ends (a SIGKILLed run blocks nothing).
//
// The lock file holds its holder (pid, host, since, command) for the message
// the next run prints. It is emptied on release but never removed: removing
// it would let two processes lock two different files of the same name (one
// that opened the old file before it was removed, one that created the new).

// Holder is the process that holds a pipeline's run lock.
type Holder struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Since   time.Time `json:"since"`
	Command string    `json:"command"`
}

// LockedError is returned by LockPipeline when another process (or another
// Lock in this one) holds the pipeline's run lock.
type LockedError struct {
	Pipeline string
	State    string // the state file, as given to LockPipeline
	File     string // the lock file
	// Holder is who holds the lock; nil when its lock file says nothing
	// (the holder had not written it yet).
	Holder *Holder
}

func (e *LockedError) Error() string {
	who := "lock file " + e.File
	if h := e.Holder; h != nil {
		since := h.Since.UTC()
		at := since.Format("15:04:05 UTC")
		if since.Format(time.DateOnly) != time.Now().UTC().Format(time.DateOnly) {
			at = since.Format("2006-01-02 15:04:05 UTC")
		}
		who = fmt.Sprintf("pid %d on host %s since %s, command %q", h.PID, h.Host, at, h.Command)
	}
	return fmt.Sprintf("pipeline %q is already running on state %s (%s); wait for it to finish or stop it", e.Pipeline, e.State, who)
}

// Lock is a held run lock; Close releases it.
type Lock struct {
	path string
	once sync.Once
	f    *os.File
}

// LockPath is the lock file of a pipeline in the state store at statePath:
// <statePath>.locks/<pipeline>.lock.
func LockPath(statePath, pipeline string) string {
	return filepath.Join(statePath+".locks", url.PathEscape(pipeline)+".lock")
}

// LockPipeline takes the run lock of pipeline in the state store at
// statePath, without waiting: when it is held, it returns a *LockedError
// naming the holder. The lock lasts until Close or the end of the process.
func LockPipeline(statePath, pipeline string) (*Lock, error) {
	path := LockPath(statePath, pipeline)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock pipeline %s: %w", pipeline, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock pipeline %s: %w", pipeline, err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock pipeline %s: %s: %w", pipeline, path, err)
	}
	if !held {
		f.Close()
		return nil, &LockedError{Pipeline: pipeline, State: statePath, File: path, Holder: readHolder(path)}
	}
	me := Holder{PID: os.Getpid(), Since: time.Now().UTC().Truncate(time.Second), Command: command()}
	me.Host, _ = os.Hostname()
	content, _ := json.Marshal(me)
	err = f.Truncate(0)
	if err == nil {
		_, err = f.WriteAt(append(content, '\n'), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock pipeline %s: write %s: %w", pipeline, path, err)
	}
	return &Lock{path: path, f: f}, nil
}

// Path is the lock file.
func (l *Lock) Path() string { return l.path }

// Close empties the lock file and releases the lock. It may be called more
// than once.
func (l *Lock) Close() error {
	var err error
	l.once.Do(func() {
		l.f.Truncate(0)
		err = l.f.Close() // closing the descriptor releases the OS lock
	})
	return err
}

// readHolder reads a held lock file. Its holder writes it right after
// taking the lock, so an empty file is read again for a moment.
func readHolder(path string) *Holder {
	deadline := time.Now().Add(500 * time.Millisecond)
	for {
		data, err := os.ReadFile(path)
		var h Holder
		if err == nil && json.Unmarshal(data, &h) == nil && h.PID != 0 {
			return &h
		}
		if err != nil || time.Now().After(deadline) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// command is this process's command line, as a user would type it.
func command() string {
	args := make([]string, 0, len(os.Args))
	for i, a := range os.Args {
		if i == 0 {
			a = filepath.Base(a)
		}
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\") {
			a = strconv.Quote(a)
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}
