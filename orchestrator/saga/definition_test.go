package saga

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func steps(names ...string) []Step {
	var ss []Step
	for _, n := range names {
		ss = append(ss, Step{Name: n, Participant: "svc-" + n, Action: []byte(n + "-do"), Compensation: []byte(n + "-undo")})
	}
	return ss
}

func graph(edges map[string][]string, names ...string) Definition {
	d := Definition{Order: OrderGraph, Steps: steps(names...)}
	for i := range d.Steps {
		d.Steps[i].DependsOn = edges[d.Steps[i].Name]
	}
	return d
}

func TestValidate(t *testing.T) {
	seq := func(names ...string) Definition { return Definition{Steps: steps(names...)} }
	with := func(d Definition, f func(*Definition)) Definition { f(&d); return d }
	cases := []struct {
		name string
		def  Definition
		kind error  // nil: valid
		text string // in the error
	}{
		{"sequential", seq("a", "b", "c"), nil, ""},
		{"graph", graph(map[string][]string{"b": {"a"}, "c": {"a"}, "d": {"b", "c"}}, "a", "b", "c", "d"), nil, ""},
		{"no steps", Definition{}, ErrNoSteps, "no steps"},
		{"bad order", with(seq("a"), func(d *Definition) { d.Order = "random" }), ErrInvalidDefinition, `order "random"`},
		{"empty name", with(seq("a", "b"), func(d *Definition) { d.Steps[1].Name = "" }), ErrInvalidDefinition, "step 2: "},
		{"bad name", with(seq("a", "b"), func(d *Definition) { d.Steps[1].Name = "b.c" }), ErrInvalidDefinition, `step 2: `},
		{"duplicate", seq("a", "b", "a"), ErrDuplicateStep, `step "a" is named twice`},
		{"empty participant", with(seq("a", "b"), func(d *Definition) { d.Steps[1].Participant = "" }), ErrInvalidDefinition, `step "b": participant is empty`},
		{"bad participant", with(seq("a", "b"), func(d *Definition) { d.Steps[1].Participant = "x y" }), ErrInvalidDefinition, `step "b": `},
		{"depends_on in sequence", with(seq("a", "b"), func(d *Definition) { d.Steps[1].DependsOn = []string{"a"} }), ErrInvalidDefinition, `step "b": depends_on needs order graph`},
		{"unknown dependency", graph(map[string][]string{"b": {"zed"}}, "a", "b"), ErrUnknownDependency, `step "b" depends on "zed", which is not a step`},
		{"self dependency", graph(map[string][]string{"b": {"b"}}, "a", "b"), ErrCycle, `step "b" depends on itself`},
		{"dependency twice", graph(map[string][]string{"b": {"a", "a"}}, "a", "b"), ErrInvalidDefinition, `step "b" names "a" twice`},
		{"cycle", graph(map[string][]string{"a": {"c"}, "b": {"a"}, "c": {"b"}, "d": {"a"}}, "a", "b", "c", "d"), ErrCycle, `steps "a" -> "b" -> "c" -> "a" form a cycle`},
		{"cycle off the roots", graph(map[string][]string{"b": {"a", "c"}, "c": {"b"}}, "a", "b", "c"), ErrCycle, `"b" -> "c" -> "b"`},
		{"two pivots", with(seq("a", "b", "c"), func(d *Definition) { d.Steps[0].Pivot, d.Steps[2].Pivot = true, true }), ErrPivot, `steps "a" and "c" are both marked pivot`},
		{"pivot in sequence", with(seq("a", "b", "c"), func(d *Definition) { d.Steps[1].Pivot = true }), nil, ""},
		{"pivot parallel", with(graph(map[string][]string{"b": {"a"}, "c": {"a"}, "d": {"b", "c"}}, "a", "b", "c", "d"), func(d *Definition) { d.Steps[1].Pivot = true }),
			ErrPivot, `step "c" runs in parallel with the pivot "b"`},
		{"pivot cut vertex", with(graph(map[string][]string{"b": {"a"}, "c": {"a"}, "p": {"b", "c"}, "d": {"p"}, "e": {"p"}}, "a", "b", "c", "p", "d", "e"), func(d *Definition) { d.Steps[3].Pivot = true }), nil, ""},
		{"negative deadline", with(seq("a"), func(d *Definition) { d.Deadline = -time.Second }), ErrBadPolicy, "deadline -1s"},
		{"sub-millisecond deadline", with(seq("a"), func(d *Definition) { d.Deadline = 1500 * time.Microsecond }), ErrBadPolicy, "whole number of milliseconds"},
		{"millisecond deadline", with(seq("a"), func(d *Definition) { d.Deadline = 1501 * time.Millisecond }), nil, ""},
		{"negative timeout", with(seq("a"), func(d *Definition) { d.Timeout = -1 }), ErrBadPolicy, "timeout -1ns is not positive"},
		{"step timeout", with(seq("a", "b"), func(d *Definition) { d.Steps[1].Timeout = -time.Second }), ErrBadPolicy, `step "b": timeout -1s`},
		{"retry factor", with(seq("a"), func(d *Definition) { d.Retry.BackoffFactor = 0.5 }), ErrBadPolicy, "retry: backoff_factor 0.5 is below 1"},
		{"retry max below initial", with(seq("a"), func(d *Definition) { d.Retry.InitialInterval, d.Retry.MaxInterval = time.Second, time.Millisecond }), ErrBadPolicy, "retry: max_interval 1ms is below initial_interval 1s"},
		{"step attempts", with(seq("a", "b"), func(d *Definition) { d.Steps[1].Retry = &RetryPolicy{MaxAttempts: -2} }), ErrBadPolicy, `step "b": retry: max_attempts -2 is below 1`},
		{"step initial", with(seq("a", "b"), func(d *Definition) { d.Steps[1].Retry = &RetryPolicy{InitialInterval: -1} }), ErrBadPolicy, `step "b": retry: initial_interval`},
		{"empty code", with(seq("a", "b"), func(d *Definition) { d.Steps[0].Retry = &RetryPolicy{NonRetryable: []string{""}} }), ErrBadPolicy, `step "a": retry: non_retryable has an empty code`},
		{"compensation factor", with(seq("a"), func(d *Definition) { d.Compensation.BackoffFactor = 0.9 }), ErrBadPolicy, "compensation: backoff_factor"},
		{"stuck never", with(seq("a"), func(d *Definition) { d.Compensation.StuckAfter, d.Compensation.StuckAfterAttempts = -1, -1 }), ErrBadPolicy, "both off"},
		{"stuck by time only", with(seq("a"), func(d *Definition) { d.Compensation.StuckAfterAttempts = -1 }), nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.def.Validate()
			if c.kind == nil {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: nil, want %v", c.kind)
			}
			if !errors.Is(err, c.kind) || !errors.Is(err, ErrInvalidDefinition) {
				t.Errorf("Validate: %v, want it to match %v and ErrInvalidDefinition", err, c.kind)
			}
			if !strings.Contains(err.Error(), c.text) {
				t.Errorf("Validate: %q, want it to contain %q", err, c.text)
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	d := Definition{
		Retry: RetryPolicy{MaxAttempts: 5, NonRetryable: []string{"declined"}},
		Steps: steps("a", "b"),
	}
	d.Steps[1].Retry = &RetryPolicy{InitialInterval: time.Second, MaxInterval: 4 * time.Second, NonRetryable: []string{}}
	d.Steps[1].Timeout = time.Second
	got := d.WithDefaults()
	if got.Order != OrderSequential || got.Timeout != DefaultTimeout {
		t.Errorf("order %q timeout %v", got.Order, got.Timeout)
	}
	a, b := got.Steps[0], got.Steps[1]
	wantA := RetryPolicy{InitialInterval: DefaultRetryInitialInterval, BackoffFactor: DefaultRetryBackoffFactor, MaxInterval: DefaultRetryMaxInterval, MaxAttempts: 5, NonRetryable: []string{"declined"}}
	if a.Timeout != DefaultTimeout || a.Retry == nil || a.Retry.InitialInterval != wantA.InitialInterval || a.Retry.MaxAttempts != 5 || a.Retry.BackoffFactor != 2 || len(a.Retry.NonRetryable) != 1 {
		t.Errorf("step a: timeout %v retry %+v, want %+v", a.Timeout, a.Retry, wantA)
	}
	if b.Timeout != time.Second || b.Retry.InitialInterval != time.Second || b.Retry.MaxInterval != 4*time.Second || b.Retry.MaxAttempts != 5 || len(b.Retry.NonRetryable) != 0 {
		t.Errorf("step b: timeout %v retry %+v: want its own fields kept, the rest from the definition, and its empty non-retryable list", b.Timeout, b.Retry)
	}
	c := got.Compensation
	if c.InitialInterval != DefaultCompensationInitial || c.StuckAfterAttempts != DefaultStuckAfterAttempts || c.StuckAfter != DefaultStuckAfter || c.MaxInterval != DefaultCompensationMaxInterval {
		t.Errorf("compensation %+v", c)
	}
	if d.Steps[0].Retry != nil {
		t.Error("WithDefaults changed the definition it was called on")
	}
}

func TestBackoff(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		initial time.Duration
		factor  float64
		max     time.Duration
		n       int
		want    time.Duration
	}{
		{100 * ms, 2, time.Second, 1, 100 * ms},
		{100 * ms, 2, time.Second, 2, 200 * ms},
		{100 * ms, 2, time.Second, 4, 800 * ms},
		{100 * ms, 2, time.Second, 5, time.Second},
		{100 * ms, 2, time.Second, 5000, time.Second},
		{100 * ms, 1, time.Second, 7, 100 * ms},
		{100 * ms, 1.5, time.Second, 3, 225 * ms},
	}
	for _, c := range cases {
		if got := backoff(c.initial, c.factor, c.max, c.n); got != c.want {
			t.Errorf("backoff(%v, %v, %v, %d) = %v, want %v", c.initial, c.factor, c.max, c.n, got, c.want)
		}
	}
}
