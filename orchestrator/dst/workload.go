package dst

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/natstx/natstx/orchestrator"
)

// workTx is one transaction of the workload and what the checker learns of
// it.
type workTx struct {
	id    string
	parts []string
	votes map[string]bool // each participant's vote: yes (or read-only) or no
	// readOnly: the participants that vote read-only.
	readOnly map[string]bool
	// sentPrepare and sentOnePhase: a coordinator sent it prepare, or
	// commit-one-phase (never both: onCommand checks).
	sentPrepare, sentOnePhase bool
	timeout                   time.Duration
	// clientBegin: coord is the instance whose Begin accepted it (or the
	// last one asked); inc is that instance's incarnation, beginAt when
	// that call started: the transaction's deadline is no sooner than
	// beginAt+timeout.
	clientBegin
	inc     int
	beginAt time.Duration
	// ownerAborted: the incarnation that runs it wrote an aborting or
	// aborted status (it decided abort itself).
	ownerAborted bool
	// premature: an abort was recorded before beginAt+timeout while the
	// incarnation of coord asked was alive (checked if that Begin succeeded).
	premature string
	outcome   outcomeKind
	inDoubt   bool
}

// onePhase reports whether w was run as a one-phase commit: a coordinator
// sent its only participant commit-one-phase, which decides it. (A
// coordinator sends prepare instead to a participant it has not heard from
// lately.)
func (w *workTx) onePhase() bool { return w.sentOnePhase }

type outcomeKind uint8

const (
	outcomeAborted outcomeKind = iota
	outcomeCommitted
)

// plan draws the workload and schedules its begins, client aborts and the
// moment faults stop.
func (s *sim) plan() {
	at := time.Duration(0)
	for i := range s.cfg.Transactions {
		at += time.Duration(s.rng.ExpFloat64() * float64(meanArrival))
		w := &workTx{id: fmt.Sprintf("tx%05d", i+1), votes: map[string]bool{}, readOnly: map[string]bool{}}
		if s.rng.Float64() < s.f.LongTimeout {
			w.timeout = s.between(minLongTimeout, maxLongTimeout)
		} else {
			w.timeout = s.between(minPrepareTimeout, maxPrepareTimeout)
		}
		n := 2 + s.rng.IntN(4)
		for _, j := range s.rng.Perm(len(s.parts))[:n] {
			name := s.parts[j].name
			w.parts = append(w.parts, name)
			// One draw for both, so that runs without read-only votes
			// draw what they drew before there were any.
			x := s.rng.Float64()
			w.votes[name] = x >= s.f.VoteNo
			w.readOnly[name] = w.votes[name] && x >= 1-s.f.ReadOnly
		}
		if s.f.OnePhase > 0 && s.rng.Float64() < s.f.OnePhase {
			w.parts = w.parts[:1] // commit-one-phase, once its coordinator heard from it
		}
		s.work = append(s.work, w)
		s.workBy[w.id] = w
		s.pending++
		s.s.at(at, func() { s.begin(w) })
		if s.rng.Float64() < s.f.ClientAbort {
			s.pending++
			s.s.at(at+s.between(0, w.timeout*3/2), func() { s.clientAbort(w) })
		}
	}
	s.planSagas(at)
	s.s.at(at+healAfter, s.heal)
}

// begin begins w through a random subscribed instance, with the caller's ID,
// retrying as beginRetrying says.
func (s *sim) begin(w *workTx) {
	req := orchestrator.Request{ID: w.id, Timeout: w.timeout}
	var desc []string
	for _, name := range w.parts {
		vote := "yes"
		switch {
		case !w.votes[name]:
			vote = "no"
		case w.readOnly[name]:
			vote = "read-only"
		}
		req.Participants = append(req.Participants, orchestrator.Participant{Name: name, Payload: []byte(vote)})
		desc = append(desc, name+":"+vote)
	}
	s.beginRetrying(w.id, "", &w.clientBegin, func(c *coord) error {
		w.inc, w.beginAt, w.premature, w.ownerAborted = c.inc, s.s.now, "", false
		_, err := c.eng.Begin(s.ctx, req)
		return err
	}, func() string {
		return fmt.Sprintf("participants=%s timeout=%v", strings.Join(desc, ","), w.timeout)
	})
}

// clientBegin is what the client learns as it begins a transaction or a
// saga (beginRetrying).
type clientBegin struct {
	// coord is the instance whose begin accepted it (or the last one asked).
	coord string
	begun bool
	// refused: a retried begin was refused as a duplicate (an earlier
	// attempt claimed the ID).
	refused bool
}

// beginRetrying begins the transaction or saga id through a random
// subscribed instance, with the caller's ID; the client retries (the same
// ID, any instance) while the call fails, until one accepts it or refuses it
// as a duplicate, and notes in b what it learns. kind names it in the trace
// and the violations ("" for a transaction, "saga " for a saga); call asks
// c, already noted as b.coord, to begin it; describe says in the trace what
// was begun.
//
// A begin refused with ErrOverloaded (no room: admission, or MaxInFlight)
// never started and sent nothing, so it claimed no ID either: a duplicate
// refusal after only such attempts is a violation, as on the first.
func (s *sim) beginRetrying(id, kind string, b *clientBegin, call func(c *coord) error, describe func() string) {
	s.cdrv.Go(func() {
		defer func() { s.pending-- }()
		// claimable: an earlier attempt failed in a way that may have
		// claimed the ID.
		claimable := false
		for attempt := 0; attempt < 2000; attempt++ {
			if attempt > 0 {
				s.st.BeginRetries++
				if !s.cdrv.Sleep(100*time.Millisecond, nil) {
					return
				}
			}
			c := s.pickCoord()
			if c == nil {
				continue
			}
			b.coord = c.name
			err := call(c)
			switch {
			case err == nil:
				b.begun = true
				s.tracef("%s %s %sbegun %s", c.name, id, kind, describe())
				return
			case errors.Is(err, orchestrator.ErrDuplicateTx):
				if !claimable {
					s.violate("%s: a fresh %sID (no earlier attempt can have claimed it) was refused as a duplicate by %s: %v", id, kind, c.name, err)
				}
				b.refused = true
				s.st.BeginsRefused++
				s.tracef("%s %s %sbegin refused: %v", c.name, id, kind, err)
				return
			case errors.Is(err, orchestrator.ErrOverloaded):
				s.st.BeginsOverloaded++
			default:
				claimable = true
			}
			s.tracef("%s %s %sbegin failed: %v; the client tries again", c.name, id, kind, err)
		}
		s.violate("%s: no instance accepted or refused its %sbegin in 2000 attempts", id, kind)
	})
}

// clientAbort asks the instance that began w to abort it.
func (s *sim) clientAbort(w *workTx) {
	s.cdrv.Go(func() {
		defer func() { s.pending-- }()
		if !w.begun {
			return
		}
		var c *coord
		for _, x := range s.coords {
			if x.name == w.coord {
				c = x
			}
		}
		if c == nil || !c.subscribed() {
			return
		}
		s.st.ClientAborts++
		ok, err := c.eng.Abort(w.id, "client gave up")
		s.tracef("%s %s client abort: aborting=%v err=%v", c.name, w.id, ok, err)
	})
}

func joinNames(ns []string) string { return strings.Join(ns, ",") }
