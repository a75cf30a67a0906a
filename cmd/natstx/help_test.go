package main

import (
	"strings"
	"testing"
	"time"
)

func TestEveryCommandHasHelpWithExamples(t *testing.T) {
	for _, args := range [][]string{
		{"server"}, {"nats"}, {"tx"}, {"tx", "begin"}, {"tx", "status"}, {"tx", "list"}, {"tx", "watch"},
		{"tx", "abort"}, {"publish"}, {"bench"}, {"audit"}, {"version"},
		{"participant", "inventory"}, {"participant", "payment"}, {"participant", "shipping"}, {"participant", "sim"},
	} {
		stdout, stderr, code := run(t, 30*time.Second, append(args, "--help")...)
		if code != 0 || !strings.Contains(stdout, "Examples:") || !strings.Contains(stdout, "natstx "+strings.Join(args, " ")) {
			t.Errorf("natstx %s --help: exit %d, stderr %q, stdout:\n%s", strings.Join(args, " "), code, stderr, stdout)
		}
	}
	stdout, _, code := run(t, 30*time.Second, "--help")
	if code != 0 || !strings.Contains(stdout, "Exit codes:") {
		t.Errorf("natstx --help: exit %d:\n%s", code, stdout)
	}
}

func TestShellCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_natstx", "zsh": "#compdef natstx", "fish": "complete -c natstx", "powershell": "Register-ArgumentCompleter"} {
		stdout, stderr, code := run(t, 30*time.Second, "completion", shell)
		if code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("completion %s: exit %d, stderr %q, no %q in output", shell, code, stderr, want)
		}
	}
	// Dynamic completion of flag values.
	stdout, _, code := run(t, 30*time.Second, "__complete", "tx", "list", "--state", "")
	if code != 0 || !strings.Contains(stdout, "committing") {
		t.Errorf("completing --state: exit %d:\n%s", code, stdout)
	}
}
