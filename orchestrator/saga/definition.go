package saga

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/natstx/natstx/messages"
)

// Order says how the steps of a definition follow each other.
type Order string

// The orders of a definition.
const (
	// OrderSequential runs the steps one after the other, in the order they
	// are listed: each step depends on the one before it. It is the order of
	// a definition that names none. Steps may not name DependsOn.
	OrderSequential Order = "sequential"
	// OrderGraph runs each step once every step it names in DependsOn is
	// done; steps that do not depend on each other run in parallel.
	OrderGraph Order = "graph"
)

// Defaults for the fields of a definition left at zero.
const (
	DefaultTimeout                 = 5 * time.Second
	DefaultRetryInitialInterval    = 100 * time.Millisecond
	DefaultRetryBackoffFactor      = 2.0
	DefaultRetryMaxInterval        = 10 * time.Second
	DefaultRetryMaxAttempts        = 3
	DefaultCompensationInitial     = 100 * time.Millisecond
	DefaultCompensationFactor      = 2.0
	DefaultCompensationMaxInterval = time.Minute
	DefaultStuckAfterAttempts      = 10
	DefaultStuckAfter              = 10 * time.Minute
)

// Definition is a saga: steps, the order they run in, and how failures are
// retried. It is data: the same definition may start any number of sagas.
// A zero field takes its default (see the Default constants); Validate
// checks the rest. Its JSON tags serve the saga's Record, with durations in
// nanoseconds; the file format of ParseJSON and ParseYAML writes them as
// strings ("250ms") and payloads as text or JSON values.
type Definition struct {
	// Name names the kind of saga ("order"), for people; it may be empty.
	Name string `json:"name,omitempty"`
	// Order is OrderSequential (the default) or OrderGraph.
	Order Order `json:"order,omitempty"`
	// Steps are the steps. Their names are unique.
	Steps []Step `json:"steps"`
	// Deadline bounds the saga going forward, from its start, in whole
	// milliseconds; zero means none. When it passes before the saga is done
	// (and before its pivot is done), the saga compensates. A caller's sooner
	// deadline wins (see Params.Deadline).
	Deadline time.Duration `json:"deadline,omitempty"`
	// Timeout bounds each attempt of a step without its own Timeout.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Retry is the retry policy of the steps that have none of their own;
	// the fields a step's policy leaves at zero come from it.
	Retry RetryPolicy `json:"retry"`
	// Compensation is how compensations, and the actions of the steps after
	// the pivot, are retried, and when the saga reports them stuck.
	Compensation CompensationPolicy `json:"compensation"`
}

// Step is one step of a saga: an action at one participant, and the
// compensation that undoes it.
type Step struct {
	// Name identifies the step in the saga; letters, digits, '-' and '_'.
	Name string `json:"name"`
	// Participant is the service that runs the action and the compensation.
	Participant string `json:"participant"`
	// Action and Compensation are the payloads of the two commands, opaque
	// to natstx. Either may be empty.
	Action       []byte `json:"action,omitempty"`
	Compensation []byte `json:"compensation,omitempty"`
	// DependsOn names the steps that must be done before this one starts
	// (OrderGraph only).
	DependsOn []string `json:"depends_on,omitempty"`
	// Pivot marks the saga's point of no return; at most one step is the
	// pivot. The pivot is the last step that can be compensated: once its
	// action is done while the saga runs forward, the saga never compensates
	// again. The steps after the pivot (those that depend on it,
	// transitively; in a sequential saga, the steps listed after it) are only
	// retried forward, with back-off, without an attempt limit, whatever their
	// error. Every step must come before or after the pivot: none may run in
	// parallel with it, or the pivot could be done while a parallel step
	// fails.
	Pivot bool `json:"pivot,omitempty"`
	// Timeout bounds each attempt of the action and of the compensation; an
	// attempt without an answer by then has the result unknown. Zero takes
	// the definition's Timeout.
	Timeout time.Duration `json:"timeout,omitempty"`
	// Retry overrides the definition's retry policy, field by field: a zero
	// field keeps the definition's value. Nil keeps it all.
	Retry *RetryPolicy `json:"retry,omitempty"`
}

// RetryPolicy is how a step's action is retried after a result "failed for
// now" or "unknown". Attempt n+1 is sent only after a back-off of
// InitialInterval * BackoffFactor^(n-1), at most MaxInterval: a step never
// gives up without having backed off between all its attempts.
type RetryPolicy struct {
	// InitialInterval is the back-off after the first attempt.
	InitialInterval time.Duration `json:"initial_interval,omitempty"`
	// BackoffFactor multiplies the back-off after each attempt; at least 1.
	BackoffFactor float64 `json:"backoff_factor,omitempty"`
	// MaxInterval caps the back-off.
	MaxInterval time.Duration `json:"max_interval,omitempty"`
	// MaxAttempts counts the attempts, the first included, before the step
	// fails for good; 1 means no retry.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// NonRetryable lists error codes that make a "failed for now" result
	// fail for good at once.
	NonRetryable []string `json:"non_retryable,omitempty"`
}

// CompensationPolicy is how compensations are retried: with back-off and
// without limit, for a compensation must finally succeed. Past the stuck
// threshold, StuckAfterAttempts attempts or StuckAfter since the first
// attempt, whichever comes first, the saga is visibly stuck (see
// StateCompensationStuck); it keeps retrying. The same threshold applies to
// the actions of the steps after the pivot, which are retried forward with
// their own back-off and without limit (StateForwardStuck).
type CompensationPolicy struct {
	// InitialInterval is the back-off after the first failed attempt.
	InitialInterval time.Duration `json:"initial_interval,omitempty"`
	// BackoffFactor multiplies the back-off after each attempt; at least 1.
	BackoffFactor float64 `json:"backoff_factor,omitempty"`
	// MaxInterval caps the back-off.
	MaxInterval time.Duration `json:"max_interval,omitempty"`
	// StuckAfterAttempts is the attempt count past which a step is stuck; a
	// negative value turns this bound off (then StuckAfter must be on).
	StuckAfterAttempts int `json:"stuck_after_attempts,omitempty"`
	// StuckAfter is the time since the first attempt past which a step is
	// stuck; a negative value turns this bound off (then StuckAfterAttempts
	// must be on).
	StuckAfter time.Duration `json:"stuck_after,omitempty"`
}

// definitionError is a definition error: its text names the step and field,
// and it matches ErrInvalidDefinition and its kind through errors.Is.
type definitionError struct {
	kind error
	msg  string
}

func (e *definitionError) Error() string { return "natstx saga: invalid definition: " + e.msg }

func (e *definitionError) Unwrap() []error {
	if e.kind == nil {
		return []error{ErrInvalidDefinition}
	}
	return []error{ErrInvalidDefinition, e.kind}
}

func invalid(kind error, format string, args ...any) error {
	return &definitionError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// WithDefaults returns a copy of d whose zero fields hold their defaults,
// including each step's timeout and retry policy: the definition a saga
// runs. The copy shares payloads with d.
func (d Definition) WithDefaults() Definition {
	if d.Order == "" {
		d.Order = OrderSequential
	}
	d.Timeout = orDuration(d.Timeout, DefaultTimeout)
	d.Retry = d.Retry.over(RetryPolicy{
		InitialInterval: DefaultRetryInitialInterval,
		BackoffFactor:   DefaultRetryBackoffFactor,
		MaxInterval:     DefaultRetryMaxInterval,
		MaxAttempts:     DefaultRetryMaxAttempts,
	})
	c := &d.Compensation
	c.InitialInterval = orDuration(c.InitialInterval, DefaultCompensationInitial)
	if c.BackoffFactor == 0 {
		c.BackoffFactor = DefaultCompensationFactor
	}
	c.MaxInterval = orDuration(c.MaxInterval, DefaultCompensationMaxInterval)
	if c.StuckAfterAttempts == 0 {
		c.StuckAfterAttempts = DefaultStuckAfterAttempts
	}
	c.StuckAfter = orDuration(c.StuckAfter, DefaultStuckAfter)
	steps := make([]Step, len(d.Steps))
	for i, s := range d.Steps {
		s.Timeout = orDuration(s.Timeout, d.Timeout)
		var own RetryPolicy
		if s.Retry != nil {
			own = *s.Retry
		}
		merged := own.over(d.Retry)
		s.Retry = &merged
		steps[i] = s
	}
	d.Steps = steps
	return d
}

// over returns p with its zero fields taken from base.
func (p RetryPolicy) over(base RetryPolicy) RetryPolicy {
	p.InitialInterval = orDuration(p.InitialInterval, base.InitialInterval)
	if p.BackoffFactor == 0 {
		p.BackoffFactor = base.BackoffFactor
	}
	p.MaxInterval = orDuration(p.MaxInterval, base.MaxInterval)
	if p.MaxAttempts == 0 {
		p.MaxAttempts = base.MaxAttempts
	}
	if p.NonRetryable == nil {
		p.NonRetryable = base.NonRetryable
	}
	return p
}

func orDuration(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Validate checks the definition with its defaults applied. Its errors wrap
// ErrInvalidDefinition and name the step and field at fault.
func (d Definition) Validate() error {
	_, err := compile(d)
	return err
}

// plan is a validated definition with its defaults, indexed: what a saga
// runs.
type plan struct {
	def        Definition
	index      map[string]int
	deps       [][]int // deps[i]: the steps step i depends on
	dependents [][]int // dependents[i]: the steps that depend on step i
	pivot      int     // -1 without a pivot
	afterPivot []bool  // afterPivot[i]: step i depends on the pivot, transitively
	topo       []int   // the steps in an order where each comes after its dependencies
}

func compile(d Definition) (*plan, error) {
	d = d.WithDefaults()
	if len(d.Steps) == 0 {
		return nil, invalid(ErrNoSteps, "the saga has no steps")
	}
	if d.Order != OrderSequential && d.Order != OrderGraph {
		return nil, invalid(nil, "order %q: want %s or %s", d.Order, OrderSequential, OrderGraph)
	}
	if err := checkPolicies(d); err != nil {
		return nil, err
	}
	p := &plan{def: d, index: make(map[string]int, len(d.Steps)), pivot: -1}
	for i, s := range d.Steps {
		if err := messages.ValidateName("name", s.Name); err != nil {
			return nil, invalid(nil, "step %d: %v", i+1, err)
		}
		if _, dup := p.index[s.Name]; dup {
			return nil, invalid(ErrDuplicateStep, "step %q is named twice", s.Name)
		}
		p.index[s.Name] = i
		if s.Participant == "" {
			return nil, invalid(nil, "step %q: participant is empty", s.Name)
		}
		if err := messages.ValidateName("participant", s.Participant); err != nil {
			return nil, invalid(nil, "step %q: %v", s.Name, err)
		}
		if s.Pivot {
			if p.pivot >= 0 {
				return nil, invalid(ErrPivot, "steps %q and %q are both marked pivot; a saga has at most one", d.Steps[p.pivot].Name, s.Name)
			}
			p.pivot = i
		}
	}
	p.deps = make([][]int, len(d.Steps))
	p.dependents = make([][]int, len(d.Steps))
	for i, s := range d.Steps {
		if d.Order == OrderSequential {
			if len(s.DependsOn) > 0 {
				return nil, invalid(nil, "step %q: depends_on needs order %s; a sequential saga runs its steps as listed", s.Name, OrderGraph)
			}
			if i > 0 {
				p.deps[i] = []int{i - 1}
			}
			continue
		}
		for _, dep := range s.DependsOn {
			j, ok := p.index[dep]
			switch {
			case !ok:
				return nil, invalid(ErrUnknownDependency, "step %q depends on %q, which is not a step", s.Name, dep)
			case j == i:
				return nil, invalid(ErrCycle, "step %q depends on itself", s.Name)
			case slices.Contains(p.deps[i], j):
				return nil, invalid(nil, "step %q names %q twice in depends_on", s.Name, dep)
			}
			p.deps[i] = append(p.deps[i], j)
		}
	}
	for i, ds := range p.deps {
		for _, j := range ds {
			p.dependents[j] = append(p.dependents[j], i)
		}
	}
	if err := p.sort(); err != nil {
		return nil, err
	}
	p.afterPivot = make([]bool, len(d.Steps))
	if p.pivot >= 0 {
		before := p.reach(p.pivot, p.deps)
		after := p.reach(p.pivot, p.dependents)
		for i := range d.Steps {
			if i != p.pivot && !before[i] && !after[i] {
				return nil, invalid(ErrPivot, "step %q runs in parallel with the pivot %q: every step must come before or after the pivot", d.Steps[i].Name, d.Steps[p.pivot].Name)
			}
		}
		p.afterPivot = after
	}
	return p, nil
}

// sort orders the steps topologically (Kahn, stable by listing order) or
// reports a cycle with its steps.
func (p *plan) sort() error {
	n := len(p.deps)
	missing := make([]int, n)
	for i := range n {
		missing[i] = len(p.deps[i])
	}
	for len(p.topo) < n {
		progressed := false
		for i := range n {
			if missing[i] == 0 && !slices.Contains(p.topo, i) {
				p.topo = append(p.topo, i)
				for _, j := range p.dependents[i] {
					missing[j]--
				}
				progressed = true
			}
		}
		if !progressed {
			return invalid(ErrCycle, "steps %s form a cycle", p.cycle(missing))
		}
	}
	return nil
}

// cycle names the steps of one cycle among the steps not yet sorted.
func (p *plan) cycle(missing []int) string {
	start := slices.IndexFunc(missing, func(m int) bool { return m > 0 })
	var path []int
	at := start
	for !slices.Contains(path, at) {
		path = append(path, at)
		for _, d := range p.deps[at] {
			if missing[d] > 0 {
				at = d
				break
			}
		}
	}
	path = path[slices.Index(path, at):]
	slices.Reverse(path) // dependency before dependent
	first := slices.Index(path, slices.Min(path))
	path = append(path[first:], path[:first]...) // from the step listed first
	var names []string
	for _, i := range path {
		names = append(names, fmt.Sprintf("%q", p.def.Steps[i].Name))
	}
	names = append(names, names[0])
	return strings.Join(names, " -> ")
}

// reach marks the steps reachable from i along edges, i excluded.
func (p *plan) reach(i int, edges [][]int) []bool {
	seen := make([]bool, len(edges))
	stack := slices.Clone(edges[i])
	for len(stack) > 0 {
		j := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !seen[j] {
			seen[j] = true
			stack = append(stack, edges[j]...)
		}
	}
	return seen
}

func checkPolicies(d Definition) error {
	if d.Deadline < 0 || d.Deadline%time.Millisecond != 0 {
		return invalid(ErrBadPolicy, "deadline %v: want zero (none) or a positive whole number of milliseconds", d.Deadline)
	}
	if d.Timeout <= 0 {
		return invalid(ErrBadPolicy, "timeout %v is not positive", d.Timeout)
	}
	if err := checkRetry("retry", d.Retry); err != nil {
		return err
	}
	c := d.Compensation
	if err := checkBackoff("compensation", c.InitialInterval, c.BackoffFactor, c.MaxInterval); err != nil {
		return err
	}
	if c.StuckAfterAttempts < 0 && c.StuckAfter < 0 {
		return invalid(ErrBadPolicy, "compensation: stuck_after_attempts and stuck_after are both off; a stuck compensation must become visible")
	}
	for _, s := range d.Steps {
		if s.Timeout <= 0 {
			return invalid(ErrBadPolicy, "step %q: timeout %v is not positive", s.Name, s.Timeout)
		}
		if err := checkRetry(fmt.Sprintf("step %q: retry", s.Name), *s.Retry); err != nil {
			return err
		}
	}
	return nil
}

func checkRetry(where string, r RetryPolicy) error {
	if err := checkBackoff(where, r.InitialInterval, r.BackoffFactor, r.MaxInterval); err != nil {
		return err
	}
	if r.MaxAttempts < 1 {
		return invalid(ErrBadPolicy, "%s: max_attempts %d is below 1", where, r.MaxAttempts)
	}
	for _, c := range r.NonRetryable {
		if c == "" {
			return invalid(ErrBadPolicy, "%s: non_retryable has an empty code", where)
		}
	}
	return nil
}

func checkBackoff(where string, initial time.Duration, factor float64, maxInterval time.Duration) error {
	switch {
	case initial <= 0:
		return invalid(ErrBadPolicy, "%s: initial_interval %v is not positive", where, initial)
	case factor < 1 || math.IsNaN(factor) || math.IsInf(factor, 0):
		return invalid(ErrBadPolicy, "%s: backoff_factor %v is below 1", where, factor)
	case maxInterval < initial:
		return invalid(ErrBadPolicy, "%s: max_interval %v is below initial_interval %v", where, maxInterval, initial)
	}
	return nil
}

// backoff is the delay after the n-th attempt (n from 1):
// initial*factor^(n-1), capped at maxInterval.
func backoff(initial time.Duration, factor float64, maxInterval time.Duration, n int) time.Duration {
	d := float64(initial) * math.Pow(factor, float64(n-1))
	if d >= float64(maxInterval) || math.IsInf(d, 0) || math.IsNaN(d) {
		return maxInterval
	}
	return time.Duration(d)
}
