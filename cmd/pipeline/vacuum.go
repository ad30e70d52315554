package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipelinehq/pipeline/engine/state"
)

// newVacuumCmd is `pipeline state vacuum`: prune every outbox with its
// sink's retention, then give the freed space back to the file system.
func newVacuumCmd(g *globals, pipelineName func(string) (string, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "vacuum [FILE...]",
		Short: "Drop what is past each action sink's retention (of the pipelines in FILE..., or of all) and shrink the state file",
		Long: `Drops what is past each action sink's retention { } (the defaults when its
sink never ran with one: delivered payloads 7d, the attempt log 30d, dead
deliveries 30d), in every outbox or in those of the pipelines in FILE...,
then rebuilds the state file (SQLite VACUUM) so that it shrinks. Pending
deliveries are never touched. run and serve prune in the background too;
only vacuum shrinks the file. It refuses at once (exit 75), without
waiting, while a run or serve of any pipeline is using the state file.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var names []string
			for _, f := range args {
				name, err := pipelineName(f)
				if err != nil {
					return err
				}
				names = append(names, name)
			}
			store, err := state.Open(g.statePath)
			if err != nil {
				return err
			}
			defer store.Close()
			res, err := store.Vacuum(cmd.Context(), time.Now(), names...)
			var le *state.LockedError
			switch {
			case errors.As(err, &le):
				return &exitError{code: exitLocked, err: fmt.Errorf("vacuum: %w", err)}
			case errors.Is(err, state.ErrBusy):
				return &exitError{code: exitLocked, err: fmt.Errorf("vacuum %s: %w", g.statePath, err)}
			case err != nil:
				return err
			}
			fmt.Printf("removed %s delivered payloads, %s attempts, %s dead deliveries; state file %s → %s\n",
				thousands(res.Payloads), thousands(res.Attempts), thousands(res.Dead), megabytes(res.BytesBefore), megabytes(res.BytesAfter))
			return nil
		},
	}
}

// thousands writes n as 1,204.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// megabytes writes a file size as 140.2 MB.
func megabytes(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
