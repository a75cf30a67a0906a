package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/cobra"

	"github.com/natstx/natstx/messages"
)

// versionInfo is what `natstx version` reports; --json prints it as one
// object.
type versionInfo struct {
	// Module is natstx's module path and Version its version: a release tag,
	// a pseudo-version of the commit, or "(devel)" for a build outside
	// module mode.
	Module  string `json:"module"`
	Version string `json:"version"`
	// Commit, CommitTime and Modified come from the build's VCS stamp;
	// empty when built without one (go run, -buildvcs=false).
	Commit     string `json:"commit,omitempty"`
	CommitTime string `json:"commit_time,omitempty"`
	Modified   bool   `json:"modified,omitempty"`
	Go         string `json:"go"`
	Platform   string `json:"platform"`
	// NATSServer is the version of the embedded nats-server.
	NATSServer string `json:"nats_server"`
	// Protocol is the wire protocol version (messages.Version).
	Protocol int `json:"protocol"`
}

// buildVersion reads the version of this binary from its build info.
func buildVersion() versionInfo {
	v := versionInfo{Module: "github.com/natstx/natstx", Version: "(devel)", Go: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, NATSServer: "v" + server.VERSION, Protocol: messages.Version}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Path != "" {
		v.Module = bi.Main.Path
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/nats-io/nats-server/v2" {
			v.NATSServer = d.Version
			if d.Replace != nil {
				v.NATSServer = d.Replace.Version
			}
		}
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func newVersion() *cobra.Command {
	var jsonOut bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print natstx's version, commit, Go version, embedded NATS server and protocol versions",
		Long: `version prints the version of this natstx binary (its module version, or
"(devel)"), the commit it was built from (when the build recorded one; a
binary built from a work tree with uncommitted changes says "modified"), the
Go version that built it, the version of the NATS server it embeds, and the
protocol version it speaks on the wire (coordinators and participants of
different protocol versions refuse each other's messages).`,
		Example: `  natstx version
  natstx version --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := buildVersion()
			out := cmd.OutOrStdout()
			if jsonOut {
				return json.NewEncoder(out).Encode(v)
			}
			fmt.Fprintf(out, "natstx %s\n", v.Version)
			commit := "unknown (built without VCS information)"
			if v.Commit != "" {
				commit = v.Commit
				if v.CommitTime != "" {
					commit += " (" + v.CommitTime + ")"
				}
				if v.Modified {
					commit += ", modified"
				}
			}
			fmt.Fprintf(out, "  commit       %s\n", commit)
			fmt.Fprintf(out, "  go           %s %s\n", v.Go, v.Platform)
			fmt.Fprintf(out, "  nats-server  %s (embedded)\n", v.NATSServer)
			fmt.Fprintf(out, "  protocol     %d\n", v.Protocol)
			return nil
		},
	}
	c.Flags().BoolVar(&jsonOut, "json", false, "print one JSON object")
	return c
}
