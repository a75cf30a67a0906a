package dst

import (
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
)

// coord is one coordinator instance: the engine's own code
// (orchestrator.NewSimulated) in a process of the simulation. The process
// dies (the engine halts, its tasks are released, its memory is gone) and
// comes back as a new engine with the same instance name, or is paused
// (nothing of it runs, its lease runs out) and goes on later with what it
// had in memory.
type coord struct {
	s    *sim
	name string
	g    *gate
	drv  *driver
	eng  *orchestrator.Engine
	// started: Start returned; the instance is subscribed.
	started bool
	// inc counts incarnations.
	inc       int
	collected bool
}

// engineConfig is the engine's configuration in the simulation;
// maxInFlight is Config.MaxInFlight (0: the engine's default).
func engineConfig(instance string, maxInFlight int, hook func(orchestrator.FaultPoint, string) bool) orchestrator.Config {
	return orchestrator.Config{
		Instance:       instance,
		PrepareTimeout: maxPrepareTimeout,
		RetryBase:      retryBase,
		RetryMax:       retryMax,
		AbortSends:     abortSends,
		Retention:      retention,
		Shards:         2,
		MaxInFlight:    maxInFlight,
		LeaseTTL:       leaseTTL,
		Streams:        orchestrator.StreamOptions{MaxAge: streamMaxAge},
		FaultHook:      hook,
	}
}

// start starts a new incarnation: a new process, a new engine, Start run in
// a task. A Start that fails ends the process; it is started again.
func (c *coord) start() {
	s := c.s
	c.inc++
	c.g = s.s.newGate(c.name)
	c.drv = &driver{g: c.g, jitter: s.timerLate}
	c.started, c.collected = false, false
	writer := fmt.Sprintf("%s.%d", c.name, c.inc)
	inc := c.inc
	cfg := engineConfig(c.name, s.cfg.MaxInFlight, func(p orchestrator.FaultPoint, txid string) bool { return c.hook(inc, p, txid) })
	if s.cfg.EngineLog {
		cfg.Logger = s.engineLogger(writer)
	}
	eng, err := orchestrator.NewSimulated(cfg,
		orchestrator.Ports{
			Stores: orchestrator.Stores{
				Records: s.records.view(c.g, writer),
				Leases:  s.leases.view(c.g, writer),
				IDs:     s.ids.view(c.g, writer),
				Status:  s.status.view(c.g, writer),
				Sagas:   s.sagas.view(c.g, writer),
			},
			Commands: s.stream.publisher(c.g, writer),
			Driver:   c.drv,
		})
	if err != nil {
		s.violate("%s: NewSimulated: %v", c.name, err)
		return
	}
	c.eng = eng
	s.tracef("%s start (incarnation %d)", c.name, inc)
	c.drv.Go(func() {
		if err := eng.Start(s.ctx); err != nil {
			s.tracef("%s start failed: %v", c.name, err)
			s.s.at(0, func() {
				if c.inc == inc {
					c.die("its start failed", 500*time.Millisecond)
				}
			})
			return
		}
		c.started = true
		s.tracef("%s started", c.name)
	})
}

// engineLogger writes an engine's log lines into the trace, without their
// time (the trace line has the simulated one).
func (s *sim) engineLogger(writer string) *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	enc.TimeKey, enc.CallerKey, enc.StacktraceKey = "", "", ""
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(traceWriter{s.env, writer}), zapcore.DebugLevel)
	return zap.New(core)
}

// traceWriter turns written lines into trace lines.
type traceWriter struct {
	e    *env
	name string
}

func (w traceWriter) Write(b []byte) (int, error) {
	w.e.tracef("%s log %s", w.name, strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// hook is the engine's FaultHook: a crash at a fault point, with probability
// CrashCoordinator. The engine halts itself there; the process dies from an
// event right after.
func (c *coord) hook(inc int, p orchestrator.FaultPoint, txid string) bool {
	s := c.s
	if inc != c.inc || !s.fault(s.f.CrashCoordinator) {
		return false
	}
	s.s.at(0, func() {
		if c.inc == inc {
			c.crash(fmt.Sprintf("at %s of %s", p, txid))
		}
	})
	return true
}

// crash kills the process; it restarts 50 ms to 3 s later.
func (c *coord) crash(why string) {
	s := c.s
	if c.g.state == gateDead {
		return
	}
	s.st.CoordCrashes++
	c.die(why, s.between(50*time.Millisecond, 3*time.Second))
}

func (c *coord) die(why string, restartAfter time.Duration) {
	s := c.s
	s.tracef("%s CRASH %s", c.name, why)
	c.collect()
	if c.eng != nil {
		c.eng.Halt()
	}
	c.g.kill()
	c.started = false
	if s.healed {
		restartAfter = 50 * time.Millisecond
	}
	inc := c.inc
	s.s.at(restartAfter, func() {
		if c.inc == inc {
			c.start()
		}
	})
}

// collect adds the engine's counters to the run's, once per incarnation.
func (c *coord) collect() {
	if c.eng == nil || c.collected {
		return
	}
	c.collected = true
	st := c.eng.Stats()
	c.s.st.Recovered += int(st.Recovered)
	c.s.st.BeginsWaited += int(st.Waited)
	c.s.st.CommitsRefused += int(st.CommitsRefused)
	c.s.st.OrphansAborted += int(st.OrphansAborted)
}

// pause stops the process (SIGSTOP) for shorter than its lease, longer than
// its lease, or longer than the retention; it then goes on with stale
// memory.
func (c *coord) pause() {
	s := c.s
	s.st.CoordPauses++
	// The three lengths take turns, from a start the seed picks, so that
	// every batch of seeds has each kind whatever else the engine's code
	// changes in the draws.
	var d time.Duration
	switch (s.cfg.Seed + uint64(s.st.CoordPauses)) % 3 {
	case 0:
		d = s.between(50*time.Millisecond, leaseTTL)
	case 1:
		d = s.between(leaseTTL, 4*leaseTTL)
		s.st.PausesPastLease++
	default:
		d = s.between(retention, 2*retention)
		s.st.PausesPastRetain++
	}
	s.tracef("%s PAUSE for %v", c.name, d)
	g := c.g
	g.pause()
	s.s.at(d, func() {
		if c.g == g && g.state == gatePaused {
			c.resume()
		}
	})
}

func (c *coord) resume() {
	c.s.tracef("%s resumes", c.name)
	c.g.resumeGate()
}

// subscribed: the instance receives what is sent to it (a paused process
// still holds its subscriptions).
func (c *coord) subscribed() bool { return c.started && c.g.state != gateDead }

// pickCoord picks a subscribed instance at random, as a queue group does;
// nil when there is none.
func (s *sim) pickCoord() *coord {
	var up []*coord
	for _, c := range s.coords {
		if c.subscribed() {
			up = append(up, c)
		}
	}
	if len(up) == 0 {
		return nil
	}
	return up[s.rng.IntN(len(up))]
}

// reply carries a participant's reply to the instance its command named, on
// plain NATS.
func (s *sim) reply(r messages.Reply, replyTo string) {
	inst, _, _ := messages.ParseReplySubject(replyTo)
	c := s.coordBy[inst]
	if c == nil {
		return
	}
	s.send(fmt.Sprintf("reply %s %s %s#%d %s -> %s", r.TxID, r.Participant, r.Op, r.Attempt, r.Result, c.name), func() {
		if c.subscribed() {
			c.eng.DeliverReply(r)
		}
	})
}

// onOutcome answers a participant's in-doubt question with the engine's
// Resolve, in a task of the instance (a paused one answers when it goes on;
// a dead one never).
func (c *coord) onOutcome(req messages.OutcomeRequest, answer func(messages.OutcomeResponse)) {
	s := c.s
	if !c.subscribed() {
		return
	}
	eng, g := c.eng, c.g
	c.drv.Go(func() {
		r := eng.Resolve(s.ctx, req)
		if g.state == gateDead {
			return
		}
		s.tracef("%s %s in doubt from %s: %s%s (%s)", c.name, req.ID, req.Participant, r.Outcome, r.Error, r.Reason)
		answer(r)
	})
}
