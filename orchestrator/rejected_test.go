package orchestrator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants/conformance"
)

// TestAParticipantWhoseRepliesAreMalformedIsNamedInTheAbortReason: a
// participant that answers every command, but with a reply the coordinator
// cannot read, gets a timeout reason that says it answered and why its
// replies were rejected, in the status too; the rejections are counted by
// participant. The three mistakes a peer in another language makes most:
// a version "1.0", header names in lower case, a missing attempt.
func TestAParticipantWhoseRepliesAreMalformedIsNamedInTheAbortReason(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(h nats.Header) nats.Header
		why   string // in the reason
	}{
		{"version 1.0", conformance.VersionOneDotZero, `"1.0"`},
		{"lower-case header names", func(h nats.Header) nats.Header {
			low := nats.Header{}
			for k, vs := range h {
				low[strings.ToLower(k)] = vs
			}
			return low
		}, "natstx-version is there, but header names are case-sensitive"},
		{"no attempt", func(h nats.Header) nats.Header { h.Del(messages.HeaderAttempt); return h }, "header Natstx-Attempt is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) { testMalformedRepliesNamed(t, tc.spoil, tc.why) })
	}
}

func testMalformedRepliesNamed(t *testing.T, spoil func(nats.Header) nats.Header, why string) {
	f := newFixture(t, orchestrator.Config{PrepareTimeout: time.Second})
	f.participant("good", yes)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, stop := conformance.StartMalformedReplier(t, f.nc, "sloppy", spoil)
	defer stop()

	out, err := f.eng.Execute(ctx, orchestrator.Request{Participants: parts("good", "sloppy")})
	if err != nil {
		t.Fatal(err)
	}
	if out.Committed() || !out.TimedOut || !strings.Contains(out.Reason, "sloppy answered, but its replies were rejected") || !strings.Contains(out.Reason, why) {
		t.Fatalf("outcome %s %q: want a timeout naming sloppy's rejected replies and why (%s)", out.State, out.Reason, why)
	}
	if strings.Contains(out.Reason, "is a participant of that name running") {
		t.Fatalf("reason %q says sloppy may not be running; it answered", out.Reason)
	}
	st := f.eng.Stats()
	if st.RejectedReplies["sloppy"] < 1 || st.RejectedReplies["good"] != 0 {
		t.Fatalf("rejected replies by participant: %v", st.RejectedReplies)
	}
	c := newClient(t, f)
	waitFor(t, func() bool {
		s, err := c.Status(ctxT(t, 5*time.Second), out.ID)
		// aborting: sloppy's acks of abort are rejected too, so it is re-sent.
		return err == nil && (s.State == "aborting" || s.State == "aborted") && len(s.Participants) == 2 && strings.Contains(s.Participants[1].Rejected, why)
	}, "the status to show sloppy's rejected replies")
}

// TestOldestInFlightAndPhaseLatencies: a transaction held at prepare shows
// as the oldest in flight for as long as it is held; once it ends nothing
// is in flight, and each phase's histogram counted it once, its decide
// phase no shorter than the hold.
func TestOldestInFlightAndPhaseLatencies(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	release := make(chan struct{})
	f.participant("slow", holding(release, nil))
	if got := f.eng.OldestInFlight(); got != 0 {
		t.Fatalf("nothing runs, oldest %v", got)
	}
	id, err := f.eng.Begin(ctxT(t, 5*time.Second), orchestrator.Request{Participants: parts("slow")})
	if err != nil {
		t.Fatal(err)
	}
	const hold = 300 * time.Millisecond
	time.Sleep(hold)
	if got := f.eng.OldestInFlight(); got < hold {
		t.Fatalf("held for %v, oldest in flight %v", hold, got)
	}
	close(release)
	if out, err := f.eng.Wait(ctxT(t, 10*time.Second), id); err != nil || !out.Committed() {
		t.Fatalf("%s %v", out.State, err)
	}
	waitFor(t, func() bool { return f.eng.Stats().InFlight == 0 }, "the transaction to end")
	if got := f.eng.OldestInFlight(); got != 0 {
		t.Fatalf("nothing runs, oldest %v", got)
	}
	st := f.eng.Stats()
	if st.DecideLatency.Count != 1 || st.CompleteLatency.Count != 1 || st.DecideLatency.Sum < hold.Seconds() {
		t.Fatalf("decide %+v, complete %+v", st.DecideLatency, st.CompleteLatency)
	}
	if last := st.DecideLatency.Cumulative[len(st.DecideLatency.Cumulative)-1]; last != 1 {
		t.Fatalf("the decide histogram's last bucket holds %d, want 1", last)
	}
}

// TestRequestsAreAnsweredOnlyOnAnInbox: a request to the coordinator API,
// or an audit to a participant, whose reply subject points into a bucket
// (or at a protocol subject) is dropped unanswered: the coordinator may
// write the decision records, and its answer would have been stored as
// one. Requests on one subscription are handled in order, so once a good
// request after the bad one is answered, the bad one was handled.
func TestRequestsAreAnsweredOnlyOnAnInbox(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	f.participant("a", yes)
	out, err := f.eng.Execute(ctxT(t, 10*time.Second), orchestrator.Request{Participants: parts("a")})
	if err != nil || !out.Committed() {
		t.Fatalf("%v %v", out.State, err)
	}
	js, err := jetstream.New(f.nc)
	if err != nil {
		t.Fatal(err)
	}
	records, err := js.KeyValue(ctxT(t, 5*time.Second), orchestrator.RecordBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		subject string
		body    string
	}{
		{messages.APIStatus, `{"id":"` + out.ID + `"}`},
		{messages.APIOutcome, `{"id":"` + out.ID + `","participant":"a"}`},
		{messages.AuditSubject("a"), `{"ids":["` + out.ID + `"]}`},
	} {
		for _, reply := range []string{"$KV." + orchestrator.RecordBucket + ".victim", "natstx.reply.c1.a"} {
			if err := f.nc.PublishRequest(tc.subject, reply, []byte(tc.body)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.nc.Request(tc.subject, []byte(tc.body), 5*time.Second); err != nil {
			t.Fatalf("%s: the request with an inbox was not answered: %v", tc.subject, err)
		}
		if e, err := records.Get(ctxT(t, 5*time.Second), "victim"); err == nil {
			t.Fatalf("%s: an answer was stored as the decision record of victim: %q", tc.subject, e.Value())
		}
	}
	if st := f.eng.Stats(); st.MalformedReplies != 0 {
		t.Errorf("%d malformed replies: an answer reached the coordinator's reply subject", st.MalformedReplies)
	}
}
