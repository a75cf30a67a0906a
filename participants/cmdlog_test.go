package participants

import (
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/natstx/natstx/messages"
)

// TestCommandLogIsMadeOnlyForALineWritten: a line below the logger's level
// makes no per-command logger; a line written carries the command's fields
// (the step for a saga command) and the caller that logged it.
func TestCommandLogIsMadeOnlyForALineWritten(t *testing.T) {
	core, seen := observer.New(zapcore.InfoLevel)
	base := zap.New(core, zap.AddCaller())
	cmd := messages.Command{TxID: "tx1", Op: messages.OpPrepare, Attempt: 3}
	log := &cmdLog{base: base, cmd: &cmd}
	log.Debug("not written")
	if log.l != nil || seen.Len() != 0 {
		t.Fatalf("a debug line at info level made a logger (%v) or a line (%d)", log.l != nil, seen.Len())
	}
	log.Warn("written", zap.String("reason", "r"))
	lines := seen.TakeAll()
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1", len(lines))
	}
	got := lines[0].ContextMap()
	for k, want := range map[string]any{"txid": "tx1", "op": "prepare", "attempt": int64(3), "reason": "r"} {
		if got[k] != want {
			t.Fatalf("field %s = %v, want %v (all: %v)", k, got[k], want, got)
		}
	}
	if _, ok := got["step"]; ok {
		t.Fatalf("a two-phase command's line has a step: %v", got)
	}
	if !strings.HasSuffix(lines[0].Caller.File, "cmdlog_test.go") {
		t.Fatalf("caller %s, want this test", lines[0].Caller.File)
	}

	saga := messages.Command{TxID: "s1", Op: messages.OpAction, Step: "pay", Attempt: 1}
	(&cmdLog{base: base, cmd: &saga}).Error("failed")
	if got := seen.TakeAll()[0].ContextMap(); got["step"] != "pay" || got["op"] != "action" {
		t.Fatalf("a saga command's line: %v", got)
	}
}
