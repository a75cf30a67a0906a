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
	// keptOut: NATS carried a pull request or a consumer's creation meant
	// to have the server publish into decision records, and nothing
	// reached them (attempt.aims).
	keptOut = "carried, kept out of the decision records"
)

// The identities that try the hostile attempts.
const (
	noCredentials = "no credentials"
	asInventory   = "participant inventory"
	asOperator    = "operator"
)

// attempt is one hostile action: it returns the subject it used and its
// error; the test classifies the result into a verdict.
type attempt struct {
	name string
	run  func(ctx context.Context, nc *nats.Conn) (subject string, err error)
	// want is the verdict the attempt must get from an identity it names;
	// any other identity must be refused by NATS.
	want map[string]string
	// skip names an identity that does not try it.
	skip string
	// aims: the attempt tries to have the server itself publish into the
	// decision records of the transactions it aims at (a request's reply
	// subject, a push consumer's deliver subject), which NATS does not
	// check against the requester's permissions. If NATS carries it, its
	// verdict is keptOut only if no entry appears there.
	aims bool
	// after, if set, cleans up once the attempt is classified.
	after func(ctx context.Context, nc *nats.Conn)
}

// TestSecurityHostileIdentitiesChangeNothing is issue 13's acceptance test.
// A NATS server runs the configuration of `natstx auth init` (three
// accounts: NATSTX holds the coordinator, the stream and the buckets; the
// participants and the operator are each in an account of their own that
// imports natstx's JetStream API under messages.JetStreamAPIPrefix); a
// coordinator and two participants (inventory, payment) run with their own
// credentials. Two transactions are held in prepare while a client without
// credentials, the inventory participant's credentials and the operator's
// credentials each try to forge a commit, forge a vote for another
// participant, begin and abort through the API, read the command stream and
// the buckets, write the buckets, and create a push consumer of inventory's
// commands delivering into tx-a's decision record or into payment's commands
// (the participants' consumers are the coordinator's: nats-server#8274);
// and they try to have the server write into the decision records of tx-c
// (held in prepare) and tx-d (begun after the attempts): a pull request on
// inventory's consumer, and on a pull consumer of the status bucket they
// create, whose reply subject is such a record (`$KV.natstx_tx.<id>`:
// NATS does not check a request's reply subject against the requester's
// permissions; in one account the server's answer was stored there), and a
// push consumer of the status bucket delivering there. Every JetStream
// attempt is made under both API prefixes, `$JS.API` and
// `$JS.natstx.API`.
// Each attempt must be refused (by NATS permissions or by the coordinator),
// ignored (a forged reply the coordinator drops: its count of rejected
// replies for that reply subject rises, and rises by the ignored attempts
// alone), kept out of the decision records (carried by NATS, and no entry
// appears under tx-a, tx-c or tx-d, read with the coordinator's
// credentials), or be what the identity's role allows; after every attempt
// none of those three records exists. Afterwards tx-a, which payment votes
// against, is aborted everywhere, and tx-c and tx-d commit everywhere, with
// the coordinator's own decision records. The counts lines go through
// report.Counts.
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
	ctx := ctxFor(t, 4*time.Minute)
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
		// command), and it may not create it. It asks under the prefix: its
		// account has no JetStream, and imports natstx's API there.
		ownCreate := messages.JetStreamAPIPrefix + ".CONSUMER.CREATE." + messages.CommandStream + "." + messages.ConsumerName(name) + "." + messages.ParticipantFilter(name)
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
	// held in payment's prepare while they run; tx-d begins after them.
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

	// The decision records the attempts aim at, read with the coordinator's
	// credentials: none of these transactions has decided yet, so none may
	// have an entry until the test lets them decide.
	cjs, err := jetstream.New(cnc)
	if err != nil {
		t.Fatal(err)
	}
	records, err := cjs.KeyValue(ctx, orchestrator.RecordBucket)
	if err != nil {
		t.Fatal(err)
	}
	aimed := []string{"tx-c", "tx-d"}
	watched := append([]string{"tx-a"}, aimed...)
	// written returns the entries found under the watched keys, by key,
	// but those reported already (reported: the revision reported).
	reported := map[string]uint64{}
	written := func() map[string]string {
		found := map[string]string{}
		for _, id := range watched {
			gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			e, err := records.Get(gctx, id)
			cancel()
			switch {
			case err == nil && reported[id] != e.Revision():
				found[id] = fmt.Sprintf("%q (revision %d)", e.Value(), e.Revision())
				reported[id] = e.Revision()
			case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
				found[id] = err.Error()
			}
		}
		return found
	}
	if w := written(); len(w) > 0 {
		t.Fatalf("decision records before the attempts: %v", w)
	}

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
	// request sends body as JSON and tells an error answer: the
	// coordinator API's (a string) or the JetStream API's (an object).
	request := func(ctx context.Context, nc *nats.Conn, subject string, body any) (string, error) {
		data, _ := json.Marshal(body)
		m, err := nc.RequestWithContext(ctx, subject, data)
		if err != nil {
			return subject, err
		}
		var answer struct {
			Error  json.RawMessage    `json:"error"`
			Status *messages.TxStatus `json:"status"`
		}
		if json.Unmarshal(m.Data, &answer) == nil && len(answer.Error) > 0 {
			var coordinator string
			if json.Unmarshal(answer.Error, &coordinator) == nil {
				return subject, fmt.Errorf("%w: %s", errCoordinator, coordinator)
			}
			return subject, fmt.Errorf("%w: %s", errJetStream, answer.Error)
		}
		if _, isAbort := body.(messages.AbortRequest); isAbort && answer.Status != nil && answer.Status.State == "committed" {
			return subject, fmt.Errorf("%w: the transaction stays %s", errCoordinator, answer.Status.State)
		}
		return subject, nil
	}
	// The JetStream API under both prefixes: natstx's own in the NATSTX
	// account (and the only one of a single-account deployment), and where
	// the participants' and operators' accounts import it. Neither account
	// has JetStream, and their permissions allow nothing of the plain API
	// but $JS.API.INFO (whose answer, "JetStream not enabled for account",
	// tells a client to use the prefix): every attempt under $JS.API is
	// refused by NATS for them. Under the prefix each may do only what its
	// role needs.
	apis := []string{"$JS.API", messages.JetStreamAPIPrefix}
	// pushConsumer asks for inventory's consumer (the one name and filter
	// the participant could once create) as a push consumer delivering to
	// deliver.
	pushConsumer := func(ctx context.Context, nc *nats.Conn, api, deliver string) (string, error) {
		name, filter := messages.ConsumerName("inventory"), messages.ParticipantFilter("inventory")
		return request(ctx, nc, api+".CONSUMER.CREATE."+messages.CommandStream+"."+name+"."+filter, map[string]any{
			"stream_name": messages.CommandStream, "action": "create",
			"config": map[string]any{"durable_name": name, "filter_subject": filter, "deliver_subject": deliver, "ack_policy": "none", "deliver_policy": "all"}})
	}
	recordSubject := func(id string) string { return "$KV." + orchestrator.RecordBucket + "." + id }
	// pullInto sends a pull request on consumer of stream for each aimed
	// transaction, with that transaction's decision record as its reply
	// subject; then the same request with its own inbox, whose answer
	// comes once the server has answered the ones before: a consumer takes
	// the pull requests of one connection in order. A command that answer
	// brings (inventory's consumer acknowledges explicitly) goes back at
	// once.
	pullInto := func(ctx context.Context, nc *nats.Conn, api, stream, consumer string) (string, error) {
		subject := api + ".CONSUMER.MSG.NEXT." + stream + "." + consumer
		next := []byte(`{"batch":1,"no_wait":true}`)
		for _, id := range aimed {
			if err := nc.PublishRequest(subject, recordSubject(id), next); err != nil {
				return subject, err
			}
		}
		m, err := nc.RequestWithContext(ctx, subject, next)
		if err != nil {
			return subject, err
		}
		if m.Header.Get("Status") == "" && strings.HasPrefix(m.Reply, "$JS.ACK."+messages.CommandStream+".") {
			err = nc.Publish(m.Reply, []byte("-NAK"))
		}
		return subject, err
	}
	// statusConsumer creates a consumer of the status bucket's stream
	// named name with config (ack none, from the first entry, gone after
	// a minute unused), as an operator's watch does.
	statusConsumer := func(ctx context.Context, nc *nats.Conn, api, name string, config map[string]any) (string, error) {
		config["name"], config["ack_policy"], config["deliver_policy"], config["inactive_threshold"] = name, "none", "all", int64(time.Minute)
		return request(ctx, nc, api+".CONSUMER.CREATE."+messages.StatusStream+"."+name, map[string]any{"stream_name": messages.StatusStream, "config": config})
	}
	deleteStatusConsumers := func(api string, names ...string) func(ctx context.Context, nc *nats.Conn) {
		return func(ctx context.Context, nc *nats.Conn) {
			for _, name := range names {
				dctx, cancel := context.WithTimeout(ctx, time.Second)
				_, _ = request(dctx, nc, api+".CONSUMER.DELETE."+messages.StatusStream+"."+name, nil)
				cancel()
			}
		}
	}
	pushNames := make([]string, len(aimed))
	for i, id := range aimed {
		pushNames[i] = "hostile-push-" + id
	}

	attempts := []attempt{
		{name: "forge a commit of tx-a to inventory", run: func(ctx context.Context, nc *nats.Conn) (string, error) {
			return publish(ctx, nc, command("tx-a", messages.OpCommit, "inventory"))
		}},
		{name: "forge an abort of tx-c to payment", run: func(ctx context.Context, nc *nats.Conn) (string, error) {
			return publish(ctx, nc, command("tx-c", messages.OpAbort, "payment"))
		}},
		{name: "forge payment's commit vote for tx-a on payment's reply subject", run: func(_ context.Context, nc *nats.Conn) (string, error) {
			return plain(nc, messages.ReplySubject(inst, "payment"), yesFromPayment)
		}},
		{name: "forge payment's commit vote for tx-a on inventory's reply subject", run: func(_ context.Context, nc *nats.Conn) (string, error) {
			return plain(nc, messages.ReplySubject(inst, "inventory"), yesFromPayment)
		}, want: map[string]string{
			asInventory: ignored, // its own reply subject: the coordinator drops a reply naming another participant
		}},
		{name: "begin a transaction through the API", run: func(ctx context.Context, nc *nats.Conn) (string, error) {
			return request(ctx, nc, messages.APIBegin, messages.BeginRequest{Participants: []messages.ParticipantSpec{{Name: "inventory", Payload: []byte("1")}}, Wait: true})
		}, want: map[string]string{asOperator: allowed}}, // the operator begins transactions
		// The operator may abort an undecided transaction, which would
		// change tx-c's outcome by design: it does not try.
		{name: "abort tx-c (preparing) through the API", run: func(ctx context.Context, nc *nats.Conn) (string, error) {
			return request(ctx, nc, messages.APIAbort(inst), messages.AbortRequest{ID: "tx-c", Reason: "hostile"})
		}, skip: asOperator},
		{name: "abort tx-b (committed) through the API", run: func(ctx context.Context, nc *nats.Conn) (string, error) {
			return request(ctx, nc, messages.APIAbort(inst), messages.AbortRequest{ID: "tx-b", Reason: "hostile"})
		}, want: map[string]string{asOperator: refusedByNatstx}}, // tx-b is committed
		{name: "subscribe to every command", run: func(_ context.Context, nc *nats.Conn) (string, error) {
			sub, err := nc.SubscribeSync(messages.CommandSubjects)
			if err == nil {
				err = nc.Flush()
				defer func() { _ = sub.Unsubscribe() }()
			}
			return messages.CommandSubjects, err
		}},
		{name: "write tx-a's status", run: func(ctx context.Context, nc *nats.Conn) (string, error) {
			return publish(ctx, nc, &nats.Msg{Subject: "$KV." + messages.StatusBucket + ".tx-a", Data: []byte(`{"id":"tx-a","state":"committed"}`)})
		}},
		{name: "write tx-a's decision record", run: func(ctx context.Context, nc *nats.Conn) (string, error) {
			return publish(ctx, nc, &nats.Msg{Subject: recordSubject("tx-a"), Data: []byte(`commit`)})
		}},
	}
	for _, api := range apis {
		under := " under " + api
		prefixed := api == messages.JetStreamAPIPrefix
		// onlyPrefixed is want for an attempt whose verdict is v for id
		// under the prefix, and refused by NATS under $JS.API.
		onlyPrefixed := func(id, v string) map[string]string {
			if !prefixed {
				return nil
			}
			return map[string]string{id: v}
		}
		attempts = append(attempts, []attempt{
			{name: "read a message of the command stream" + under, run: func(ctx context.Context, nc *nats.Conn) (string, error) {
				return request(ctx, nc, api+".STREAM.MSG.GET."+messages.CommandStream, map[string]any{"seq": 1})
			}},
			{name: "create a consumer of payment's commands" + under, run: func(ctx context.Context, nc *nats.Conn) (string, error) {
				filter := messages.ParticipantFilter("payment")
				return request(ctx, nc, api+".CONSUMER.CREATE."+messages.CommandStream+".spy."+filter,
					map[string]any{"stream_name": messages.CommandStream, "config": map[string]any{"name": "spy", "filter_subject": filter, "ack_policy": "none"}})
			}},
			{name: "pull from payment's consumer" + under, run: func(ctx context.Context, nc *nats.Conn) (string, error) {
				return request(ctx, nc, api+".CONSUMER.MSG.NEXT."+messages.CommandStream+"."+messages.ConsumerName("payment"), map[string]any{"batch": 1, "no_wait": true})
			}},
			{name: "read tx-a's decision record" + under, run: func(ctx context.Context, nc *nats.Conn) (string, error) {
				return request(ctx, nc, api+".DIRECT.GET.KV_"+orchestrator.RecordBucket+"."+recordSubject("tx-a"), nil)
			}},
			// The operator reads statuses, under the prefix, where its
			// account imports the status bucket's reads.
			{name: "read tx-a's status" + under, run: func(ctx context.Context, nc *nats.Conn) (string, error) {
				return request(ctx, nc, api+".DIRECT.GET."+messages.StatusStream+".$KV."+messages.StatusBucket+".tx-a", nil)
			}, want: onlyPrefixed(asOperator, allowed)},
			// NATS does not check a push consumer's deliver subject
			// against its creator's permissions (nats-server#8274):
			// whoever may create a consumer of inventory's commands may
			// have the server publish them where it may not publish
			// itself. So nobody but the coordinator may create one,
			// inventory included.
			{name: "push inventory's commands into tx-a's decision record" + under, run: func(ctx context.Context, nc *nats.Conn) (string, error) {
				return pushConsumer(ctx, nc, api, recordSubject("tx-a"))
			}},
			{name: "push inventory's commands into payment's commands" + under, run: func(ctx context.Context, nc *nats.Conn) (string, error) {
				return pushConsumer(ctx, nc, api, messages.CommandSubject("payment", "tx-c"))
			}},
			// The attack the accounts close: a pull request is the one
			// request a participant may send on its consumer, and NATS
			// does not check its reply subject, where the server publishes
			// the answer (a command, or an empty "404 No Messages"). In
			// one account the answer to a reply subject
			// $KV.natstx_tx.<id> was stored as <id>'s decision record,
			// which left that transaction in doubt. Under $JS.API the
			// participant is refused: its account has no JetStream. Under
			// the prefix the request crosses into NATSTX through an
			// import, which replaces its reply subject by one that routes
			// the answer back into the participants' account, where no
			// stream stores $KV.natstx_tx.<id>.
			{name: "pull from inventory's consumer with tx-c's and tx-d's decision records as reply subjects" + under, run: func(ctx context.Context, nc *nats.Conn) (string, error) {
				return pullInto(ctx, nc, api, messages.CommandStream, messages.ConsumerName("inventory"))
			}, want: onlyPrefixed(asInventory, keptOut), aims: true},
			// The operator's account imports consumer creation and pulls
			// on the status bucket's stream (for watches): the same attack
			// with a consumer of its own, kept out the same way. Its
			// filter is a key without a status, so that every answer is
			// the server's empty "404 No Messages": a status document
			// would carry the expected revision of its compare-and-set
			// write (Nats-Expected-Last-Subject-Sequence), which the
			// decision bucket refuses unless it happens to match.
			{name: "pull from a new consumer of the status bucket with tx-c's and tx-d's decision records as reply subjects" + under, run: func(ctx context.Context, nc *nats.Conn) (string, error) {
				if subject, err := statusConsumer(ctx, nc, api, "hostile-pull", map[string]any{"filter_subject": "$KV." + messages.StatusBucket + ".no-such-transaction"}); err != nil {
					return subject, err
				}
				return pullInto(ctx, nc, api, messages.StatusStream, "hostile-pull")
			}, want: onlyPrefixed(asOperator, keptOut), aims: true, after: deleteStatusConsumers(api, "hostile-pull")},
			// And a push consumer of the status bucket's stream, which an
			// operator may create (its watches are): it lives in NATSTX,
			// so its deliver subject is NATSTX's $KV.natstx_tx.<id>. The
			// server delivers a push consumer's messages only while a
			// client subscribes to its deliver subject, and a stream that
			// would store them does not count (docs/SECURITY.md, "Not
			// covered"): nothing is delivered.
			{name: "push the status bucket into tx-c's and tx-d's decision records" + under, run: func(ctx context.Context, nc *nats.Conn) (string, error) {
				for i, id := range aimed {
					if subject, err := statusConsumer(ctx, nc, api, pushNames[i], map[string]any{"deliver_subject": recordSubject(id)}); err != nil {
						return subject, err
					}
				}
				return api + ".CONSUMER.CREATE." + messages.StatusStream + "." + pushNames[0], nil
			}, want: onlyPrefixed(asOperator, keptOut), aims: true, after: deleteStatusConsumers(api, pushNames...)},
		}...)
	}
	identities := []struct{ name, creds, inbox string }{
		{noCredentials, "", ""},
		{asInventory, creds("participant-inventory"), messages.ParticipantInbox("inventory")},
		{asOperator, creds("operator"), messages.OperatorInbox()},
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
	// writtenWithin polls the watched records for limit: an attempt that
	// aims at them has been answered (pullInto) or has its consumers
	// (created, delivering at once if they deliver at all) by the time it
	// returns, and the server stores what it publishes there within
	// milliseconds.
	writtenWithin := func(limit time.Duration) map[string]string {
		deadline := time.Now().Add(limit)
		for {
			if w := written(); len(w) > 0 || time.Now().After(deadline) {
				return w
			}
			time.Sleep(50 * time.Millisecond)
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
			for _, a := range attempts {
				if a.skip != id.name {
					counts["attempts"]++
					counts[refusedByNATS]++
				}
			}
			continue
		}
		for _, a := range attempts {
			if a.skip == id.name {
				continue
			}
			counts["attempts"]++
			mark, before := v.mark(), eng.Stats()
			actx, cancel := context.WithTimeout(ctx, time.Second)
			subject, err := a.run(actx, nc)
			cancel()
			var got string
			var wrote map[string]string
			switch {
			case v.sawSince(subject, mark, time.Second):
				got = refusedByNATS
			case errors.Is(err, errCoordinator):
				got = refusedByNatstx
			case err != nil:
				got = "failed: " + err.Error()
			case a.aims:
				if wrote = writtenWithin(time.Second); len(wrote) == 0 {
					got = keptOut
				} else {
					got = "wrote decision records"
				}
			case rejectedSince(subject, before):
				got = ignored
			default:
				got = allowed
			}
			if a.after != nil {
				a.after(ctx, nc)
			}
			if wrote == nil {
				wrote = written()
			}
			counts[got]++
			expect := a.want[id.name]
			if expect == "" {
				expect = refusedByNATS
			}
			t.Logf("%-22s %-110s %s", id.name, a.name, got)
			if got != expect {
				t.Errorf("%s: %s: %s, want %s (error %v)", id.name, a.name, got, expect, err)
			}
			// Whatever the verdict: an entry there would leave its
			// transaction in doubt.
			for key, e := range wrote {
				t.Errorf("%s: %s: %s's decision record written before %s decided: %s", id.name, a.name, key, key, e)
			}
		}
		nc.Close()
	}

	releaseOnce.Do(func() { close(release) })
	// tx-d, whose decision record two attempts of each identity aimed at
	// before it began, runs as any transaction does.
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	out, err := eng.Execute(dctx, both("tx-d"))
	dcancel()
	if err != nil || !out.Committed() {
		t.Errorf("tx-d, begun after the attempts: %s, %v; want committed", out.State, err)
	}
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
	waitFor(t, 30*time.Second, "tx-a aborted, tx-c and tx-d committed, every decision acknowledged", func() bool {
		return outcome("tx-a") == "aborted" && outcome("tx-c") == "committed" && outcome("tx-d") == "committed" && eng.Stats().InFlight == 0
	}, func() string {
		return "tx-a " + outcome("tx-a") + ", tx-c " + outcome("tx-c") + ", tx-d " + outcome("tx-d")
	})
	// The decision records of tx-c and tx-d are the coordinator's: a
	// commit, naming its own transaction.
	for _, id := range aimed {
		e, err := records.Get(ctx, id)
		if err != nil {
			t.Errorf("%s's decision record: %v", id, err)
			continue
		}
		var rec struct{ ID, State string }
		if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.ID != id || rec.State != "committed" {
			t.Errorf("%s's decision record is %q, want the coordinator's committed record of %s", id, e.Value(), id)
		}
	}
	// inventory's consumer is still the coordinator's: a pull consumer,
	// delivering nowhere.
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
	}{{"tx-a", false}, {"tx-b", true}, {"tx-c", true}, {"tx-d", true}} {
		for name, h := range handlers {
			com, ab := h.applied(c.id)
			if com != c.committed || (!c.committed && !ab && name == "inventory") {
				t.Errorf("%s at %s: committed %v, aborted %v; want committed %v", c.id, name, com, ab, c.committed)
			}
		}
	}
	total, refused, dropped, kept := 0, 0, 0, 0
	for _, id := range identities {
		c := byIdentity[id.name]
		total += c["attempts"]
		refused += c[refusedByNATS] + c[refusedByNatstx]
		dropped += c[ignored]
		kept += c[keptOut]
		report.Counts(t, fmt.Sprintf("security: %-22s %2d attempts: %2d refused by NATS, %d refused by the coordinator, %d ignored, %d kept out of the decision records, %d allowed to its role",
			id.name, c["attempts"], c[refusedByNATS], c[refusedByNatstx], c[ignored], c[keptOut], c[allowed]))
	}
	// Every forged reply that reached the coordinator was counted as
	// rejected, and nothing else was: the ignored attempts and no more.
	end := eng.Stats()
	if rose := end.MalformedReplies - atStart.MalformedReplies; rose != int64(dropped) {
		t.Errorf("the coordinator counted %d rejected replies during the attempts (%v before, %v after), want %d, one per ignored attempt",
			rose, atStart.RejectedReplies, end.RejectedReplies, dropped)
	}
	report.Counts(t, fmt.Sprintf("security: %d attempts, %d refused, %d ignored (the coordinator's rejected replies rose by %d), %d kept out of the decision records; tx-a aborted, tx-b, tx-c and tx-d committed at every participant, as without the attempts",
		total, refused, dropped, end.MalformedReplies-atStart.MalformedReplies, kept))
}

// errCoordinator marks an error answer of the coordinator API.
var errCoordinator = errors.New("the coordinator answered an error")

// errJetStream marks an error answer of the JetStream API.
var errJetStream = errors.New("the JetStream API answered an error")

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
