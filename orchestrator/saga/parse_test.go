package saga

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const exampleYAML = `
name: order
order: graph
deadline: 30s
timeout: 2s
retry:
  initial_interval: 100ms
  backoff_factor: 2
  max_interval: 5s
  max_attempts: 4
  non_retryable: [card-declined]
compensation:
  initial_interval: 200ms
  backoff_factor: 1.5
  max_interval: 1m
  stuck_after_attempts: 20
  stuck_after: 15m
steps:
  - name: reserve
    participant: inventory
    action: {sku: A1, qty: 2}
    compensation: {sku: A1, qty: 2}
  - name: charge
    participant: payment
    depends_on: [reserve]
    pivot: true
    timeout: 3s
    action: "charge 12.50 EUR"
    compensation: refund 12.50 EUR
    retry:
      max_attempts: 5
  - name: ship
    participant: shipping
    depends_on: [charge]
    action: {order: 42}
`

const exampleJSON = `{
  "name": "order",
  "order": "graph",
  "deadline": "30s",
  "timeout": "2s",
  "retry": {"initial_interval": "100ms", "backoff_factor": 2, "max_interval": "5s", "max_attempts": 4, "non_retryable": ["card-declined"]},
  "compensation": {"initial_interval": "200ms", "backoff_factor": 1.5, "max_interval": "1m", "stuck_after_attempts": 20, "stuck_after": "15m"},
  "steps": [
    {"name": "reserve", "participant": "inventory", "action": {"qty": 2, "sku": "A1"}, "compensation": {"qty": 2, "sku": "A1"}},
    {"name": "charge", "participant": "payment", "depends_on": ["reserve"], "pivot": true, "timeout": "3s",
     "action": "charge 12.50 EUR", "compensation": "refund 12.50 EUR", "retry": {"max_attempts": 5}},
    {"name": "ship", "participant": "shipping", "depends_on": ["charge"], "action": {"order": 42}}
  ]
}`

func exampleDefinition() Definition {
	return Definition{
		Name:     "order",
		Order:    OrderGraph,
		Deadline: 30 * time.Second,
		Timeout:  2 * time.Second,
		Retry: RetryPolicy{InitialInterval: 100 * time.Millisecond, BackoffFactor: 2, MaxInterval: 5 * time.Second,
			MaxAttempts: 4, NonRetryable: []string{"card-declined"}},
		Compensation: CompensationPolicy{InitialInterval: 200 * time.Millisecond, BackoffFactor: 1.5, MaxInterval: time.Minute,
			StuckAfterAttempts: 20, StuckAfter: 15 * time.Minute},
		Steps: []Step{
			{Name: "reserve", Participant: "inventory", Action: []byte(`{"qty":2,"sku":"A1"}`), Compensation: []byte(`{"qty":2,"sku":"A1"}`)},
			{Name: "charge", Participant: "payment", DependsOn: []string{"reserve"}, Pivot: true, Timeout: 3 * time.Second,
				Action: []byte("charge 12.50 EUR"), Compensation: []byte("refund 12.50 EUR"), Retry: &RetryPolicy{MaxAttempts: 5}},
			{Name: "ship", Participant: "shipping", DependsOn: []string{"charge"}, Action: []byte(`{"order":42}`)},
		},
	}
}

func TestParseExample(t *testing.T) {
	want := exampleDefinition()
	for _, c := range []struct {
		name  string
		parse func([]byte) (Definition, error)
		data  string
	}{
		{"yaml", ParseYAML, exampleYAML},
		{"json", ParseJSON, exampleJSON},
		{"parse yaml", Parse, exampleYAML},
		{"parse json", Parse, exampleJSON},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.parse([]byte(c.data))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
				for i := range min(len(got.Steps), len(want.Steps)) {
					if !reflect.DeepEqual(got.Steps[i], want.Steps[i]) {
						t.Errorf("step %d: got %+v (action %s)\nwant %+v (action %s)", i, got.Steps[i], got.Steps[i].Action, want.Steps[i], want.Steps[i].Action)
					}
				}
			}
		})
	}
}

func TestParseSequentialMinimal(t *testing.T) {
	d, err := ParseYAML([]byte("steps:\n  - {name: a, participant: p}\n  - {name: b, participant: q}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Order != "" || len(d.Steps) != 2 || d.Steps[1].Action != nil {
		t.Errorf("got %+v", d)
	}
	if d.WithDefaults().Order != OrderSequential {
		t.Error("a definition without order is not sequential")
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		yaml string // parsed as YAML
		json string // parsed as JSON
		kind error
		text string
	}{
		{name: "unknown field yaml", yaml: "steps:\n  - name: a\n    participant: p\n    retries: 3\n",
			text: "line 4: field retries not found"},
		{name: "unknown field json", json: `{"steps": [{"name": "a", "participant": "p"}, {"name": "b", "participant": "p", "retries": 3}]}`,
			text: `step 2 "b": json: unknown field "retries"`},
		{name: "unknown top field json", json: `{"step": []}`, text: `unknown field "step"`},
		{name: "bad duration", yaml: "deadline: 5x\nsteps: [{name: a, participant: p}]\n", kind: ErrBadPolicy,
			text: `deadline: "5x" is not a duration`},
		{name: "duration without unit", yaml: "steps: [{name: a, participant: p, timeout: 5}]\n", kind: ErrBadPolicy,
			text: `step "a": timeout: "5" is not a duration`},
		{name: "duration json number", json: `{"timeout": 5, "steps": []}`, text: `want a duration string`},
		{name: "step retry duration", yaml: "steps: [{name: a, participant: p, retry: {max_interval: soon}}]\n", kind: ErrBadPolicy,
			text: `step "a": retry: max_interval: "soon" is not a duration`},
		{name: "unnamed step duration", yaml: "steps: [{participant: p, timeout: x}]\n", kind: ErrBadPolicy,
			text: `step 1: timeout: "x"`},
		{name: "compensation duration", json: `{"compensation": {"stuck_after": "forever"}, "steps": [{"name": "a", "participant": "p"}]}`, kind: ErrBadPolicy,
			text: `compensation: stuck_after: "forever"`},
		{name: "validation", yaml: "order: graph\nsteps:\n  - {name: a, participant: p, depends_on: [b]}\n", kind: ErrUnknownDependency,
			text: `step "a" depends on "b"`},
		{name: "validation json", json: `{"steps": [{"name": "a", "participant": ""}]}`,
			text: `step "a": participant is empty`},
		{name: "not yaml", yaml: "steps: [", text: "YAML: "},
		{name: "not json", json: `{"steps": [`, text: "JSON: "},
		{name: "non-string keys", yaml: "steps: [{name: a, participant: p, action: {1: x}}]\n", text: `step "a": action: cannot encode as JSON`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			if c.yaml != "" {
				_, err = ParseYAML([]byte(c.yaml))
			} else {
				_, err = ParseJSON([]byte(c.json))
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalidDefinition) || (c.kind != nil && !errors.Is(err, c.kind)) {
				t.Errorf("%v: want it to match ErrInvalidDefinition and %v", err, c.kind)
			}
			if !strings.Contains(err.Error(), c.text) {
				t.Errorf("%q, want it to contain %q", err, c.text)
			}
		})
	}
}
