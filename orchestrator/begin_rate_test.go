package orchestrator_test

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/auth/authtest"
)

// TestBeginRateIsPerOperatorIdentity: on the accounts of natstx auth, the
// coordinator limits begins per operator user, as the NATS server names it:
// once one operator has spent its burst and is refused (the error naming
// it), a second operator still begins, and a second begin of its own is
// refused in turn. The rate (one per 10 s, burst 1) leaves no time for a
// refill between the begins.
func TestBeginRateIsPerOperatorIdentity(t *testing.T) {
	d := authtest.Start(t)
	eng, err := orchestrator.New(d.Connect(t, messages.RoleCoordinator, ""), orchestrator.Config{
		MaxBeginRate: 0.1, Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Stop)
	operator := func() *orchestrator.Client {
		c, err := orchestrator.NewClient(d.Connect(t, messages.RoleOperator, ""))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := operator(), operator()
	begin := func(c *orchestrator.Client) error {
		_, err := c.Begin(ctxT(t, 10*time.Second), messages.BeginRequest{Participants: specs("inventory")})
		return err
	}
	refused := func(err error) bool {
		return err != nil && strings.Contains(err.Error(), "begin rate limit reached") && strings.Contains(err.Error(), `user "operator" (U`)
	}
	if err := begin(a); err != nil {
		t.Fatalf("operator A's first begin: %v", err)
	}
	if err := begin(a); !refused(err) {
		t.Fatalf("operator A's second begin: %v, want refused naming the operator user", err)
	}
	if err := begin(b); err != nil {
		t.Fatalf("operator B's first begin, after A was refused: %v; the limit must be per identity", err)
	}
	if err := begin(b); !refused(err) {
		t.Fatalf("operator B's second begin: %v, want refused", err)
	}
	if got := eng.Stats().Rejected; got != 2 {
		t.Fatalf("Stats.Rejected %d, want 2", got)
	}
}
