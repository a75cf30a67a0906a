// Command natstx is natstx's one CLI: the coordinator server, the embedded
// NATS server, the transaction commands, the publisher, the benchmark and
// the demo. docs/CLI.md documents every command.
//
// Exit codes: 0 success; 1 a failed check (an atomicity violation, an
// aborted transaction), an unknown transaction or a runtime error (NATS
// unreachable); 2 bad usage (unknown flag, bad value, bad file).
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// usageError marks errors caused by how the command was called.
type usageError struct{ error }

func main() {
	root := newRoot()
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, errorLine(err))
		if isUsageError(err) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// errorLine is the one line an error is reported with: "natstx: " and the
// error, whose own "natstx: " prefixes (the library's errors carry one, also
// when wrapped) are not repeated.
func errorLine(err error) string {
	msg := err.Error()
	for strings.HasPrefix(msg, "natstx: ") {
		msg = strings.TrimPrefix(msg, "natstx: ")
	}
	msg = strings.ReplaceAll(msg, ": natstx: ", ": ")
	// cobra's own "unknown command" error ends with a block of suggestions.
	if head, sugg, ok := strings.Cut(msg, "\n\nDid you mean this?\n"); ok {
		msg = head + "; did you mean " + strings.Join(strings.Fields(sugg), " or ") + "?"
	}
	return "natstx: " + strings.TrimSpace(msg)
}

// groupCommand makes c a command that only groups subcommands: run alone it
// is a usage error naming them, and a mistyped subcommand is reported as an
// unknown command with suggestions ("tx beginn -p x": did you mean begin?)
// rather than as an unknown flag of the group.
func groupCommand(c *cobra.Command) {
	c.FParseErrWhitelist.UnknownFlags = true
	c.SuggestionsMinimumDistance = 2
	c.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return usageError{fmt.Errorf("%s (see '%s --help')", msg, cmd.CommandPath())}
	}
	c.RunE = func(cmd *cobra.Command, _ []string) error {
		names := []string{}
		for _, sc := range cmd.Commands() {
			if sc.IsAvailableCommand() {
				names = append(names, sc.Name())
			}
		}
		return usageError{fmt.Errorf("%s needs a subcommand: %s (see '%s --help')", cmd.Name(), strings.Join(names, ", "), cmd.CommandPath())}
	}
}

// isUsageError reports whether err comes from how natstx was called: our own
// usage errors, and cobra's for unknown commands and wrong argument counts.
func isUsageError(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"unknown command ", "accepts ", "requires ", "invalid argument ", "required flag"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func newRoot() *cobra.Command {
	var conn connOptions
	root := &cobra.Command{
		Use:   "natstx",
		Short: "Two-phase commit across services, over NATS JetStream",
		Long: `natstx coordinates one transaction across independent services, so that either
all of them apply their part or none does. It runs over NATS JetStream; an
embedded NATS server is the default, so nothing needs installing.

Settings: every flag can also come from an environment variable NATSTX_<FLAG>
(upper case, '-' as '_': NATSTX_NATS, NATSTX_DATA_DIR) or from the YAML file
named by --config or NATSTX_CONFIG, whose keys are the flag names. A flag on
the command line wins over the environment, which wins over the file.

Exit codes:
  0  success
  1  failure: an atomicity violation, an aborted transaction, an unknown
     transaction, NATS or a coordinator unreachable, no reply in time
  2  bad usage: unknown command or flag, bad value, bad file`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfig(cmd); err != nil {
				return err
			}
			if err := conn.validate(); err != nil {
				return err
			}
			setConnOptions(conn)
			return nil
		},
	}
	root.PersistentFlags().String("config", "", "YAML file of settings, keys named as the flags (default $"+envConfig+")")
	addConnFlags(root.PersistentFlags(), &conn)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(newDemo())
	root.AddCommand(newServer(), newNATS(), newTx(), newPublish(), newBench())
	root.AddCommand(newParticipant(), newAudit(), newVersion(), newAuth())
	root.AddCommand(newConformance())
	root.SuggestionsMinimumDistance = 2
	return root
}
