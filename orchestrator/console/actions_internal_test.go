package console

import (
	"slices"
	"testing"

	"github.com/natstx/natstx/messages"
)

// TestAOnePhaseCommitOffersNoAbort: the console offers abort for a
// two-phase transaction still preparing, but not for a one-phase commit,
// which its participant decides (the engine refuses it).
func TestAOnePhaseCommitOffersNoAbort(t *testing.T) {
	two := messages.TxStatus{ID: "t", State: "preparing"}
	if got, _ := actionsOf(two); !slices.Equal(got, []string{actionAbort}) {
		t.Fatalf("a preparing two-phase transaction: actions %v, want [%s]", got, actionAbort)
	}
	one := two
	one.OnePhase = true
	if got, _ := actionsOf(one); len(got) != 0 {
		t.Fatalf("a preparing one-phase commit: actions %v, want none", got)
	}
}
