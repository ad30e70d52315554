// Command pipeline runs pipeline files: sources, filters and sinks, each
// plugin in its own process.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/pipelinehq/pipeline/engine/cluster"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// Exit codes besides 0 (success) and 1 (failure); 130 and 143 are the
// interrupted runs' (SIGINT, SIGTERM).
const (
	// exitDead: the run completed, but some of its deliveries went dead.
	exitDead = 2
	// exitLocked: the pipeline is already running on this state store
	// (EX_TEMPFAIL of sysexits.h: try again later).
	exitLocked = 75
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func main() {
	// PIPELINE_CPUPROFILE=file writes a CPU profile of this process (the
	// engine, or a plugin: each writes its own file, suffixed by its pid).
	if path := os.Getenv("PIPELINE_CPUPROFILE"); path != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid())); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	// PIPELINE_TRACE=file writes an execution trace of this process, in the
	// same way (read it with go tool trace): where each process waits.
	if path := os.Getenv("PIPELINE_TRACE"); path != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid())); err == nil {
			trace.Start(f)
			defer trace.Stop()
		}
	}
	root := newRoot()
	err := root.Execute()
	if err != nil {
		pprof.StopCPUProfile()
		trace.Stop()
	}
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "Error:", ee.err)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "Error:", err)
	os.Exit(1)
}

type globals struct {
	statePath string
	verbose   bool
	// cluster and coordinator are set by serve --cluster: runs share their
	// sources' partitions and sinks' outboxes through them.
	cluster       *cluster.Cluster
	coordinator   *cluster.Coordinator
	outboxAckWait time.Duration
	// pushAccepted counts the records this worker's push sources stored
	// in the cluster's inboxes.
	pushAccepted *prometheus.CounterVec
}

func newRoot() *cobra.Command {
	g := &globals{pushAccepted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pipeline_push_records_accepted_total",
		Help: "Records this worker's push source stored in the cluster's inbox (since this process started; the cluster's are the sum over its workers)."},
		[]string{"pipeline", "source"})}
	root := &cobra.Command{
		Use:   "pipeline",
		Short: "Run data pipelines: sources, expr filters and sinks, each plugin out of process",
		Long: `pipeline runs HCL pipeline files: sources read records, filters keep the ones
that match an expression, sinks deliver them (signed webhooks, files, ...).
Progress is checkpointed, so a re-run only processes what is new.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.statePath, "state", ".pipeline/state.db", "the state database (checkpoints)")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "show the plugins' informational log lines")
	root.AddCommand(
		newRunCmd(g),
		newValidateCmd(g),
		newTestCmd(g),
		newPluginsCmd(g),
		newPluginCmd(),
		newReceiveCmd(),
		newStateCmd(g),
		newDeliveriesCmd(g),
		newReplayCmd(g),
		newPauseCmd(g), newResumeCmd(g),
		newServeCmd(g),
	)
	return root
}
