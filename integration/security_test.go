package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/natstx/natstx/integration/report"
	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/orchestrator/embedded"
	"github.com/natstx/natstx/participants"
)

// natstxAuthInit runs `natstx auth init` for the participants into a new
// directory under dir and returns it.
func natstxAuthInit(t *testing.T, dir string, names ...string) string {
	t.Helper()
	bin, err := buildNatstx()
	if err != nil {
		t.Fatal(err)
	}
	auth := filepath.Join(dir, "natstx-auth")
	out, err := exec.Command(bin, "auth", "init", "--dir", auth, "--participants", strings.Join(names, ",")).CombinedOutput()
	if err != nil {
		t.Fatalf("natstx auth init: %v\n%s", err, out)
	}
	return auth
}

// violations collects the permission errors NATS reports to one connection.
type violations struct {
	mu   sync.Mutex
	seen []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.seen = append(v.seen, err.Error())
}

// saw waits up to limit for a permissions violation naming subject.
func (v *violations) saw(subject string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		v.mu.Lock()
		for _, s := range v.seen {
			if strings.Contains(s, "Permissions Violation") && strings.Contains(s, `"`+subject+`"`) {
				v.mu.Unlock()
				return true
			}
		}
		v.mu.Unlock()
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mark returns how many errors were reported so far, for sawSince.
func (v *violations) mark() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.seen)
}

// sawSince waits up to limit for a permissions violation naming subject
// among the errors reported after the first since.
func (v *violations) sawSince(subject string, since int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		v.mu.Lock()
		for _, s := range v.seen[since:] {
			if strings.Contains(s, "Permissions Violation") && strings.Contains(s, `"`+subject+`"`) {
				v.mu.Unlock()
				return true
			}
		}
		v.mu.Unlock()
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialAs connects to url with the credentials file creds ("" for none) and
// inbox prefix inbox ("" for the default), recording permission errors.
func dialAs(url, creds, inbox string) (*nats.Conn, *violations, error) {
	v := &violations{}
	opts := []nats.Option{nats.Timeout(3 * time.Second), nats.ErrorHandler(v.handler), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	if inbox != "" {
		opts = append(opts, nats.CustomInboxPrefix(inbox))
	}
	nc, err := nats.Connect(url, opts...)
	return nc, v, err
}

// gatedHandler is a participant that records what it applied and, for the
// transactions in hold, waits in Prepare until release is closed; it votes
// abort for the transactions in no.
type gatedHandler struct {
	hold    map[string]bool
	no      map[string]bool
	release chan struct{}
	held    chan string

	mu        sync.Mutex
	committed map[string]bool
	aborted   map[string]bool
}

func newGatedHandler(release chan struct{}, hold, no []string) *gatedHandler {
	h := &gatedHandler{hold: map[string]bool{}, no: map[string]bool{}, release: release, held: make(chan string, 16),
		committed: map[string]bool{}, aborted: map[string]bool{}}
	for _, id := range hold {
		h.hold[id] = true
	}
	for _, id := range no {
		h.no[id] = true
	}
	return h
}

func (h *gatedHandler) Prepare(ctx context.Context, tx participants.Tx, _ []byte) error {
	if h.hold[tx.ID] {
		h.held <- tx.ID
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if h.no[tx.ID] {
		return errors.New("refused by the test")
	}
	return nil
}

func (h *gatedHandler) Commit(_ context.Context, tx participants.Tx) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.committed[tx.ID] = true
	return nil
}

func (h *gatedHandler) Abort(_ context.Context, tx participants.Tx) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.aborted[tx.ID] = true
	return nil
}

func (h *gatedHandler) applied(id string) (committed, aborted bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.committed[id], h.aborted[id]
}

// The verdicts of one hostile attempt.
const (
	refusedByNATS   = "refused by NATS"
	refusedByNatstx = "refused by the coordinator"
	ignored         = "ignored by natstx"
	allowed         = "allowed to its role"
)

// attempt is one hostile action: it returns the subject it used and its
// error; verdict classifies the result.
type attempt struct {
	name string
	run  func(ctx context.Context, nc *nats.Conn) (subject string, err error)
}

// TestSecurityHostileIdentitiesChangeNothing is issue 13's acceptance test.
// A NATS server runs the configuration of `natstx auth init`; a coordinator
// and two participants (inventory, payment) run with their own credentials.
// Two transactions are held in prepare while a client without credentials,
// the inventory participant's credentials and the operator's credentials
// each try to forge a commit, forge a vote for another participant, begin
// and abort through the API, read the command stream and the buckets, write
// the buckets, and create a push consumer of inventory's commands
// delivering into tx-a's decision record or into payment's commands (the
// participants' consumers are the coordinator's: nats-server#8274).
// Each attempt must be refused (by NATS permissions or by the coordinator)
// or ignored (a forged reply the coordinator drops: its count of rejected
// replies for that reply subject rises, and rises by the ignored attempts
// alone), or be what the identity's role allows; afterwards tx-a, which
// payment votes against, is aborted everywhere, and tx-c commits
// everywhere. The counts lines go through report.Counts.
func TestSecurityHostileIdentitiesChangeNothing(t *testing.T) {
	dir := t.TempDir()
	auth := natstxAuthInit(t, dir, "inventory", "payment")
	creds := func(id string) string { return filepath.Join(auth, id+".creds") }
	srv, err := embedded.Start(embedded.Config{ConfigFile: filepath.Join(auth, "nats-auth.conf")})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	url := srv.URL()

	cnc, _, err := dialAs(url, creds("coordinator"), "")
	if err != nil {
		t.Fatalf("the coordinator's credentials: %v", err)
	}
	defer cnc.Close()
	eng, err := orchestrator.New(cnc, orchestrator.Config{PrepareTimeout: 3 * time.Minute,
		Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named("coordinator")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 90*time.Second)
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer eng.Stop()
	inst := eng.Instance()

	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	handlers := map[string]*gatedHandler{
		"inventory": newGatedHandler(release, nil, nil),
		"payment":   newGatedHandler(release, []string{"tx-a", "tx-c"}, []string{"tx-a"}),
	}
	runtimes := map[string]*participants.Runtime{}
	for _, name := range []string{"inventory", "payment"} {
		pnc, pv, err := dialAs(url, creds("participant-"+name), messages.ParticipantInbox(name))
		if err != nil {
			t.Fatalf("participant %s's credentials: %v", name, err)
		}
		defer pnc.Close()
		// payment's prepare is held while the attacks run. The consumer is
		// the coordinator's (ack_wait 30s: a participant may not create or
		// update it), so the held prepare may be delivered again meanwhile;
		// the second delivery waits for the first and is answered from its
		// record.
		rt, err := participants.New(pnc, participants.Config{Name: name, Handler: handlers[name], InDoubtAfter: time.Second,
			OpTimeout: 3 * time.Minute, AckWait: 4 * time.Minute,
			Logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(name)})
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Start(ctx); err != nil {
			t.Fatalf("participant %s under its permissions: %v (violations: %v)", name, err, pv.seen)
		}
		defer rt.Stop()
		// The one refusal a participant meets at work: its consumer is not
		// there yet at start (the coordinator creates it before its first
		// command), and it may not create it.
		ownCreate := "$JS.API.CONSUMER.CREATE." + messages.CommandStream + "." + messages.ConsumerName(name) + "." + messages.ParticipantFilter(name)
		defer func() {
			pv.mu.Lock()
			defer pv.mu.Unlock()
			for _, seen := range pv.seen {
				if !strings.Contains(seen, `"`+ownCreate+`"`) {
					t.Errorf("participant %s hit its permissions at work: %v", name, seen)
				}
			}
		}()
		runtimes[name] = rt
	}

	both := func(id string) orchestrator.Request {
		return orchestrator.Request{ID: id, Participants: []orchestrator.Participant{{Name: "inventory", Payload: []byte("1")}, {Name: "payment", Payload: []byte("1")}}}
	}
	// tx-b commits before the attacks; tx-a (payment votes no) and tx-c are
	// held in payment's prepare while they run.
	if out, err := eng.Execute(ctx, both("tx-b")); err != nil || !out.Committed() {
		t.Fatalf("tx-b: %v, %v", out.State, err)
	}
	for _, id := range []string{"tx-a", "tx-c"} {
		if _, err := eng.Begin(ctx, both(id)); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	for range 2 {
		select {
		case <-handlers["payment"].held:
		case <-ctx.Done():
			t.Fatal("payment never received the prepares of tx-a and tx-c")
		}
	}
	waitFor(t, 10*time.Second, "inventory prepared tx-a and tx-c", func() bool {
		return runtimes["inventory"].State("tx-a") == participants.StatePrepared && runtimes["inventory"].State("tx-c") == participants.StatePrepared
	})

	publish := func(ctx context.Context, nc *nats.Conn, m *nats.Msg) (string, error) {
		js, err := jetstream.New(nc)
		if err != nil {
			return m.Subject, err
		}
		_, err = js.PublishMsg(ctx, m)
		return m.Subject, err
	}
	command := func(id string, op messages.Op, p string) *nats.Msg {
		c := messages.Command{TxID: id, Op: op, Participant: p, Attempt: 9, ReplyTo: messages.ReplySubject(inst, p)}
		return &nats.Msg{Subject: c.Subject(), Header: nats.Header(c.Header()), Data: c.Payload}
	}
	plain := func(nc *nats.Conn, subject string, r messages.Reply) (string, error) {
		err := nc.PublishMsg(&nats.Msg{Subject: subject, Header: nats.Header(r.Header()), Data: r.Body()})
		if err == nil {
			err = nc.Flush()
		}
		return subject, err
	}
	yesFromPayment := messages.Reply{TxID: "tx-a", Op: messages.OpPrepare, Participant: "payment", Result: messages.VoteCommit, Attempt: 1}
	request := func(ctx context.Context, nc *nats.Conn, subject string, body any) (string, error) {
		data, _ := json.Marshal(body)
		m, err := nc.RequestWithContext(ctx, subject, data)
		if err != nil {
			return subject, err
		}
		var resp messages.StatusResponse
		if json.Unmarshal(m.Data, &resp) == nil && resp.Error != "" {
			return subject, fmt.Errorf("%w: %s", errCoordinator, resp.Error)
		}
		if _, isAbort := body.(messages.AbortRequest); isAbort && resp.Status != nil && resp.Status.State == "committed" {
			return subject, fmt.Errorf("%w: the transaction stays %s", errCoordinator, resp.Status.State)
		}
		return subject, nil
	}
	// pushConsumer asks for inventory's consumer (the one name and filter
	// the participant could once create) as a push consumer delivering to
	// deliver.
	pushConsumer := func(ctx context.Context, nc *nats.Conn, deliver string) (string, error) {
		name, filter := messages.ConsumerName("inventory"), messages.ParticipantFilter("inventory")
		return request(ctx, nc, "$JS.API.CONSUMER.CREATE."+messages.CommandStream+"."+name+"."+filter, map[string]any{
			"stream_name": messages.CommandStream, "action": "create",
			"config": map[string]any{"durable_name": name, "filter_subject": filter, "deliver_subject": deliver, "ack_policy": "none", "deliver_policy": "all"}})
	}
	attempts := []attempt{
		{"forge a commit of tx-a to inventory", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return publish(ctx, nc, command("tx-a", messages.OpCommit, "inventory"))
		}},
		{"forge an abort of tx-c to payment", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return publish(ctx, nc, command("tx-c", messages.OpAbort, "payment"))
		}},
		{"forge payment's commit vote for tx-a on payment's reply subject", func(_ context.Context, nc *nats.Conn) (string, error) {
			return plain(nc, messages.ReplySubject(inst, "payment"), yesFromPayment)
		}},
		{"forge payment's commit vote for tx-a on inventory's reply subject", func(_ context.Context, nc *nats.Conn) (string, error) {
			return plain(nc, messages.ReplySubject(inst, "inventory"), yesFromPayment)
		}},
		{"begin a transaction through the API", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return request(ctx, nc, messages.APIBegin, messages.BeginRequest{Participants: []messages.ParticipantSpec{{Name: "inventory", Payload: []byte("1")}}, Wait: true})
		}},
		{"abort tx-c (preparing) through the API", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return request(ctx, nc, messages.APIAbort(inst), messages.AbortRequest{ID: "tx-c", Reason: "hostile"})
		}},
		{"abort tx-b (committed) through the API", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return request(ctx, nc, messages.APIAbort(inst), messages.AbortRequest{ID: "tx-b", Reason: "hostile"})
		}},
		{"subscribe to every command", func(_ context.Context, nc *nats.Conn) (string, error) {
			sub, err := nc.SubscribeSync(messages.CommandSubjects)
			if err == nil {
				err = nc.Flush()
				defer func() { _ = sub.Unsubscribe() }()
			}
			return messages.CommandSubjects, err
		}},
		{"read a message of the command stream", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return request(ctx, nc, "$JS.API.STREAM.MSG.GET."+messages.CommandStream, map[string]any{"seq": 1})
		}},
		{"create a consumer of payment's commands", func(ctx context.Context, nc *nats.Conn) (string, error) {
			filter := messages.ParticipantFilter("payment")
			return request(ctx, nc, "$JS.API.CONSUMER.CREATE."+messages.CommandStream+".spy."+filter,
				map[string]any{"stream_name": messages.CommandStream, "config": map[string]any{"name": "spy", "filter_subject": filter, "ack_policy": "none"}})
		}},
		{"pull from payment's consumer", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return request(ctx, nc, "$JS.API.CONSUMER.MSG.NEXT."+messages.CommandStream+"."+messages.ConsumerName("payment"), map[string]any{"batch": 1, "no_wait": true})
		}},
		{"read tx-a's decision record", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return request(ctx, nc, "$JS.API.DIRECT.GET.KV_"+orchestrator.RecordBucket+".$KV."+orchestrator.RecordBucket+".tx-a", nil)
		}},
		{"read tx-a's status", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return request(ctx, nc, "$JS.API.DIRECT.GET."+messages.StatusStream+".$KV."+messages.StatusBucket+".tx-a", nil)
		}},
		{"write tx-a's status", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return publish(ctx, nc, &nats.Msg{Subject: "$KV." + messages.StatusBucket + ".tx-a", Data: []byte(`{"id":"tx-a","state":"committed"}`)})
		}},
		{"write tx-a's decision record", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return publish(ctx, nc, &nats.Msg{Subject: "$KV." + orchestrator.RecordBucket + ".tx-a", Data: []byte(`commit`)})
		}},
		// NATS does not check a push consumer's deliver subject against its
		// creator's permissions (nats-server#8274): whoever may create a
		// consumer of inventory's commands may have the server publish them
		// where it may not publish itself. So nobody but the coordinator
		// may create one, inventory included.
		{"push inventory's commands into tx-a's decision record", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return pushConsumer(ctx, nc, "$KV."+orchestrator.RecordBucket+".tx-a")
		}},
		{"push inventory's commands into payment's commands", func(ctx context.Context, nc *nats.Conn) (string, error) {
			return pushConsumer(ctx, nc, messages.CommandSubject("payment", "tx-c"))
		}},
	}
	// What each identity's role makes of each attempt (by index); anything
	// not listed must be refused by NATS.
	want := map[string]map[int]string{
		"no credentials": {},
		"participant inventory": {
			3: ignored, // its own reply subject: the coordinator drops a reply naming another participant
		},
		"operator": {
			4:  allowed,         // the operator begins transactions
			5:  allowed,         // ... and may abort an undecided one: not tried on a held one, see below
			6:  refusedByNatstx, // tx-b is committed
			12: allowed,         // the operator reads statuses
		},
	}
	identities := []struct{ name, creds, inbox string }{
		{"no credentials", "", ""},
		{"participant inventory", creds("participant-inventory"), messages.ParticipantInbox("inventory")},
		{"operator", creds("operator"), messages.OperatorInbox()},
	}
	// rejectedSince waits up to a second for the coordinator to count a
	// rejected reply (messages.CheckReplySubject) on subject, a reply
	// subject, beyond what it had counted before: the proof that an
	// attempt that got past NATS was dropped by the coordinator, not merely
	// expected to be.
	rejectedSince := func(subject string, before orchestrator.StatsSnapshot) bool {
		_, participant, ok := messages.ParseReplySubject(subject)
		if !ok {
			return false
		}
		deadline := time.Now().Add(time.Second)
		for {
			now := eng.Stats()
			if now.RejectedReplies[participant] > before.RejectedReplies[participant] && now.MalformedReplies > before.MalformedReplies {
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	atStart := eng.Stats()
	byIdentity := map[string]map[string]int{}
	for _, id := range identities {
		counts := map[string]int{}
		byIdentity[id.name] = counts
		nc, v, err := dialAs(url, id.creds, id.inbox)
		if err != nil {
			if id.creds != "" {
				t.Fatalf("%s: cannot connect: %v", id.name, err)
			}
			// Without credentials nothing gets through: every attempt is
			// refused at the door.
			t.Logf("%s: connection refused: %v", id.name, err)
			counts["attempts"], counts[refusedByNATS] = len(attempts), len(attempts)
			continue
		}
		for i, a := range attempts {
			if id.name == "operator" && i == 5 {
				continue // an operator may abort tx-c; that would change its outcome by design
			}
			counts["attempts"]++
			mark, before := v.mark(), eng.Stats()
			actx, cancel := context.WithTimeout(ctx, time.Second)
			subject, err := a.run(actx, nc)
			cancel()
			var got string
			switch {
			case v.sawSince(subject, mark, time.Second):
				got = refusedByNATS
			case errors.Is(err, errCoordinator):
				got = refusedByNatstx
			case err != nil:
				got = "failed: " + err.Error()
			case rejectedSince(subject, before):
				got = ignored
			default:
				got = allowed
			}
			counts[got]++
			expect := want[id.name][i]
			if expect == "" {
				expect = refusedByNATS
			}
			t.Logf("%-22s %-62s %s", id.name, a.name, got)
			if got != expect {
				t.Errorf("%s: %s: %s, want %s (error %v)", id.name, a.name, got, expect, err)
			}
		}
		nc.Close()
	}

	releaseOnce.Do(func() { close(release) })
	client, err := orchestrator.NewClient(cnc)
	if err != nil {
		t.Fatal(err)
	}
	outcome := func(id string) string {
		st, err := client.Status(ctx, id)
		if err != nil {
			return err.Error()
		}
		return st.State
	}
	waitFor(t, 30*time.Second, "tx-a aborted and tx-c committed, every decision acknowledged", func() bool {
		return outcome("tx-a") == "aborted" && outcome("tx-c") == "committed" && eng.Stats().InFlight == 0
	}, func() string { return "tx-a " + outcome("tx-a") + ", tx-c " + outcome("tx-c") })
	// inventory's consumer is still the coordinator's: a pull consumer,
	// delivering nowhere.
	cjs, err := jetstream.New(cnc)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"inventory", "payment"} {
		cons, err := cjs.Consumer(ctx, messages.CommandStream, messages.ConsumerName(name))
		if err != nil {
			t.Fatalf("%s's consumer: %v", name, err)
		}
		if c, want := cons.CachedInfo().Config, orchestrator.ParticipantConsumerConfig(name); c.DeliverSubject != "" || c.FilterSubject != want.FilterSubject ||
			c.AckWait != want.AckWait || c.MaxAckPending != want.MaxAckPending {
			t.Errorf("%s's consumer is not the coordinator's: %+v", name, c)
		}
	}
	for _, c := range []struct {
		id        string
		committed bool
	}{{"tx-a", false}, {"tx-b", true}, {"tx-c", true}} {
		for name, h := range handlers {
			com, ab := h.applied(c.id)
			if com != c.committed || (!c.committed && !ab && name == "inventory") {
				t.Errorf("%s at %s: committed %v, aborted %v; want committed %v", c.id, name, com, ab, c.committed)
			}
		}
	}
	total, refused, dropped := 0, 0, 0
	for _, id := range identities {
		c := byIdentity[id.name]
		total += c["attempts"]
		refused += c[refusedByNATS] + c[refusedByNatstx]
		dropped += c[ignored]
		report.Counts(t, fmt.Sprintf("security: %-22s %2d attempts: %2d refused by NATS, %d refused by the coordinator, %d ignored, %d allowed to its role",
			id.name, c["attempts"], c[refusedByNATS], c[refusedByNatstx], c[ignored], c[allowed]))
	}
	// Every forged reply that reached the coordinator was counted as
	// rejected, and nothing else was: the ignored attempts and no more.
	end := eng.Stats()
	if rose := end.MalformedReplies - atStart.MalformedReplies; rose != int64(dropped) {
		t.Errorf("the coordinator counted %d rejected replies during the attempts (%v before, %v after), want %d, one per ignored attempt",
			rose, atStart.RejectedReplies, end.RejectedReplies, dropped)
	}
	report.Counts(t, fmt.Sprintf("security: %d attempts, %d refused, %d ignored (the coordinator's rejected replies rose by %d); tx-a aborted, tx-b and tx-c committed at every participant, as without the attempts",
		total, refused, dropped, end.MalformedReplies-atStart.MalformedReplies))
}

// errCoordinator marks an error answer of the coordinator API.
var errCoordinator = errors.New("the coordinator answered an error")

// waitFor polls cond every 20ms until it holds, failing the test after
// limit with what and, if given, what state says then.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool, state ...func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			now := ""
			for _, s := range state {
				now += "; now " + s()
			}
			t.Fatalf("not within %v: %s%s", limit, what, now)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
