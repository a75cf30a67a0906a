package participants

import (
	"sync/atomic"
	"time"

	"github.com/natstx/natstx/messages"
)

// latencyBounds are the upper bounds, in seconds, of the command latency
// histograms: from 100µs (an in-memory record) to 10s (the default
// OpTimeout).
var latencyBounds = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// LatencyBuckets returns the upper bounds, in seconds, of the histograms of
// Stats.Latency (a new slice each time).
func LatencyBuckets() []float64 { return append([]float64(nil), latencyBounds[:]...) }

// Histogram is a snapshot of a latency histogram: Cumulative[i] durations
// were at most Buckets[i] seconds; Count is every observation (the longer
// ones included), Sum their total in seconds.
type Histogram struct {
	Buckets    []float64
	Cumulative []uint64
	Count      uint64
	Sum        float64
}

// latency counts durations into latencyBounds, and one more for the rest.
type latency struct {
	counts [len(latencyBounds) + 1]atomic.Uint64
	sumNs  atomic.Int64
}

func (l *latency) observe(d time.Duration) {
	d = max(d, 0)
	s, i := d.Seconds(), 0
	for i < len(latencyBounds) && s > latencyBounds[i] {
		i++
	}
	l.counts[i].Add(1)
	l.sumNs.Add(int64(d))
}

func (l *latency) snapshot() Histogram {
	h := Histogram{Buckets: LatencyBuckets(), Cumulative: make([]uint64, len(latencyBounds))}
	var n uint64
	for i := range latencyBounds {
		n += l.counts[i].Load()
		h.Cumulative[i] = n
	}
	h.Count = n + l.counts[len(latencyBounds)].Load()
	h.Sum = time.Duration(l.sumNs.Load()).Seconds()
	return h
}

// commandOps are the operations Stats.Latency is kept by, in the order of
// the Processor's histograms.
var commandOps = [...]messages.Op{messages.OpPrepare, messages.OpCommit, messages.OpAbort, messages.OpAction, messages.OpCompensate, messages.OpCommitOnePhase}

// opIndex is op's index in commandOps.
func opIndex(op messages.Op) int {
	for i, o := range commandOps {
		if o == op {
			return i
		}
	}
	return 0 // unreachable: DecodeCommand accepts only these
}

// What the record (the Barrier, or the in-memory record) made of a
// well-formed command: the keys of Stats.Outcomes, and the values of the
// natstx.outcome span attribute.
const (
	// OutcomePrepared: a prepare voted commit (the handler's Prepare
	// succeeded).
	OutcomePrepared = "prepared"
	// OutcomeVotedNo: a prepare (or commit-one-phase) voted abort (the
	// handler refused, or the deadline had passed).
	OutcomeVotedNo = "voted-no"
	// OutcomeReadOnly: Prepare voted read-only (ReadOnly), in either
	// protocol.
	OutcomeReadOnly = "read-only"
	// OutcomeCommitted: a commit was applied (commit-one-phase included).
	OutcomeCommitted = "committed"
	// OutcomeAborted: an abort was applied (or recorded before any
	// prepare).
	OutcomeAborted = "aborted"
	// OutcomeDone: a saga action was done.
	OutcomeDone = "done"
	// OutcomeRefused: a saga action was refused for good.
	OutcomeRefused = "refused"
	// OutcomeCompensated: a saga compensation was applied (or recorded
	// before its action, or found nothing to undo).
	OutcomeCompensated = "compensated"
	// OutcomeFailed: the handler or the record failed; the command is
	// retried (by redelivery, or by the coordinator for a saga step).
	OutcomeFailed = "failed"
	// OutcomeDuplicate: answered from the record, without calling the
	// handler.
	OutcomeDuplicate = "duplicate"
	// OutcomeRejected: the command contradicts the record (Stats.Rejected).
	OutcomeRejected = "rejected"
)

// The indexes of the outcomes the Processor counts.
const (
	outPrepared = iota
	outVotedNo
	outReadOnly
	outCommitted
	outAborted
	outDone
	outRefused
	outCompensated
	outFailed
	outDuplicate
	outRejected
	numOutcomes
)

// outcomeNames are the Outcome* names, by index.
var outcomeNames = [numOutcomes]string{OutcomePrepared, OutcomeVotedNo, OutcomeReadOnly, OutcomeCommitted, OutcomeAborted, OutcomeDone,
	OutcomeRefused, OutcomeCompensated, OutcomeFailed, OutcomeDuplicate, OutcomeRejected}

// Outcomes returns the names of the outcomes Stats.Outcomes counts, in a
// fixed order.
func Outcomes() []string { return append([]string(nil), outcomeNames[:]...) }

// outcomeOf is what the record made of cmd, answered out: an index of
// outcomeNames.
func outcomeOf(cmd messages.Command, out outcome) int {
	switch {
	case out.rejected:
		return outRejected
	case out.duplicate:
		return outDuplicate
	case out.result == messages.Failed || out.result == "":
		return outFailed
	case cmd.Op == messages.OpCommitOnePhase && out.result == messages.VoteAbort:
		return outVotedNo
	case cmd.Op == messages.OpCommitOnePhase && out.after == StateReadOnly:
		return outReadOnly
	case cmd.Op == messages.OpCommitOnePhase:
		return outCommitted
	case cmd.Op == messages.OpPrepare && out.result == messages.VoteCommit:
		return outPrepared
	case cmd.Op == messages.OpPrepare && out.result == messages.VoteReadOnly:
		return outReadOnly
	case cmd.Op == messages.OpPrepare:
		return outVotedNo
	case cmd.Op == messages.OpCommit:
		return outCommitted
	case cmd.Op == messages.OpAbort:
		return outAborted
	case cmd.Op == messages.OpAction && out.result == messages.Refused:
		return outRefused
	case cmd.Op == messages.OpAction:
		return outDone
	}
	return outCompensated
}
