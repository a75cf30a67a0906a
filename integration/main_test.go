package integration

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind after its
// servers, engines and runtimes stopped.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
