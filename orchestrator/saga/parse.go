package saga

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The file format of a definition, for YAML and JSON alike. Durations are
// strings with a unit ("250ms", "1.5s", "2m"); a payload is a string (taken
// as is) or any other value (encoded as JSON).
type (
	sagaFile struct {
		Name         string     `yaml:"name" json:"name"`
		Order        string     `yaml:"order" json:"order"`
		Deadline     duration   `yaml:"deadline" json:"deadline"`
		Timeout      duration   `yaml:"timeout" json:"timeout"`
		Retry        *retryFile `yaml:"retry" json:"retry"`
		Compensation *compFile  `yaml:"compensation" json:"compensation"`
		Steps        []stepFile `yaml:"steps" json:"-"`
	}
	stepFile struct {
		Name         string     `yaml:"name" json:"name"`
		Participant  string     `yaml:"participant" json:"participant"`
		Action       payload    `yaml:"action" json:"action"`
		Compensation payload    `yaml:"compensation" json:"compensation"`
		DependsOn    []string   `yaml:"depends_on" json:"depends_on"`
		Pivot        bool       `yaml:"pivot" json:"pivot"`
		Timeout      duration   `yaml:"timeout" json:"timeout"`
		Retry        *retryFile `yaml:"retry" json:"retry"`
	}
	retryFile struct {
		InitialInterval duration `yaml:"initial_interval" json:"initial_interval"`
		BackoffFactor   float64  `yaml:"backoff_factor" json:"backoff_factor"`
		MaxInterval     duration `yaml:"max_interval" json:"max_interval"`
		MaxAttempts     int      `yaml:"max_attempts" json:"max_attempts"`
		NonRetryable    []string `yaml:"non_retryable" json:"non_retryable"`
	}
	compFile struct {
		InitialInterval    duration `yaml:"initial_interval" json:"initial_interval"`
		BackoffFactor      float64  `yaml:"backoff_factor" json:"backoff_factor"`
		MaxInterval        duration `yaml:"max_interval" json:"max_interval"`
		StuckAfterAttempts int      `yaml:"stuck_after_attempts" json:"stuck_after_attempts"`
		StuckAfter         duration `yaml:"stuck_after" json:"stuck_after"`
	}
)

// duration is a duration as written in a file, parsed when converted so that
// its error can name the field.
type duration struct {
	text string
	set  bool
}

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 250ms", n.Line)
	}
	d.text, d.set = n.Value, true
	return nil
}

func (d *duration) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &d.text); err != nil {
		return fmt.Errorf("want a duration string such as \"250ms\", got %s", b)
	}
	d.set = true
	return nil
}

func (d duration) get(field string) (time.Duration, error) {
	if !d.set {
		return 0, nil
	}
	v, err := time.ParseDuration(d.text)
	if err != nil {
		return 0, invalid(ErrBadPolicy, "%s: %q is not a duration (want a number with a unit, such as 250ms or 1.5s)", field, d.text)
	}
	return v, nil
}

// payload is an action or compensation payload as written in a file.
type payload struct {
	data []byte
	err  error
}

func (p *payload) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		p.data = []byte(n.Value)
		return nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return err
	}
	if v == nil {
		return nil
	}
	p.data, p.err = json.Marshal(v)
	return nil
}

func (p *payload) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		p.data = []byte(s)
	default:
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return err
		}
		p.data = buf.Bytes()
	}
	return nil
}

// ParseYAML reads a definition from YAML and validates it. Unknown fields
// are errors; every error names the line, or the step and field, at fault,
// and wraps ErrInvalidDefinition.
func ParseYAML(data []byte) (Definition, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f sagaFile
	if err := dec.Decode(&f); err != nil {
		return Definition{}, invalid(nil, "YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return f.definition()
}

// ParseJSON reads a definition from JSON, in the same format as ParseYAML,
// and validates it. Unknown fields are errors; every error names the step
// and field at fault and wraps ErrInvalidDefinition.
func ParseJSON(data []byte) (Definition, error) {
	var top struct {
		sagaFile
		Steps []json.RawMessage `json:"steps"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&top); err != nil {
		return Definition{}, invalid(nil, "JSON: %v", err)
	}
	f := top.sagaFile
	for i, raw := range top.Steps {
		var s stepFile
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			var named struct {
				Name string `json:"name"`
			}
			_ = json.Unmarshal(raw, &named)
			return Definition{}, invalid(nil, "JSON: step %d %q: %v", i+1, named.Name, err)
		}
		f.Steps = append(f.Steps, s)
	}
	return f.definition()
}

// Parse reads a definition from YAML or JSON: JSON when the first non-blank
// byte is '{'. JSON is YAML too, but the JSON reader gives better errors.
func Parse(data []byte) (Definition, error) {
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		return ParseJSON(data)
	}
	return ParseYAML(data)
}

func (f sagaFile) definition() (Definition, error) {
	d := Definition{Name: f.Name, Order: Order(f.Order)}
	var err error
	if d.Deadline, err = f.Deadline.get("deadline"); err != nil {
		return Definition{}, err
	}
	if d.Timeout, err = f.Timeout.get("timeout"); err != nil {
		return Definition{}, err
	}
	if f.Retry != nil {
		if d.Retry, err = f.Retry.policy("retry"); err != nil {
			return Definition{}, err
		}
	}
	if c := f.Compensation; c != nil {
		d.Compensation.BackoffFactor = c.BackoffFactor
		d.Compensation.StuckAfterAttempts = c.StuckAfterAttempts
		for _, x := range []struct {
			to   *time.Duration
			from duration
			name string
		}{
			{&d.Compensation.InitialInterval, c.InitialInterval, "initial_interval"},
			{&d.Compensation.MaxInterval, c.MaxInterval, "max_interval"},
			{&d.Compensation.StuckAfter, c.StuckAfter, "stuck_after"},
		} {
			if *x.to, err = x.from.get("compensation: " + x.name); err != nil {
				return Definition{}, err
			}
		}
	}
	for i, sf := range f.Steps {
		where := fmt.Sprintf("step %q", sf.Name)
		if sf.Name == "" {
			where = fmt.Sprintf("step %d", i+1)
		}
		s := Step{
			Name:         sf.Name,
			Participant:  sf.Participant,
			Action:       sf.Action.data,
			Compensation: sf.Compensation.data,
			DependsOn:    sf.DependsOn,
			Pivot:        sf.Pivot,
		}
		for _, p := range []struct {
			p    payload
			name string
		}{{sf.Action, "action"}, {sf.Compensation, "compensation"}} {
			if p.p.err != nil {
				return Definition{}, invalid(nil, "%s: %s: cannot encode as JSON: %v", where, p.name, p.p.err)
			}
		}
		if s.Timeout, err = sf.Timeout.get(where + ": timeout"); err != nil {
			return Definition{}, err
		}
		if sf.Retry != nil {
			r, err := sf.Retry.policy(where + ": retry")
			if err != nil {
				return Definition{}, err
			}
			s.Retry = &r
		}
		d.Steps = append(d.Steps, s)
	}
	if err := d.Validate(); err != nil {
		return Definition{}, err
	}
	return d, nil
}

func (r retryFile) policy(where string) (RetryPolicy, error) {
	p := RetryPolicy{BackoffFactor: r.BackoffFactor, MaxAttempts: r.MaxAttempts, NonRetryable: r.NonRetryable}
	var err error
	if p.InitialInterval, err = r.InitialInterval.get(where + ": initial_interval"); err != nil {
		return p, err
	}
	if p.MaxInterval, err = r.MaxInterval.get(where + ": max_interval"); err != nil {
		return p, err
	}
	return p, nil
}
