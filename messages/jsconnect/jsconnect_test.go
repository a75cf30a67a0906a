package jsconnect_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natstx/natstx/messages/jsconnect"
	"github.com/natstx/natstx/orchestrator/embedded"
)

// TestAnIdentityThatMayNotAskUsesItsAccountsOwnAPI: in one account with
// JetStream, a user refused the account-information request (users
// configured before natstx's accounts) gets its account's own JetStream API,
// as the JavaScript SDK decides, within the probe's own bound rather than at
// the end of the caller's context; a user that may ask gets it too.
func TestAnIdentityThatMayNotAskUsesItsAccountsOwnAPI(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte(`authorization {
  users = [
    { user: admin, password: admin-pw }
    { user: part, password: part-pw, permissions: { publish: { allow: [">"], deny: ["$JS.API.INFO"] }, subscribe: { allow: [">"] } } }
  ]
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := embedded.Start(embedded.Config{ConfigFile: conf})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	for _, c := range []struct{ user, pass string }{{"part", "part-pw"}, {"admin", "admin-pw"}} {
		nc, err := nats.Connect(srv.URL(), nats.UserInfo(c.user, c.pass), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
		if err != nil {
			t.Fatal(err)
		}
		// A caller's context that allows far longer than the probe: the
		// refusal is told without using it up, in time to use the API.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		imported, err := jsconnect.Imported(ctx, nc)
		if err != nil || imported || ctx.Err() != nil {
			t.Errorf("%s: imported %v, %v (the caller's context: %v); want its own API, the context left", c.user, imported, err, ctx.Err())
		}
		cancel()
		nc.Close()
	}
}
