package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

// errAuditViolations makes `natstx audit` exit 1 after printing its report.
var errAuditViolations = errors.New("audit found violations")

func newAudit() *cobra.Command {
	var o txClient
	var window time.Duration
	c := &cobra.Command{
		Use:   "audit",
		Short: "Cross-check the coordinator's records with every participant's own",
		Long: `audit lists the transactions that started within --window (from the status
bucket), asks every participant for its local state of each of them (on
natstx.audit.<participant>), and cross-checks: a committed transaction must be
committed at every participant; an aborted one committed or prepared at none.
Transactions not finished yet, or whose participants do not answer, count as
in doubt. It prints the counts, and exits 1 on any violation.`,
		Example: `  natstx audit
  natstx audit --window 1h --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if window < 0 {
				return usageError{errors.New("--window must not be negative")}
			}
			cl, done, err := o.open("natstx-audit")
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*o.timeout)
			defer cancel()
			rep, err := cl.Audit(ctx, window, o.timeout)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.jsonOut {
				if err := json.NewEncoder(out).Encode(rep); err != nil {
					return err
				}
			} else {
				for _, p := range rep.Problems {
					fmt.Fprintln(out, "problem:", p)
				}
				fmt.Fprintf(out, "audit: %d transactions, %d committed, %d aborted, %d in doubt, %d violations\n",
					rep.Transactions, rep.Committed, rep.Aborted, rep.InDoubt, rep.Violations)
			}
			if rep.Violations > 0 {
				return errAuditViolations
			}
			return nil
		},
	}
	o.flags(c, 5*time.Second, "how long each participant may take to answer")
	c.Flags().DurationVar(&window, "window", 0, "only transactions started within this long ago (0: every one the status bucket holds)")
	return c
}
