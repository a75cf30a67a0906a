// Package metrics exposes natstx's counters to Prometheus: a collector of a
// coordinator engine's Stats, one of a participant runtime's, and an HTTP
// handler that serves them with health and readiness probes (and, when
// asked, pprof). `natstx server --metrics-listen` and `natstx participant
// --metrics-listen` use it; a program that embeds the engine or a runtime
// registers the same collectors in its own registry.
//
// The collectors read a Stats snapshot at each scrape: nothing is added to
// the hot paths. Labels are bounded: an outcome, an operation, or a
// participant name (rejected replies are counted under at most 1,024 names,
// the rest as orchestrator.OtherParticipants); never a transaction ID.
package metrics

import (
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants"
)

type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(s orchestrator.StatsSnapshot) float64
	label string // the one label value, if the desc has a variable label
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("natstx_"+name, help, labels, nil)
}

// engineCollector collects an engine's Stats.
type engineCollector struct {
	eng      *orchestrator.Engine
	metrics  []metric
	rejected *prometheus.Desc
	aborted  *prometheus.Desc
	phase    *prometheus.Desc
	oldest   *prometheus.Desc
}

// NewEngineCollector returns a collector of eng's counters: transactions
// and sagas begun, ended by outcome, timed out and in flight; the decide
// and complete phase latency histograms; the age of the oldest transaction
// in flight (the stall alarm); re-sends,
// publish and decision-write errors; rejected, stray and ignored replies;
// recovery and sweep actions; command batches.
func NewEngineCollector(eng *orchestrator.Engine) prometheus.Collector {
	ended := desc("transactions_ended_total", "Two-phase transactions that ended, by outcome: committed or aborted (sagas are in sagas_ended_total).", "outcome")
	sagas := desc("sagas_ended_total", "Sagas that ended, by outcome.", "outcome")
	c := func(name, help string, v func(orchestrator.StatsSnapshot) int64) metric {
		return metric{desc: desc(name, help), kind: prometheus.CounterValue, value: func(s orchestrator.StatsSnapshot) float64 { return float64(v(s)) }}
	}
	begun := desc("transactions_begun_total", "Transactions begun here (recovered ones not included), by protocol: 2pc or saga.", "protocol")
	return &engineCollector{
		eng: eng,
		metrics: []metric{
			{desc: begun, kind: prometheus.CounterValue, label: "2pc", value: func(s orchestrator.StatsSnapshot) float64 { return float64(s.Begun - s.SagasBegun) }},
			{desc: begun, kind: prometheus.CounterValue, label: "saga", value: func(s orchestrator.StatsSnapshot) float64 { return float64(s.SagasBegun) }},
			{desc: ended, kind: prometheus.CounterValue, label: "committed", value: func(s orchestrator.StatsSnapshot) float64 { return float64(s.Committed) }},
			{desc: ended, kind: prometheus.CounterValue, label: "aborted", value: func(s orchestrator.StatsSnapshot) float64 { return float64(s.Aborted) }},
			c("transactions_timed_out_total", "Transactions aborted because a vote was missing at the deadline.", func(s orchestrator.StatsSnapshot) int64 { return s.Timeouts }),
			c("begins_refused_total", "Begins refused: too many in flight, or over the begin rate.", func(s orchestrator.StatsSnapshot) int64 { return s.Rejected }),
			c("commands_resent_total", "Commands sent again for want of an answer.", func(s orchestrator.StatsSnapshot) int64 { return s.Resends }),
			c("publish_errors_total", "Command and status publishes that failed (retried).", func(s orchestrator.StatsSnapshot) int64 { return s.PublishErrors }),
			c("decision_write_errors_total", "Commit decision writes that failed (retried).", func(s orchestrator.StatsSnapshot) int64 { return s.PersistErrors }),
			c("replies_stray_total", "Replies about transactions this coordinator does not run.", func(s orchestrator.StatsSnapshot) int64 { return s.StrayReplies }),
			c("events_ignored_total", "Late or duplicate votes and acks, and stale timers, the state machine ignored.", func(s orchestrator.StatsSnapshot) int64 { return s.Ignored }),
			c("recovered_total", "Commit decisions taken over from a dead instance or a previous run.", func(s orchestrator.StatsSnapshot) int64 { return s.Recovered }),
			c("in_doubt_questions_total", "Outcome questions from participants in doubt.", func(s orchestrator.StatsSnapshot) int64 { return s.InDoubtQueries }),
			c("commits_refused_total", "Commit decisions that lost to an abort recorded first.", func(s orchestrator.StatsSnapshot) int64 { return s.CommitsRefused }),
			c("orphans_aborted_total", "Undecided transactions of dead instances this one aborted.", func(s orchestrator.StatsSnapshot) int64 { return s.OrphansAborted }),
			c("one_phase_takeovers_total", "Undecided one-phase commits of dead instances this one took over, asking their participant.", func(s orchestrator.StatsSnapshot) int64 { return s.OnePhaseTakeovers }),
			c("sweeps_incomplete_total", "Orphan sweeps that could not finish (done again).", func(s orchestrator.StatsSnapshot) int64 { return s.SweepsIncomplete }),
			{desc: sagas, kind: prometheus.CounterValue, label: "completed", value: func(s orchestrator.StatsSnapshot) float64 { return float64(s.SagasCompleted) }},
			{desc: sagas, kind: prometheus.CounterValue, label: "compensated", value: func(s orchestrator.StatsSnapshot) float64 { return float64(s.SagasCompensated) }},
			c("saga_steps_stuck_total", "Times a saga step was reported compensation-stuck.", func(s orchestrator.StatsSnapshot) int64 { return s.SagasStuck }),
			c("fenced_total", "Times this instance found its lease lapsed and dropped what it held.", func(s orchestrator.StatsSnapshot) int64 { return s.Fenced }),
			c("command_batches_total", "Stream messages that carried more than one command.", func(s orchestrator.StatsSnapshot) int64 { return s.Batches }),
			c("batched_commands_total", "Commands carried in batches.", func(s orchestrator.StatsSnapshot) int64 { return s.Batched }),
			c("write_batches_total", "Atomic batches of key-value writes stored (group commit).", func(s orchestrator.StatsSnapshot) int64 { return s.WriteBatches }),
			c("batched_writes_total", "Key-value writes carried in atomic batches (group commit).", func(s orchestrator.StatsSnapshot) int64 { return s.WritesBatched }),
			c("commands_replaced_total", "Commands sent again while the same request still waited to be published; one went out instead of two.", func(s orchestrator.StatsSnapshot) int64 { return s.CommandsReplaced }),
			c("write_batches_refused_total", "Atomic batches the server refused whole; their writes were made one by one.", func(s orchestrator.StatsSnapshot) int64 { return s.BatchesRefused }),
			{desc: desc("transactions_in_flight", "Transactions and sagas running now."), kind: prometheus.GaugeValue,
				value: func(s orchestrator.StatsSnapshot) float64 { return float64(s.InFlight) }},
			{desc: desc("admission_limit", "Transactions that may be in their first round (begin to decision or first re-send) at once now; it adapts to how fast the first votes come."), kind: prometheus.GaugeValue,
				value: func(s orchestrator.StatsSnapshot) float64 { return float64(s.AdmissionLimit) }},
			{desc: desc("transactions_starting", "Transactions in their first round now (counted against admission_limit)."), kind: prometheus.GaugeValue,
				value: func(s orchestrator.StatsSnapshot) float64 { return float64(s.Starting) }},
			{desc: desc("begins_waiting", "Begins waiting for room to start now."), kind: prometheus.GaugeValue,
				value: func(s orchestrator.StatsSnapshot) float64 { return float64(s.Waiting) }},
			c("begins_waited_total", "Begins that waited for room to start (those that found none within their timeout are also in begins_refused_total).", func(s orchestrator.StatsSnapshot) int64 { return s.Waited }),
		},
		rejected: desc("replies_rejected_total", "Replies that could not be read, by the participant their subject names.", "participant"),
		aborted:  desc("transactions_aborted_total", "Two-phase transactions that ended aborted, by cause: vote (a participant voted no), timeout (a vote missing at the deadline), operator, caller (its context ended), refused (an abort was recorded first), orphan (its coordinator died undecided).", "cause"),
		phase:    desc("phase_seconds", "Time spent in a phase: decide (a transaction's begin to its decision), write (the commit decision's write), complete (decision to the last acknowledgement), saga (a saga's begin to its end).", "phase"),
		oldest:   desc("oldest_in_flight_seconds", "How long the oldest transaction or saga still running here has been running (0: none): alarm on it to catch a stall."),
	}
}

func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	seen := map[*prometheus.Desc]bool{}
	for _, m := range c.metrics {
		if !seen[m.desc] {
			seen[m.desc] = true
			ch <- m.desc
		}
	}
	ch <- c.rejected
	ch <- c.aborted
	ch <- c.phase
	ch <- c.oldest
}

func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.eng.Stats()
	for _, m := range c.metrics {
		var labels []string
		if m.label != "" {
			labels = []string{m.label}
		}
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(s), labels...)
	}
	for p, n := range s.RejectedReplies {
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(n), p)
	}
	for cause, n := range s.AbortedBy {
		ch <- prometheus.MustNewConstMetric(c.aborted, prometheus.CounterValue, float64(n), cause)
	}
	for phase, h := range map[string]orchestrator.Histogram{"decide": s.DecideLatency, "complete": s.CompleteLatency, "write": s.WriteLatency, "saga": s.SagaLatency} {
		buckets := make(map[float64]uint64, len(h.Buckets))
		for i, b := range h.Buckets {
			buckets[b] = h.Cumulative[i]
		}
		ch <- prometheus.MustNewConstHistogram(c.phase, h.Count, h.Sum, buckets, phase)
	}
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, c.eng.OldestInFlight().Seconds())
}

// ParticipantStats is what a participant collector reads: a
// participants.Runtime, or the participants.Processor of another transport
// (package wmparticipant).
type ParticipantStats interface {
	Name() string
	Stats() participants.Stats
}

// participantCollector collects a participant runtime's Stats.
type participantCollector struct {
	rt       ParticipantStats
	cmds     *prometheus.Desc
	latency  *prometheus.Desc
	outcomes *prometheus.Desc
	// the others, by name
	counters map[string]*prometheus.Desc
	gauges   map[string]*prometheus.Desc
}

// NewParticipantCollector returns a collector of rt's counters, labelled
// with its participant name: commands handled by operation, with their
// latency histograms (natstx_participant_command_seconds{op}); what the
// record made of them (natstx_participant_barrier_outcomes_total{outcome}:
// the participants.Outcome* names); duplicates answered from the record,
// rejected, unsupported and malformed commands, handler errors, records
// held, and transactions in doubt.
func NewParticipantCollector(rt ParticipantStats) prometheus.Collector {
	l := prometheus.Labels{"participant": rt.Name()}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("natstx_participant_"+name, help, labels, l)
	}
	return &participantCollector{
		rt:       rt,
		cmds:     d("commands_total", "Well-formed commands handled, duplicates included, by operation.", "op"),
		latency:  d("command_seconds", "Time from a well-formed command's arrival to its answer, the record and the handler included, by operation.", "op"),
		outcomes: d("barrier_outcomes_total", "Well-formed commands by what the record made of them: prepared, voted-no, read-only, committed, aborted, done, refused, compensated, failed, duplicate, rejected.", "outcome"),
		counters: map[string]*prometheus.Desc{
			"duplicates":          d("duplicates_total", "Commands answered from the record without calling the handler."),
			"rejected":            d("rejected_total", "Commands that contradicted the record (terminated)."),
			"unsupported":         d("unsupported_total", "Commands of a kind this participant does not implement (terminated)."),
			"malformed":           d("malformed_total", "Commands and batches dropped because they did not decode or were for another participant."),
			"handler_errors":      d("handler_errors_total", "Handler calls that returned an error or panicked."),
			"in_doubt_questions":  d("in_doubt_questions_total", "Outcome questions asked about transactions in doubt."),
			"in_doubt_resolved":   d("in_doubt_resolved_total", "Outcomes applied from the answers."),
			"in_doubt_contradict": d("in_doubt_contradicted_total", "Answers that contradicted the record."),
		},
		gauges: map[string]*prometheus.Desc{
			"records":  d("records", "Transaction records in memory."),
			"in_doubt": d("in_doubt", "Transactions voted commit whose outcome has not arrived."),
		},
	}
}

func (c *participantCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.cmds
	ch <- c.latency
	ch <- c.outcomes
	for _, d := range c.counters {
		ch <- d
	}
	for _, d := range c.gauges {
		ch <- d
	}
}

func (c *participantCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.rt.Stats()
	for op, n := range map[string]uint64{"prepare": s.Prepares, "commit": s.Commits, "abort": s.Aborts, "commit-one-phase": s.OnePhases, "action": s.Actions, "compensate": s.Compensations} {
		ch <- prometheus.MustNewConstMetric(c.cmds, prometheus.CounterValue, float64(n), op)
	}
	for op, h := range s.Latency {
		buckets := make(map[float64]uint64, len(h.Buckets))
		for i, b := range h.Buckets {
			buckets[b] = h.Cumulative[i]
		}
		ch <- prometheus.MustNewConstHistogram(c.latency, h.Count, h.Sum, buckets, string(op))
	}
	for outcome, n := range s.Outcomes {
		ch <- prometheus.MustNewConstMetric(c.outcomes, prometheus.CounterValue, float64(n), outcome)
	}
	for name, n := range map[string]uint64{"duplicates": s.Duplicates, "rejected": s.Rejected, "unsupported": s.Unsupported, "malformed": s.Malformed,
		"handler_errors": s.HandlerErrors, "in_doubt_questions": s.InDoubtQueries, "in_doubt_resolved": s.InDoubtResolved, "in_doubt_contradict": s.InDoubtContradicted} {
		ch <- prometheus.MustNewConstMetric(c.counters[name], prometheus.CounterValue, float64(n))
	}
	ch <- prometheus.MustNewConstMetric(c.gauges["records"], prometheus.GaugeValue, float64(s.Records))
	ch <- prometheus.MustNewConstMetric(c.gauges["in_doubt"], prometheus.GaugeValue, float64(s.InDoubt))
}

// Handler serves reg's metrics on /metrics (with the Go runtime's and the
// process's, which NewRegistry adds), 200 "ok" on /healthz while the process
// runs, on /readyz 200 "ready" when ready returns nil and 503 with its error
// otherwise, and, with withPprof, net/http/pprof under /debug/pprof/.
func Handler(reg *prometheus.Registry, ready func() error, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// NewRegistry returns a registry with the Go runtime and process collectors
// and the given ones.
func NewRegistry(cs ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cs...)
	return reg
}
