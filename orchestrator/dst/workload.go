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
	id      string
	parts   []string
	votes   map[string]bool // each participant's vote
	timeout time.Duration
	// coord is the instance whose Begin accepted it (or the last one
	// asked), inc its incarnation, beginAt when that call started: the
	// transaction's deadline is no sooner than beginAt+timeout.
	coord   string
	inc     int
	beginAt time.Duration
	begun   bool
	// ownerAborted: the incarnation that runs it wrote an aborting or
	// aborted status (it decided abort itself).
	ownerAborted bool
	// premature: an abort was recorded before beginAt+timeout while the
	// incarnation of coord asked was alive (checked if that Begin succeeded).
	premature string
	// refused: a retried Begin was refused as a duplicate (an earlier attempt
	// claimed the ID).
	refused bool
	outcome outcomeKind
	inDoubt bool
}

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
		w := &workTx{id: fmt.Sprintf("tx%05d", i+1), votes: map[string]bool{}}
		if s.rng.Float64() < s.f.LongTimeout {
			w.timeout = s.between(minLongTimeout, maxLongTimeout)
		} else {
			w.timeout = s.between(minPrepareTimeout, maxPrepareTimeout)
		}
		n := 2 + s.rng.IntN(4)
		for _, j := range s.rng.Perm(len(s.parts))[:n] {
			name := s.parts[j].name
			w.parts = append(w.parts, name)
			w.votes[name] = s.rng.Float64() >= s.f.VoteNo
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

// begin begins w through a random subscribed instance, with the caller's ID;
// the client retries (the same ID, any instance) while the call fails,
// until one accepts it or refuses it as a duplicate.
func (s *sim) begin(w *workTx) {
	s.cdrv.Go(func() {
		defer func() { s.pending-- }()
		req := orchestrator.Request{ID: w.id, Timeout: w.timeout}
		var desc []string
		for _, name := range w.parts {
			vote := "yes"
			if !w.votes[name] {
				vote = "no"
			}
			req.Participants = append(req.Participants, orchestrator.Participant{Name: name, Payload: []byte(vote)})
			desc = append(desc, name+":"+vote)
		}
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
			w.coord, w.inc, w.beginAt, w.premature, w.ownerAborted = c.name, c.inc, s.s.now, "", false
			_, err := c.eng.Begin(s.ctx, req)
			switch {
			case err == nil:
				w.begun = true
				s.tracef("%s %s begun participants=%s timeout=%v", c.name, w.id, strings.Join(desc, ","), w.timeout)
				return
			case errors.Is(err, orchestrator.ErrDuplicateTx):
				if attempt == 0 {
					s.violate("%s: a fresh ID was refused as a duplicate by %s: %v", w.id, c.name, err)
				}
				w.refused = true
				s.st.BeginsRefused++
				s.tracef("%s %s begin refused: %v", c.name, w.id, err)
				return
			}
			s.tracef("%s %s begin failed: %v; the client tries again", c.name, w.id, err)
		}
		s.violate("%s: no instance accepted or refused it in 2000 attempts", w.id)
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
