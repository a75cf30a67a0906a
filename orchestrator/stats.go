package orchestrator

import (
	"sync"
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds, in seconds, of the phase latency
// histograms (StatsSnapshot.DecideLatency, CompleteLatency).
var LatencyBuckets = []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60}

// latency counts durations into LatencyBuckets (and one more for the rest).
type latency struct {
	counts [16]atomic.Uint64 // len(LatencyBuckets)+1
	sumNs  atomic.Int64
}

func (l *latency) observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	s, i := d.Seconds(), 0
	for i < len(LatencyBuckets) && s > LatencyBuckets[i] {
		i++
	}
	l.counts[i].Add(1)
	l.sumNs.Add(int64(d))
}

func (l *latency) snapshot() Histogram {
	h := Histogram{Buckets: LatencyBuckets, Cumulative: make([]uint64, len(LatencyBuckets))}
	var n uint64
	for i := range LatencyBuckets {
		n += l.counts[i].Load()
		h.Cumulative[i] = n
	}
	h.Count = n + l.counts[len(LatencyBuckets)].Load()
	h.Sum = time.Duration(l.sumNs.Load()).Seconds()
	return h
}

// Histogram is a snapshot of a latency histogram: Cumulative[i] durations
// were at most Buckets[i] seconds; Count is every observation, Sum their
// total in seconds.
type Histogram struct {
	Buckets    []float64
	Cumulative []uint64
	Count      uint64
	Sum        float64
}

// Stats are the engine's counters.
type Stats struct {
	Begun, Committed, Aborted, Timeouts, Rejected atomic.Int64
	Resends, PublishErrors, PersistErrors         atomic.Int64
	MalformedReplies, StrayReplies, Ignored       atomic.Int64
	Recovered, InDoubtQueries, CommitsRefused     atomic.Int64
	OrphansAborted, SweepsIncomplete              atomic.Int64
	OnePhaseTakeovers                             atomic.Int64
	SagasCompleted, SagasCompensated, SagasStuck  atomic.Int64
	Fenced                                        atomic.Int64
	Batches, Batched                              atomic.Int64
	WriteBatches, WritesBatched, BatchesRefused   atomic.Int64
	CommandsReplaced                              atomic.Int64
	SagasBegun                                    atomic.Int64
	Waited                                        atomic.Int64
	InFlight                                      *atomic.Int64
	admission                                     *admission

	mu         sync.Mutex
	rejectedBy map[string]int64

	// abortedBy counts aborted transactions by AbortCauses.
	abortedBy [len(AbortCauses)]atomic.Int64

	decide, complete, write, sagas latency
}

// AbortCauses are the classes of StatsSnapshot.AbortedBy: a participant
// voted no; a vote was missing at the deadline; an operator aborted it; its
// caller gave up (its context ended while preparing); the commit decision
// lost to an abort recorded first; its coordinator died undecided and
// another instance aborted it.
var AbortCauses = [...]string{"vote", "timeout", "operator", "caller", "refused", "orphan"}

// The indexes of AbortCauses.
const (
	causeVote = iota
	causeTimeout
	causeOperator
	causeCaller
	causeRefused
	causeOrphan
)

// maxRejectedNames bounds the participant names rejected replies are
// counted by (a reply subject can name anything); the rest count under
// OtherParticipants.
const maxRejectedNames = 1024

// OtherParticipants is the key of StatsSnapshot.RejectedReplies that counts
// the rejected replies of names past the first 1,024.
const OtherParticipants = "(others)"

// rejected counts a rejected reply on participant's reply subject.
func (s *Stats) rejected(participant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rejectedBy == nil {
		s.rejectedBy = make(map[string]int64)
	}
	if _, known := s.rejectedBy[participant]; !known && len(s.rejectedBy) >= maxRejectedNames {
		participant = OtherParticipants
	}
	s.rejectedBy[participant]++
}

// StatsSnapshot is a copy of the counters at one moment.
type StatsSnapshot struct {
	// Begun, Committed and Aborted count transactions; Timeouts counts aborts
	// for a missing vote; Rejected counts Begin calls refused for overload.
	Begun, Committed, Aborted, Timeouts, Rejected int64
	// Resends counts commands sent again; PublishErrors and PersistErrors
	// count failed publishes and failed decision writes (both retried).
	Resends, PublishErrors, PersistErrors int64
	// MalformedReplies counts replies that did not decode; StrayReplies
	// replies for transactions this engine does not know; Ignored events the
	// state machine ignored (duplicate or late votes, stale timers).
	MalformedReplies, StrayReplies, Ignored int64
	// Recovered counts commit decisions taken over from a dead instance or
	// from before a restart; InDoubtQueries counts participants asking for an
	// outcome; CommitsRefused counts commit decisions that lost to a recorded
	// abort.
	Recovered, InDoubtQueries, CommitsRefused int64
	// OrphansAborted counts transactions a dead instance left undecided that
	// this one aborted; SweepsIncomplete counts sweeps for them that could not
	// finish (done again at the next scan).
	OrphansAborted, SweepsIncomplete int64
	// OnePhaseTakeovers counts one-phase commits a dead instance left
	// undecided that this one took over, asking their participant.
	OnePhaseTakeovers int64
	// SagasCompleted and SagasCompensated count the sagas that ended each
	// way; SagasStuck counts the times a step was reported stuck. (Begun,
	// Recovered and InFlight count sagas too.)
	SagasCompleted, SagasCompensated, SagasStuck int64
	// Fenced counts the times this instance found its lease lapsed and
	// dropped what it held in memory.
	Fenced int64
	// Batches counts the command messages that carried more than one
	// command (published under load, see jsCommands), Batched the commands they carried.
	Batches, Batched int64
	// WriteBatches counts the atomic batches of key-value writes stored
	// with Config.GroupCommit, WritesBatched the writes they carried;
	// BatchesRefused the batches the server refused whole (a write's check
	// failed, or the bucket does not allow atomic batches), whose writes
	// were then made one by one.
	WriteBatches, WritesBatched, BatchesRefused int64
	// CommandsReplaced counts the commands sent again (a retry) while the
	// same request was still waiting to be published: the newer took the
	// waiting one's place, and one went out instead of two.
	CommandsReplaced int64
	// SagasBegun counts the sagas among Begun.
	SagasBegun int64
	// AbortedBy counts the aborted transactions (two-phase) by cause, the
	// names of AbortCauses.
	AbortedBy map[string]int64
	// InFlight is the number of transactions and sagas running now.
	InFlight int64
	// AdmissionLimit is how many transactions may be in their first round
	// (begin to decision or first re-send) at once now, Starting how many
	// are, Waiting the begins waiting for room; Waited counts the begins
	// that had to wait (those that found none within their timeout are
	// also in Rejected).
	AdmissionLimit, Starting, Waiting, Waited int64
	// RejectedReplies counts, per participant named by the reply subject,
	// the replies that could not be read (part of MalformedReplies).
	RejectedReplies map[string]int64
	// DecideLatency is the time from a transaction's begin to its decision
	// (votes collected, or a timeout or refusal); CompleteLatency from the
	// decision to the last acknowledgement (a commit's including its
	// decision write); WriteLatency the commit decision's write alone.
	DecideLatency, CompleteLatency, WriteLatency Histogram
	// SagaLatency is the time from a saga's begin to its end (completed or
	// compensated).
	SagaLatency Histogram
}

func (s *Stats) snapshot() StatsSnapshot {
	snap := StatsSnapshot{
		Begun: s.Begun.Load(), Committed: s.Committed.Load(), Aborted: s.Aborted.Load(),
		Timeouts: s.Timeouts.Load(), Rejected: s.Rejected.Load(),
		Resends: s.Resends.Load(), PublishErrors: s.PublishErrors.Load(), PersistErrors: s.PersistErrors.Load(),
		MalformedReplies: s.MalformedReplies.Load(), StrayReplies: s.StrayReplies.Load(), Ignored: s.Ignored.Load(),
		Recovered: s.Recovered.Load(), InDoubtQueries: s.InDoubtQueries.Load(), CommitsRefused: s.CommitsRefused.Load(),
		OrphansAborted: s.OrphansAborted.Load(), SweepsIncomplete: s.SweepsIncomplete.Load(), OnePhaseTakeovers: s.OnePhaseTakeovers.Load(),
		SagasCompleted: s.SagasCompleted.Load(), SagasCompensated: s.SagasCompensated.Load(), SagasStuck: s.SagasStuck.Load(),
		Fenced:  s.Fenced.Load(),
		Batches: s.Batches.Load(), Batched: s.Batched.Load(),
		WriteBatches: s.WriteBatches.Load(), WritesBatched: s.WritesBatched.Load(), BatchesRefused: s.BatchesRefused.Load(),
		CommandsReplaced: s.CommandsReplaced.Load(),
		InFlight:         s.InFlight.Load(), SagasBegun: s.SagasBegun.Load(), Waited: s.Waited.Load(),
		AbortedBy: make(map[string]int64, len(AbortCauses)),
	}
	for i, c := range AbortCauses {
		snap.AbortedBy[c] = s.abortedBy[i].Load()
	}
	if s.admission != nil {
		limit, starting, waiting := s.admission.state()
		snap.AdmissionLimit, snap.Starting, snap.Waiting = int64(limit), int64(starting), int64(waiting)
	}
	snap.DecideLatency, snap.CompleteLatency = s.decide.snapshot(), s.complete.snapshot()
	snap.WriteLatency, snap.SagaLatency = s.write.snapshot(), s.sagas.snapshot()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rejectedBy) > 0 {
		snap.RejectedReplies = make(map[string]int64, len(s.rejectedBy))
		for k, v := range s.rejectedBy {
			snap.RejectedReplies[k] = v
		}
	}
	return snap
}
