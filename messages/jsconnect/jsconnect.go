// Package jsconnect opens natstx's JetStream API from a NATS connection in
// any account: directly where the account holds natstx's streams (the
// embedded default, or the coordinators' account), and under
// messages.JetStreamAPIPrefix where the account imports them (the
// participants' and operators' accounts of `natstx auth init`,
// messages.AccountImports).
//
// It tells which by asking for the account's JetStream information once:
// in an account without JetStream the server answers that request itself,
// with "JetStream not enabled for account".
package jsconnect

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
)

// New returns the JetStream API of nc for natstx: jetstream.New(nc, opts...)
// if nc's account has JetStream, else the API under
// messages.JetStreamAPIPrefix. ctx bounds the one request that tells.
func New(ctx context.Context, nc *nats.Conn, opts ...jetstream.JetStreamOpt) (jetstream.JetStream, error) {
	imported, err := Imported(ctx, nc)
	if err != nil {
		return nil, err
	}
	if imported {
		return jetstream.NewWithAPIPrefix(nc, messages.JetStreamAPIPrefix, opts...)
	}
	return jetstream.New(nc, opts...)
}

// probeTimeout bounds each account-information request of Imported, so
// that a refused one (a permissions violation, which nothing answers) is
// told apart in seconds even when ctx allows much longer; an unanswered one
// is asked again while ctx allows.
const probeTimeout = 2 * time.Second

// Imported reports whether nc's account reaches natstx's JetStream API
// through imports (it has no JetStream of its own).
func Imported(ctx context.Context, nc *nats.Conn) (bool, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return false, err
	}
	// Probes of probeTimeout each until one is answered or refused, or
	// ctx ends; without a deadline, one probe with nats.go's own timeout.
	deadline, bounded := ctx.Deadline()
	for {
		probe, cancel := ctx, context.CancelFunc(func() {})
		if bounded {
			probe, cancel = context.WithTimeout(ctx, probeTimeout)
		}
		_, err = js.AccountInfo(probe)
		cancel()
		unanswered := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if !unanswered || infoRefused(nc) || !bounded || !time.Now().Before(deadline) {
			break
		}
	}
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return true, nil
	case errors.As(err, &apiErr):
		// Another answer from JetStream (say, limits): it is there.
		return false, nil
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, nats.ErrNoResponders):
		return false, fmt.Errorf("natstx: no JetStream on this NATS server (is natstx's server, or a NATS server with JetStream, running there?): %w", err)
	case infoRefused(nc):
		// An identity that may not ask (users of one account with
		// JetStream, configured before natstx's accounts): the server
		// refused the request, so nothing answered it. Its account's own
		// API, as the JavaScript SDK decides too.
		return false, nil
	}
	return false, fmt.Errorf("natstx: asking NATS for this account's JetStream information: %w", err)
}

// infoRefused reports whether nc's last error is the server refusing it to
// publish the account-information request.
func infoRefused(nc *nats.Conn) bool {
	last := nc.LastError()
	return errors.Is(last, nats.ErrPermissionViolation) && strings.Contains(last.Error(), `Publish to "`+jetstream.DefaultAPIPrefix+`INFO"`)
}
