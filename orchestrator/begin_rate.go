package orchestrator

import (
	"encoding/json"
	"fmt"
	"math"
	"sync"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"
)

// requestInfoHeader is the header in which the NATS server says who sent a
// request that crossed accounts through a service import shared with
// details (the operators' import of the API, messages.AccountImports): the
// server sets it, replacing any the sender wrote.
const requestInfoHeader = "Nats-Request-Info"

// requester is who sent an API request, as the NATS server tells.
type requester struct {
	Account string `json:"acc"`
	User    string `json:"user"`
	Name    string `json:"name_tag"`
}

// requesterOf reads the sender of m from its Nats-Request-Info header; the
// zero requester when there is none (a request from the coordinators' own
// account, or any request on a NATS without natstx's accounts).
func requesterOf(m *nats.Msg) requester {
	var r requester
	if m.Header == nil {
		return r
	}
	if h := m.Header.Get(requestInfoHeader); h != "" {
		_ = json.Unmarshal([]byte(h), &r) // unreadable: anonymous
	}
	return r
}

// key identifies the requester for the begin limits.
func (r requester) key() string { return r.Account + "/" + r.User }

// String names the requester in an error.
func (r requester) String() string {
	switch {
	case r.User == "":
		return "unidentified callers"
	case r.Name != "":
		return fmt.Sprintf("user %q (%s)", r.Name, r.User)
	}
	return "user " + r.User
}

// beginLimits enforce Config.MaxBeginRate per requester: each identity the
// NATS server names gets its own token bucket, and every request without an
// identity shares one.
type beginLimits struct {
	rate  rate.Limit
	burst int
	mu    sync.Mutex
	by    map[string]*rate.Limiter
}

// maxIdleLimiters bounds the limiters kept: beyond it, those of identities
// whose bucket has refilled (as a new one would be) are dropped.
const maxIdleLimiters = 1024

func newBeginLimits(perSecond float64) *beginLimits {
	return &beginLimits{rate: rate.Limit(perSecond), burst: max(1, int(math.Ceil(perSecond))), by: map[string]*rate.Limiter{}}
}

// allow takes a token of r's bucket.
func (b *beginLimits) allow(r requester) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.by[r.key()]
	if l == nil {
		if len(b.by) >= maxIdleLimiters {
			for k, old := range b.by {
				if old.Tokens() >= float64(b.burst) {
					delete(b.by, k)
				}
			}
		}
		l = rate.NewLimiter(b.rate, b.burst)
		b.by[r.key()] = l
	}
	return l.Allow()
}
