package console_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/console"
	"github.com/natstx/natstx/orchestrator/saga"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/conformance"
)

// coordinator is a real embedded NATS server, a real engine on it, and a
// client on the same connection, as natstx server runs them.
type coordinator struct {
	t      *testing.T
	nats   *conformance.NATS
	eng    *orchestrator.Engine
	client *orchestrator.Client
}

func startCoordinator(t *testing.T) *coordinator {
	t.Helper()
	n := conformance.StartNATS(t)
	eng := n.StartEngine(t, orchestrator.Config{
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), StatusLinger: -1,
	})
	client, err := orchestrator.NewClient(n.Conn)
	if err != nil {
		t.Fatal(err)
	}
	return &coordinator{t: t, nats: n, eng: eng, client: client}
}

// participant runs a participants.Runtime named name on the coordinator's
// NATS.
func (c *coordinator) participant(name string, h participants.Handler, sh participants.SagaHandler) {
	c.t.Helper()
	c.nats.StartRuntime(c.t, participants.Config{Name: name, Handler: h, SagaHandler: sh})
}

// console serves a console over the coordinator with cfg (its Source,
// Stats and OldestInFlight filled in).
func (c *coordinator) console(cfg console.Config) *httptest.Server {
	c.t.Helper()
	cfg.Source = c.client
	cfg.Stats, cfg.OldestInFlight = c.eng.Stats, c.eng.OldestInFlight
	h, err := console.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ts := httptest.NewServer(h)
	c.t.Cleanup(ts.Close)
	return ts
}

// call makes a request and returns the status code and the body decoded
// as JSON into a map (nil if the body is not JSON).
func call(t *testing.T, method, u string, body string, header map[string]string) (int, map[string]any, *http.Response) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	cl := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		m = nil
	}
	return resp.StatusCode, m, resp
}

// post is a POST as the console's pages make it.
func post(t *testing.T, u, body string) (int, map[string]any) {
	t.Helper()
	code, m, _ := call(t, http.MethodPost, u, body, map[string]string{"Content-Type": "application/json", console.CSRFHeader: "1"})
	return code, m
}

// ids lists the IDs of a list answer.
func ids(m map[string]any) []string {
	var out []string
	txs, _ := m["transactions"].([]any)
	for _, x := range txs {
		out = append(out, x.(map[string]any)["id"].(string))
	}
	slices.Sort(out)
	return out
}

// eventually polls f every 50ms until it returns "" or limit passes, and
// fails with f's last answer.
func eventually(t *testing.T, limit time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAPIListsFiltersShowsAndAborts: the JSON API over a real engine lists
// a committed, an aborted and a stuck transaction with each filter, shows
// the stuck one's wait, refuses bad requests with clear JSON errors, and
// aborts the stuck one only when asked with who and why.
func TestAPIListsFiltersShowsAndAborts(t *testing.T) {
	c := startCoordinator(t)
	c.participant("inventory", participants.HandlerFuncs{}, nil)
	c.participant("fraud-check", participants.HandlerFuncs{PrepareFunc: func(context.Context, participants.Tx, []byte) error {
		return errors.New("card blocked")
	}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok, err := c.eng.Execute(ctx, orchestrator.Request{ID: "ok-1", Participants: []orchestrator.Participant{{Name: "inventory"}}})
	if err != nil || !ok.Committed() {
		t.Fatalf("ok-1: %+v %v", ok, err)
	}
	no, err := c.eng.Execute(ctx, orchestrator.Request{ID: "no-1", Participants: []orchestrator.Participant{{Name: "inventory"}, {Name: "fraud-check"}}})
	if err != nil || no.Committed() {
		t.Fatalf("no-1: %+v %v", no, err)
	}
	// ghost runs nowhere: the transaction waits for its vote.
	if _, err := c.eng.Begin(ctx, orchestrator.Request{ID: "stuck-1", Timeout: 10 * time.Minute,
		Participants: []orchestrator.Participant{{Name: "inventory"}, {Name: "ghost"}}}); err != nil {
		t.Fatal(err)
	}
	ts := c.console(console.Config{})

	list := func(q string) (int, map[string]any) {
		code, m, _ := call(t, http.MethodGet, ts.URL+"/api/tx?"+q, "", nil)
		return code, m
	}
	// Execute returns at the decision: wait for the acknowledgements too.
	eventually(t, 10*time.Second, func() string {
		_, m := list("")
		if got := ids(m); !slices.Equal(got, []string{"no-1", "ok-1", "stuck-1"}) {
			return fmt.Sprintf("the list holds %v", got)
		}
		if _, m := list("state=committed,aborted"); !slices.Equal(ids(m), []string{"no-1", "ok-1"}) {
			return fmt.Sprintf("ended: %v", ids(m))
		}
		return ""
	})
	for q, want := range map[string][]string{
		"state=committed":               {"ok-1"},
		"state=aborted,preparing":       {"no-1", "stuck-1"},
		"protocol=2pc":                  {"no-1", "ok-1", "stuck-1"},
		"protocol=saga":                 nil,
		"participant=FRAUD":             {"no-1"},
		"participant=ghost":             {"stuck-1"},
		"unfinished=1":                  {"stuck-1"},
		"unfinished=1&participant=none": nil,
		"min_age=1h":                    nil,
		"min_age=0s":                    {"no-1", "ok-1", "stuck-1"},
		"stuck=1&stuck_after=1h":        nil,
	} {
		code, m := list(q)
		if code != http.StatusOK || !slices.Equal(ids(m), want) {
			t.Errorf("?%s: %d %v, want %v", q, code, ids(m), want)
		}
	}
	// Once it has waited a millisecond, stuck-1 is stuck by that threshold.
	eventually(t, 10*time.Second, func() string {
		if _, m := list("stuck=1&stuck_after=1ms"); !slices.Equal(ids(m), []string{"stuck-1"}) {
			return fmt.Sprintf("stuck after 1ms: %v", ids(m))
		}
		return ""
	})
	// Its resends make it retrying.
	eventually(t, 20*time.Second, func() string {
		if _, m := list("retrying=1"); !slices.Equal(ids(m), []string{"stuck-1"}) {
			return fmt.Sprintf("retrying: %v", ids(m))
		}
		return ""
	})
	if _, m := list("limit=1"); len(ids(m)) != 1 || m["truncated"] != true || m["matched"] != float64(3) {
		t.Errorf("limit=1: %v", m)
	}
	for q, want := range map[string]string{
		"state=nope": "no such state", "protocol=xa": "want 2pc or saga", "min_age=soon": "duration",
		"unfinished=maybe": "true or false", "limit=0": "positive",
	} {
		if code, m := list(q); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), want) {
			t.Errorf("?%s: %d %v, want 400 saying %q", q, code, m, want)
		}
	}

	// The detail of stuck-1: whom it waits for, since when, what applies.
	code, d, _ := call(t, http.MethodGet, ts.URL+"/api/tx/stuck-1", "", nil)
	if code != http.StatusOK {
		t.Fatalf("detail: %d %v", code, d)
	}
	sum := d["summary"].(map[string]any)
	if fmt.Sprint(sum["waiting"]) != "[ghost]" || sum["waiting_since"] == nil || sum["final"] != false {
		t.Errorf("stuck-1's summary: %v", sum)
	}
	if fmt.Sprint(d["actions"]) != "[abort]" {
		t.Errorf("stuck-1's actions: %v", d["actions"])
	}
	if code, m, _ := call(t, http.MethodGet, ts.URL+"/api/tx/ok-1", "", nil); code != http.StatusOK || fmt.Sprint(m["actions"]) != "[]" {
		t.Errorf("ok-1: %d actions %v", code, m["actions"])
	}
	if code, m, _ := call(t, http.MethodGet, ts.URL+"/api/tx/nope", "", nil); code != http.StatusNotFound || !strings.Contains(fmt.Sprint(m["error"]), "unknown transaction") {
		t.Errorf("unknown: %d %v", code, m)
	}
	if code, m, _ := call(t, http.MethodGet, ts.URL+"/api/tx/bad.id", "", nil); code != http.StatusBadRequest || m["error"] == nil {
		t.Errorf("bad ID: %d %v", code, m)
	}
	if code, m, _ := call(t, http.MethodGet, ts.URL+"/api/nothing", "", nil); code != http.StatusNotFound || m["error"] == nil {
		t.Errorf("no such endpoint: %d %v", code, m)
	}

	// Actions: CSRF header, JSON, who and why are required.
	abort := ts.URL + "/api/tx/stuck-1/abort"
	body := `{"who":"ops-anna","why":"ghost is gone"}`
	if code, m, _ := call(t, http.MethodPost, abort, body, map[string]string{"Content-Type": "application/json"}); code != http.StatusForbidden || !strings.Contains(fmt.Sprint(m["error"]), console.CSRFHeader) {
		t.Errorf("without %s: %d %v", console.CSRFHeader, code, m)
	}
	if code, m, _ := call(t, http.MethodPost, abort, body, map[string]string{"Content-Type": "application/json", console.CSRFHeader: "1", "Sec-Fetch-Site": "cross-site"}); code != http.StatusForbidden || !strings.Contains(fmt.Sprint(m["error"]), "cross-origin") {
		t.Errorf("cross-site: %d %v", code, m)
	}
	if code, m, _ := call(t, http.MethodPost, abort, body, map[string]string{"Content-Type": "application/json", console.CSRFHeader: "1", "Origin": "http://evil.example"}); code != http.StatusForbidden {
		t.Errorf("from another origin: %d %v", code, m)
	}
	if code, m, _ := call(t, http.MethodPost, abort, body, map[string]string{"Content-Type": "text/plain", console.CSRFHeader: "1"}); code != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain: %d %v", code, m)
	}
	if code, m := post(t, abort, `{"who":"ops-anna"}`); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), "who asks and why") {
		t.Errorf("without why: %d %v", code, m)
	}
	if code, m := post(t, abort, `{"who":"a","why":"b","whom":"c"}`); code != http.StatusBadRequest {
		t.Errorf("unknown field: %d %v", code, m)
	}
	if code, m := post(t, ts.URL+"/api/tx/stuck-1/retry", body); code != http.StatusConflict || !strings.Contains(fmt.Sprint(m["error"]), "only abort") {
		t.Errorf("retry of a 2PC transaction: %d %v", code, m)
	}
	if code, m := post(t, ts.URL+"/api/tx/stuck-1/commit", body); code != http.StatusNotFound {
		t.Errorf("no such action: %d %v", code, m)
	}
	if code, m := post(t, ts.URL+"/api/tx/nope/abort", body); code != http.StatusNotFound {
		t.Errorf("abort of an unknown transaction: %d %v", code, m)
	}
	// The ID is checked first, before the action and the body.
	for _, u := range []string{"/api/tx/bad.id/abort", "/api/tx/bad.id/commit"} {
		if code, m := post(t, ts.URL+u, `{}`); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), "transaction ID") {
			t.Errorf("POST %s: %d %v, want 400 about the transaction ID", u, code, m)
		}
	}
	if st, _ := c.client.Status(ctx, "stuck-1"); st.State != "preparing" {
		t.Fatalf("a refused request changed stuck-1: %s", st.State)
	}
	code, m := post(t, abort, body)
	if code != http.StatusOK {
		t.Fatalf("abort: %d %v", code, m)
	}
	st := m["status"].(map[string]any)
	if st["state"] != "aborting" && st["state"] != "aborted" || !strings.Contains(fmt.Sprint(st["reason"]), "ghost is gone") {
		t.Errorf("after the abort: %v", st)
	}
	// The history names who asked.
	eventually(t, 10*time.Second, func() string {
		got, err := c.client.Status(ctx, "stuck-1")
		if err != nil {
			return err.Error()
		}
		for _, e := range got.History {
			if e.Event == "operator" && e.By == "ops-anna" && strings.Contains(e.Detail, "ghost is gone") {
				return ""
			}
		}
		return fmt.Sprintf("no operator event by ops-anna in stuck-1's history: %+v", got.History)
	})
	if code, m := post(t, abort, body); code != http.StatusConflict || !strings.Contains(fmt.Sprint(m["error"]), "only a preparing transaction") {
		t.Errorf("a second abort: %d %v", code, m)
	}
	if code, m := post(t, ts.URL+"/api/tx/ok-1/abort", body); code != http.StatusConflict || !strings.Contains(fmt.Sprint(m["error"]), "committed") {
		t.Errorf("abort of a committed transaction: %d %v", code, m)
	}

	// The dashboard's counters are the engine's.
	code, s, _ := call(t, http.MethodGet, ts.URL+"/api/stats", "", nil)
	if code != http.StatusOK || s["begun"] != float64(3) || s["committed"] != float64(1) || s["oldest_in_flight_seconds"] == nil {
		t.Errorf("stats: %d %v", code, s)
	}
	if dec := s["decide"].(map[string]any); dec["count"].(float64) < 2 || len(dec["buckets"].([]any)) == 0 {
		t.Errorf("decide latency: %v", dec)
	}
	// Aborts by cause, the decision-write and saga latencies, and the
	// recovered, orphans-aborted and fenced counts are the engine's too
	// (read again until a snapshot of the engine matches the answer).
	eventually(t, 10*time.Second, func() string {
		_, s, _ := call(t, http.MethodGet, ts.URL+"/api/stats", "", nil)
		e := c.eng.Stats()
		var diff []string
		byCause, _ := s["aborted_by"].(map[string]any)
		if len(byCause) != len(orchestrator.AbortCauses) {
			diff = append(diff, fmt.Sprintf("aborted_by %v, want every one of %v", s["aborted_by"], orchestrator.AbortCauses))
		}
		for _, cause := range orchestrator.AbortCauses {
			if got, ok := byCause[cause].(float64); !ok || int64(got) != e.AbortedBy[cause] {
				diff = append(diff, fmt.Sprintf("aborted_by[%s] %v, the engine's %d", cause, byCause[cause], e.AbortedBy[cause]))
			}
		}
		for key, want := range map[string]int64{"recovered": e.Recovered, "orphans_aborted": e.OrphansAborted, "fenced": e.Fenced} {
			if got, ok := s[key].(float64); !ok || int64(got) != want {
				diff = append(diff, fmt.Sprintf("%s %v, the engine's %d", key, s[key], want))
			}
		}
		for key, want := range map[string]orchestrator.Histogram{"write": e.WriteLatency, "saga": e.SagaLatency} {
			h, _ := s[key].(map[string]any)
			buckets, _ := h["buckets"].([]any)
			cumulative, _ := h["cumulative"].([]any)
			if got, ok := h["count"].(float64); !ok || uint64(got) != want.Count || len(buckets) != len(want.Buckets) || len(cumulative) != len(want.Cumulative) {
				diff = append(diff, fmt.Sprintf("%s latency %v, the engine's %+v", key, s[key], want))
			}
		}
		if write, _ := s["write"].(map[string]any); byCause["vote"] != float64(1) || write["count"] != float64(1) {
			diff = append(diff, fmt.Sprintf("want no-1 aborted for its vote and ok-1's decision written once: aborted_by %v, write %v", byCause, s["write"]))
		}
		return strings.Join(diff, "; ")
	})
	h, err := console.New(console.Config{Source: c.client})
	if err != nil {
		t.Fatal(err)
	}
	noStats := httptest.NewServer(h)
	defer noStats.Close()
	if code, m, _ := call(t, http.MethodGet, noStats.URL+"/api/stats", "", nil); code != http.StatusNotFound || m["error"] == nil {
		t.Errorf("stats without an engine: %d %v", code, m)
	}
}

// TestAPISagaActions: a saga whose compensation keeps failing shows as
// retrying, then stuck; retry now is accepted; resolving the stuck step by
// hand, with who and why, lets it end compensated.
func TestAPISagaActions(t *testing.T) {
	c := startCoordinator(t)
	c.participant("payment", nil, participants.SagaHandlerFuncs{CompensateFunc: func(context.Context, participants.Step, []byte) error {
		return errors.New("ledger unreachable")
	}})
	c.participant("shipping", nil, participants.SagaHandlerFuncs{ActionFunc: func(context.Context, participants.Step, []byte) error {
		return participants.Refuse("no-slot", "no slot this week")
	}})
	ts := c.console(console.Config{})
	def := saga.Definition{
		Name:         "order",
		Steps:        []saga.Step{{Name: "charge", Participant: "payment"}, {Name: "ship", Participant: "shipping"}},
		Timeout:      5 * time.Second,
		Retry:        saga.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxAttempts: 1},
		Compensation: saga.CompensationPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 200 * time.Millisecond, StuckAfterAttempts: 2},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.eng.BeginSaga(ctx, orchestrator.SagaRequest{ID: "saga-1", Definition: def}); err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	eventually(t, 20*time.Second, func() string {
		_, m, _ := call(t, http.MethodGet, ts.URL+"/api/tx?protocol=saga&stuck=1&retrying=1&unfinished=1", "", nil)
		if !slices.Equal(ids(m), []string{"saga-1"}) {
			return fmt.Sprintf("stuck retrying sagas: %v", m)
		}
		_, d, _ = call(t, http.MethodGet, ts.URL+"/api/tx/saga-1", "", nil)
		if fmt.Sprint(d["resolvable"]) != "[charge]" {
			return fmt.Sprintf("saga-1 is not stuck on charge: %v", d)
		}
		return ""
	})
	if a := fmt.Sprint(d["actions"]); !strings.Contains(a, "retry") || !strings.Contains(a, "resolve") || strings.Contains(a, "abort") {
		t.Errorf("a compensation-stuck saga's actions: %s", a)
	}
	if w := fmt.Sprint(d["summary"].(map[string]any)["waiting"]); w != "[payment]" {
		t.Errorf("saga-1 waits on %s", w)
	}
	if code, m := post(t, ts.URL+"/api/tx/saga-1/retry", `{"who":"ops-anna","why":"ledger is back"}`); code != http.StatusOK || !strings.Contains(fmt.Sprint(m["message"]), "retry of saga saga-1") {
		t.Errorf("retry: %d %v", code, m)
	}
	if code, m := post(t, ts.URL+"/api/tx/saga-1/resolve", `{"who":"ops-anna","why":"refunded by hand"}`); code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m["error"]), "step") {
		t.Errorf("resolve without a step: %d %v", code, m)
	}
	if code, m := post(t, ts.URL+"/api/tx/saga-1/resolve", `{"who":"ops-anna","why":"refunded by hand","step":"nope"}`); code != http.StatusConflict {
		t.Errorf("resolve of an unknown step: %d %v", code, m)
	}
	if code, m := post(t, ts.URL+"/api/tx/saga-1/resolve", `{"who":"ops-anna","why":"refunded by hand","step":"charge"}`); code != http.StatusOK {
		t.Fatalf("resolve: %d %v", code, m)
	}
	eventually(t, 20*time.Second, func() string {
		_, d, _ = call(t, http.MethodGet, ts.URL+"/api/tx/saga-1", "", nil)
		st := d["status"].(map[string]any)
		if st["state"] != "compensated" {
			return fmt.Sprintf("saga-1 after the resolve: %v", st)
		}
		return ""
	})
	steps := d["status"].(map[string]any)["steps"].([]any)
	if note := fmt.Sprint(steps[0].(map[string]any)["note"]); !strings.Contains(note, "ops-anna") || !strings.Contains(note, "refunded by hand") {
		t.Errorf("the resolved step's note %q names not who and why", note)
	}
	if code, m := post(t, ts.URL+"/api/tx/saga-1/abort", `{"who":"ops-anna","why":"too late"}`); code != http.StatusConflict {
		t.Errorf("abort of a compensated saga: %d %v", code, m)
	}
}

// TestTokenLoginAndHost: with a token every request needs it, as a bearer
// token or the cookie /login sets; without one only loopback Hosts are
// served.
func TestTokenLoginAndHost(t *testing.T) {
	c := startCoordinator(t)
	const token = "s3cret-token-0123456789"
	ts := c.console(console.Config{Token: token})
	api := ts.URL + "/api/tx"

	if code, m, _ := call(t, http.MethodGet, api, "", nil); code != http.StatusUnauthorized || !strings.Contains(fmt.Sprint(m["error"]), "token") {
		t.Errorf("no token: %d %v", code, m)
	}
	if code, _, resp := call(t, http.MethodGet, ts.URL+"/", "", nil); code != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("a page without the token: %d %v", code, resp.Header)
	}
	if code, _, _ := call(t, http.MethodGet, ts.URL+"/static/list.js", "", nil); code != http.StatusSeeOther {
		t.Errorf("an asset without the token: %d", code)
	}
	for _, bad := range []string{"Bearer " + token + "x", "Bearer " + token[:len(token)-1], "Basic " + token, token} {
		if code, _, _ := call(t, http.MethodGet, api, "", map[string]string{"Authorization": bad}); code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d", bad, code)
		}
	}
	if code, m, _ := call(t, http.MethodGet, api, "", map[string]string{"Authorization": "Bearer " + token}); code != http.StatusOK || m["transactions"] == nil {
		t.Errorf("bearer token: %d %v", code, m)
	}
	// A bearer token is no CSRF pass: POSTs still need the header.
	if code, _, _ := call(t, http.MethodPost, api+"/x/abort", `{"who":"a","why":"b"}`, map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/json"}); code != http.StatusForbidden {
		t.Errorf("a POST with the token and without %s: %d", console.CSRFHeader, code)
	}

	// The login form, and the ?token= link.
	code, _, resp := call(t, http.MethodGet, ts.URL+"/login", "", nil)
	if code != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "sha256-") {
		t.Errorf("the login page: %d %v", code, resp.Header)
	}
	if code, _, resp := call(t, http.MethodGet, ts.URL+"/login?token=wrong", "", nil); code != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("a wrong login: %d %v", code, resp.Cookies())
	}
	form := url.Values{"token": {token}}.Encode()
	if code, _, _ := call(t, http.MethodPost, ts.URL+"/login", form, map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Sec-Fetch-Site": "cross-site"}); code != http.StatusForbidden {
		t.Errorf("a cross-site login: %d", code)
	}
	code, _, resp = call(t, http.MethodPost, ts.URL+"/login", form, map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if code != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d %v", code, resp.Cookies())
	}
	ck := resp.Cookies()[0]
	if ck.Name != console.CookieName || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || strings.Contains(ck.Value, token) {
		t.Errorf("the login cookie: %+v", ck)
	}
	if code, _, _ := call(t, http.MethodGet, api, "", map[string]string{"Cookie": ck.Name + "=" + ck.Value}); code != http.StatusOK {
		t.Errorf("with the cookie: %d", code)
	}
	if code, _, _ := call(t, http.MethodGet, ts.URL+"/", "", map[string]string{"Cookie": ck.Name + "=" + ck.Value}); code != http.StatusOK {
		t.Errorf("a page with the cookie: %d", code)
	}
	if code, _, _ := call(t, http.MethodGet, api, "", map[string]string{"Cookie": ck.Name + "=" + ck.Value + "0"}); code != http.StatusUnauthorized {
		t.Errorf("with a wrong cookie: %d", code)
	}
	if code, _, _ := call(t, http.MethodGet, ts.URL+"/login?token="+token, "", nil); code != http.StatusSeeOther {
		t.Errorf("login link: %d", code)
	}

	// Without a token: loopback Hosts only (DNS rebinding).
	open := c.console(console.Config{})
	for host, want := range map[string]int{"evil.example": 403, "10.0.0.5:80": 403, "localhost:8080": 200, "127.0.0.1": 200, "[::1]:8080": 200} {
		req, err := http.NewRequest(http.MethodGet, open.URL+"/api/tx", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

// svgNamespace is the one URL the console's files may hold: the SVG
// namespace, which names the elements dashboard.js creates and is never
// fetched.
const svgNamespace = "http://www.w3.org/2000/svg"

// externalURL returns the first reference outside the console in text
// (a URL beginning http://, https:// or a protocol-relative //cdn), the SVG
// namespace excepted when it is the whole URL; "" if none.
func externalURL(text string) string {
	for _, ext := range []string{"http://", "https://", "//cdn"} {
		for from := 0; ; {
			i := strings.Index(text[from:], ext)
			if i < 0 {
				break
			}
			i += from
			end := i + len(ext)
			for end < len(text) && !strings.ContainsRune(" \t\n\"'`()<>", rune(text[end])) {
				end++
			}
			if u := text[i:end]; u != svgNamespace {
				return u
			}
			from = end
		}
	}
	return ""
}

// TestExternalURLExemptsOnlyTheSVGNamespace: the check of
// TestPagesAndAssetsAreEmbedded lets the SVG namespace pass and nothing
// else, not even in a file that holds the namespace too.
func TestExternalURLExemptsOnlyTheSVGNamespace(t *testing.T) {
	for text, want := range map[string]string{
		`const NS = "` + svgNamespace + `";`:                                          "",
		`const NS = "` + svgNamespace + `"; fetch("https://cdn.example/x.js")`:        "https://cdn.example/x.js",
		`<svg xmlns="` + svgNamespace + `"><image href="http://evil.example/a.png"/>`: "http://evil.example/a.png",
		`const NS = "` + svgNamespace + `/extra";`:                                    svgNamespace + "/extra",
		`fetch("` + svgNamespace + `.evil.example/x")`:                                svgNamespace + ".evil.example/x",
		`<script src="//cdn.example/lib.js"></script>`:                                "//cdn.example/lib.js",
		`"http://www.w3.org/1999/xlink"`:                                              "http://www.w3.org/1999/xlink",
	} {
		if got := externalURL(text); got != want {
			t.Errorf("externalURL(%q) = %q, want %q", text, got, want)
		}
	}
}

// TestPagesAndAssetsAreEmbedded: the pages and their assets come from the
// binary, with a strict Content-Security-Policy, and refer to nothing
// outside the console.
func TestPagesAndAssetsAreEmbedded(t *testing.T) {
	c := startCoordinator(t)
	ts := c.console(console.Config{})
	for path, want := range map[string]string{
		"/": "Transactions and sagas", "/tx/any-id": "detail.js", "/dashboard": "dashboard.js",
		"/static/console.css": "--bg", "/static/common.js": "X-Natstx-Console", "/static/list.js": "/api/tx",
		"/static/detail.js": "confirm", "/static/dashboard.js": "/api/stats",
	} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d, no %q", path, resp.StatusCode, want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
		if u := externalURL(string(b)); u != "" {
			t.Errorf("%s refers to %q: the console must work with no internet", path, u)
		}
	}
}
