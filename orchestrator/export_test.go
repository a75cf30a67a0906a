package orchestrator

import (
	"context"

	"github.com/natstx/natstx/messages"
)

// Resolve exposes resolve to the tests: how this engine answers a
// participant in doubt, whichever instance the queue group would pick.
func (e *Engine) Resolve(ctx context.Context, req messages.OutcomeRequest) messages.OutcomeResponse {
	return e.resolve(ctx, req)
}
