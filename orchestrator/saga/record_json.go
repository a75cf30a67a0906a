package saga

import (
	"encoding/base64"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/natstx/natstx/messages"
)

// A driver writes a saga's record at every step of it, so encoding a Record
// is on its hot path: AppendJSON writes the bytes json.Marshal gives, field
// by field, without reflection. The package's tests check it against
// json.Marshal on random records and by fuzzing; a field added to Record,
// Definition or the types they hold must be added here too (the tests fail
// until it is).

// escapeRoom is what Marshal allows beyond SizeHint for escaped characters
// and long numbers before the buffer must grow.
const escapeRoom = 64

// Marshal returns r as JSON, as AppendJSON writes it, in a buffer sized
// for it.
func (r *Record) Marshal() ([]byte, error) {
	return r.AppendJSON(make([]byte, 0, r.SizeHint()+escapeRoom))
}

// SizeHint is the length of r's JSON when none of its strings has a
// character to escape and its backoff factors are whole numbers below
// 1e15; a little less otherwise. It serves to size a buffer for AppendJSON.
func (r *Record) SizeHint() int {
	n := len(`{"id":`) + messages.JSONStringLen(r.ID) + len(`,"revision":`) + messages.JSONUintLen(r.Revision) +
		len(`,"definition":`) + r.Definition.sizeHint() + len(`,"state":`) + messages.JSONStringLen(string(r.State)) +
		len(`,"started_at":`) + messages.JSONTimeLen(r.StartedAt) + len(`,"steps":`) + len(`}`)
	if r.Reason != "" {
		n += len(`,"reason":`) + messages.JSONStringLen(r.Reason)
	}
	if !r.Deadline.IsZero() {
		n += len(`,"deadline":`) + messages.JSONTimeLen(r.Deadline)
	}
	if r.PastPivot {
		n += len(`,"past_pivot":true`)
	}
	if r.Steps == nil {
		n += len("null")
	} else {
		n += messages.JSONArrayLen(len(r.Steps))
		for i := range r.Steps {
			n += r.Steps[i].sizeHint()
		}
	}
	if len(r.Operator) > 0 {
		n += len(`,"operator":`) + messages.JSONArrayLen(len(r.Operator))
		for i := range r.Operator {
			n += r.Operator[i].sizeHint()
		}
	}
	return n
}

func (d *Definition) sizeHint() int {
	n := len(`{"steps":`) + len(`,"retry":`) + d.Retry.sizeHint() +
		len(`,"compensation":`) + d.Compensation.sizeHint() + len(`}`)
	if d.Name != "" {
		n += len(`"name":,`) + messages.JSONStringLen(d.Name)
	}
	if d.Order != "" {
		n += len(`"order":,`) + messages.JSONStringLen(string(d.Order))
	}
	if d.Steps == nil {
		n += len("null")
	} else {
		n += messages.JSONArrayLen(len(d.Steps))
		for i := range d.Steps {
			n += d.Steps[i].sizeHint()
		}
	}
	if d.Deadline != 0 {
		n += len(`,"deadline":`) + messages.JSONIntLen(int64(d.Deadline))
	}
	if d.Timeout != 0 {
		n += len(`,"timeout":`) + messages.JSONIntLen(int64(d.Timeout))
	}
	return n
}

func (s *Step) sizeHint() int {
	n := len(`{"name":`) + messages.JSONStringLen(s.Name) + len(`,"participant":`) + messages.JSONStringLen(s.Participant) + len(`}`)
	if len(s.Action) > 0 {
		n += len(`,"action":""`) + base64.StdEncoding.EncodedLen(len(s.Action))
	}
	if len(s.Compensation) > 0 {
		n += len(`,"compensation":""`) + base64.StdEncoding.EncodedLen(len(s.Compensation))
	}
	if len(s.DependsOn) > 0 {
		n += len(`,"depends_on":`) + messages.JSONArrayLen(len(s.DependsOn))
		for _, d := range s.DependsOn {
			n += messages.JSONStringLen(d)
		}
	}
	if s.Pivot {
		n += len(`,"pivot":true`)
	}
	if s.Timeout != 0 {
		n += len(`,"timeout":`) + messages.JSONIntLen(int64(s.Timeout))
	}
	if s.Retry != nil {
		n += len(`,"retry":`) + s.Retry.sizeHint()
	}
	return n
}

// sizeHint counts the fields of p as if each were the first, then takes
// off the comma the first does not have.
func (p *RetryPolicy) sizeHint() int {
	n := len(`{}`)
	if p.InitialInterval != 0 {
		n += len(`,"initial_interval":`) + messages.JSONIntLen(int64(p.InitialInterval))
	}
	if p.BackoffFactor != 0 {
		n += len(`,"backoff_factor":`) + floatLen(p.BackoffFactor)
	}
	if p.MaxInterval != 0 {
		n += len(`,"max_interval":`) + messages.JSONIntLen(int64(p.MaxInterval))
	}
	if p.MaxAttempts != 0 {
		n += len(`,"max_attempts":`) + messages.JSONIntLen(int64(p.MaxAttempts))
	}
	if len(p.NonRetryable) > 0 {
		n += len(`,"non_retryable":`) + messages.JSONArrayLen(len(p.NonRetryable))
		for _, c := range p.NonRetryable {
			n += messages.JSONStringLen(c)
		}
	}
	if n > len(`{}`) {
		n--
	}
	return n
}

func (c *CompensationPolicy) sizeHint() int {
	n := len(`{}`)
	if c.InitialInterval != 0 {
		n += len(`,"initial_interval":`) + messages.JSONIntLen(int64(c.InitialInterval))
	}
	if c.BackoffFactor != 0 {
		n += len(`,"backoff_factor":`) + floatLen(c.BackoffFactor)
	}
	if c.MaxInterval != 0 {
		n += len(`,"max_interval":`) + messages.JSONIntLen(int64(c.MaxInterval))
	}
	if c.StuckAfterAttempts != 0 {
		n += len(`,"stuck_after_attempts":`) + messages.JSONIntLen(int64(c.StuckAfterAttempts))
	}
	if c.StuckAfter != 0 {
		n += len(`,"stuck_after":`) + messages.JSONIntLen(int64(c.StuckAfter))
	}
	if n > len(`{}`) {
		n--
	}
	return n
}

func (s *StepRecord) sizeHint() int {
	n := len(`{"name":`) + messages.JSONStringLen(s.Name) + len(`,"status":`) + messages.JSONStringLen(string(s.Status)) + len(`}`)
	if s.Attempts != 0 {
		n += len(`,"attempts":`) + messages.JSONIntLen(int64(s.Attempts))
	}
	if !s.FirstAttemptAt.IsZero() {
		n += len(`,"first_attempt_at":`) + messages.JSONTimeLen(s.FirstAttemptAt)
	}
	if s.MayHaveRun {
		n += len(`,"may_have_run":true`)
	}
	if s.CompensationAttempts != 0 {
		n += len(`,"compensation_attempts":`) + messages.JSONIntLen(int64(s.CompensationAttempts))
	}
	if !s.CompensationStartedAt.IsZero() {
		n += len(`,"compensation_started_at":`) + messages.JSONTimeLen(s.CompensationStartedAt)
	}
	if s.LastError != "" {
		n += len(`,"last_error":`) + messages.JSONStringLen(s.LastError)
	}
	if s.LastCode != "" {
		n += len(`,"last_code":`) + messages.JSONStringLen(s.LastCode)
	}
	if !s.NextRetryAt.IsZero() {
		n += len(`,"next_retry_at":`) + messages.JSONTimeLen(s.NextRetryAt)
	}
	if s.Stuck {
		n += len(`,"stuck":true`)
	}
	if s.Note != "" {
		n += len(`,"note":`) + messages.JSONStringLen(s.Note)
	}
	return n
}

func (a *OperatorAction) sizeHint() int {
	n := len(`{"at":`) + messages.JSONTimeLen(a.At) + len(`,"kind":`) + messages.JSONStringLen(string(a.Kind)) +
		len(`,"who":`) + messages.JSONStringLen(a.Who) + len(`,"why":`) + messages.JSONStringLen(a.Why) + len(`}`)
	if a.Step != "" {
		n += len(`,"step":`) + messages.JSONStringLen(a.Step)
	}
	return n
}

// floatLen is the length of f in JSON if f is a whole number below 1e15 in
// magnitude (a backoff factor usually is), and a guess otherwise.
func floatLen(f float64) int {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return messages.JSONIntLen(int64(f))
	}
	return len("1.25")
}

// AppendJSON appends r as JSON to b: the same bytes json.Marshal gives for
// r, written without reflection. Its error is where json.Marshal fails too:
// a time it cannot write (a year outside 0-9999) or a backoff factor that
// is not a number or infinite.
func (r *Record) AppendJSON(b []byte) ([]byte, error) {
	var err error
	b = messages.AppendJSONString(append(b, `{"id":`...), r.ID)
	b = strconv.AppendUint(append(b, `,"revision":`...), r.Revision, 10)
	if b, err = r.Definition.appendJSON(append(b, `,"definition":`...)); err != nil {
		return nil, err
	}
	b = messages.AppendJSONString(append(b, `,"state":`...), string(r.State))
	if r.Reason != "" {
		b = messages.AppendJSONString(append(b, `,"reason":`...), r.Reason)
	}
	if b, err = messages.AppendJSONTime(append(b, `,"started_at":`...), r.StartedAt); err != nil {
		return nil, err
	}
	if !r.Deadline.IsZero() {
		if b, err = messages.AppendJSONTime(append(b, `,"deadline":`...), r.Deadline); err != nil {
			return nil, err
		}
	}
	if r.PastPivot {
		b = append(b, `,"past_pivot":true`...)
	}
	b = append(b, `,"steps":`...)
	if r.Steps == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range r.Steps {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = r.Steps[i].appendJSON(b); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	if len(r.Operator) > 0 {
		b = append(b, `,"operator":[`...)
		for i := range r.Operator {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = r.Operator[i].appendJSON(b); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

func (d *Definition) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, '{')
	if d.Name != "" {
		b = messages.AppendJSONString(append(b, `"name":`...), d.Name)
		b = append(b, ',')
	}
	if d.Order != "" {
		b = messages.AppendJSONString(append(b, `"order":`...), string(d.Order))
		b = append(b, ',')
	}
	b = append(b, `"steps":`...)
	if d.Steps == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range d.Steps {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = d.Steps[i].appendJSON(b); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	if d.Deadline != 0 {
		b = strconv.AppendInt(append(b, `,"deadline":`...), int64(d.Deadline), 10)
	}
	if d.Timeout != 0 {
		b = strconv.AppendInt(append(b, `,"timeout":`...), int64(d.Timeout), 10)
	}
	if b, err = d.Retry.appendJSON(append(b, `,"retry":`...)); err != nil {
		return nil, err
	}
	if b, err = d.Compensation.appendJSON(append(b, `,"compensation":`...)); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

func (s *Step) appendJSON(b []byte) ([]byte, error) {
	b = messages.AppendJSONString(append(b, `{"name":`...), s.Name)
	b = messages.AppendJSONString(append(b, `,"participant":`...), s.Participant)
	if len(s.Action) > 0 {
		b = base64.StdEncoding.AppendEncode(append(b, `,"action":"`...), s.Action)
		b = append(b, '"')
	}
	if len(s.Compensation) > 0 {
		b = base64.StdEncoding.AppendEncode(append(b, `,"compensation":"`...), s.Compensation)
		b = append(b, '"')
	}
	if len(s.DependsOn) > 0 {
		b = appendStrings(append(b, `,"depends_on":`...), s.DependsOn)
	}
	if s.Pivot {
		b = append(b, `,"pivot":true`...)
	}
	if s.Timeout != 0 {
		b = strconv.AppendInt(append(b, `,"timeout":`...), int64(s.Timeout), 10)
	}
	if s.Retry != nil {
		var err error
		if b, err = s.Retry.appendJSON(append(b, `,"retry":`...)); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// fields writes the fields of an object whose fields are all omitempty:
// each after a comma but the first.
type fields struct {
	b []byte
	n int
}

func (f *fields) key(k string) {
	if f.n > 0 {
		f.b = append(f.b, ',')
	}
	f.n++
	f.b = append(f.b, k...)
}

func (f *fields) duration(k string, d time.Duration) {
	if d != 0 {
		f.key(k)
		f.b = strconv.AppendInt(f.b, int64(d), 10)
	}
}

func (f *fields) int(k string, i int) {
	if i != 0 {
		f.key(k)
		f.b = strconv.AppendInt(f.b, int64(i), 10)
	}
}

func (f *fields) float(k string, v float64) error {
	if v == 0 {
		return nil
	}
	f.key(k)
	var err error
	f.b, err = appendFloat(f.b, v)
	return err
}

func (p *RetryPolicy) appendJSON(b []byte) ([]byte, error) {
	f := fields{b: append(b, '{')}
	f.duration(`"initial_interval":`, p.InitialInterval)
	if err := f.float(`"backoff_factor":`, p.BackoffFactor); err != nil {
		return nil, err
	}
	f.duration(`"max_interval":`, p.MaxInterval)
	f.int(`"max_attempts":`, p.MaxAttempts)
	if len(p.NonRetryable) > 0 {
		f.key(`"non_retryable":`)
		f.b = appendStrings(f.b, p.NonRetryable)
	}
	return append(f.b, '}'), nil
}

func (c *CompensationPolicy) appendJSON(b []byte) ([]byte, error) {
	f := fields{b: append(b, '{')}
	f.duration(`"initial_interval":`, c.InitialInterval)
	if err := f.float(`"backoff_factor":`, c.BackoffFactor); err != nil {
		return nil, err
	}
	f.duration(`"max_interval":`, c.MaxInterval)
	f.int(`"stuck_after_attempts":`, c.StuckAfterAttempts)
	f.duration(`"stuck_after":`, c.StuckAfter)
	return append(f.b, '}'), nil
}

func (s *StepRecord) appendJSON(b []byte) ([]byte, error) {
	var err error
	b = messages.AppendJSONString(append(b, `{"name":`...), s.Name)
	b = messages.AppendJSONString(append(b, `,"status":`...), string(s.Status))
	if s.Attempts != 0 {
		b = strconv.AppendInt(append(b, `,"attempts":`...), int64(s.Attempts), 10)
	}
	if !s.FirstAttemptAt.IsZero() {
		if b, err = messages.AppendJSONTime(append(b, `,"first_attempt_at":`...), s.FirstAttemptAt); err != nil {
			return nil, err
		}
	}
	if s.MayHaveRun {
		b = append(b, `,"may_have_run":true`...)
	}
	if s.CompensationAttempts != 0 {
		b = strconv.AppendInt(append(b, `,"compensation_attempts":`...), int64(s.CompensationAttempts), 10)
	}
	if !s.CompensationStartedAt.IsZero() {
		if b, err = messages.AppendJSONTime(append(b, `,"compensation_started_at":`...), s.CompensationStartedAt); err != nil {
			return nil, err
		}
	}
	if s.LastError != "" {
		b = messages.AppendJSONString(append(b, `,"last_error":`...), s.LastError)
	}
	if s.LastCode != "" {
		b = messages.AppendJSONString(append(b, `,"last_code":`...), s.LastCode)
	}
	if !s.NextRetryAt.IsZero() {
		if b, err = messages.AppendJSONTime(append(b, `,"next_retry_at":`...), s.NextRetryAt); err != nil {
			return nil, err
		}
	}
	if s.Stuck {
		b = append(b, `,"stuck":true`...)
	}
	if s.Note != "" {
		b = messages.AppendJSONString(append(b, `,"note":`...), s.Note)
	}
	return append(b, '}'), nil
}

func (a *OperatorAction) appendJSON(b []byte) ([]byte, error) {
	b, err := messages.AppendJSONTime(append(b, `{"at":`...), a.At)
	if err != nil {
		return nil, err
	}
	b = messages.AppendJSONString(append(b, `,"kind":`...), string(a.Kind))
	if a.Step != "" {
		b = messages.AppendJSONString(append(b, `,"step":`...), a.Step)
	}
	b = messages.AppendJSONString(append(b, `,"who":`...), a.Who)
	b = messages.AppendJSONString(append(b, `,"why":`...), a.Why)
	return append(b, '}'), nil
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = messages.AppendJSONString(b, s)
	}
	return append(b, ']')
}

// errFloat is AppendJSON's error for a backoff factor json.Marshal refuses.
var errFloat = errors.New("natstx saga: a backoff factor that is not a number or infinite has no JSON")

// appendFloat appends f as encoding/json writes a float64: like
// ECMAScript's number to string, in the shortest form that reads back as
// f, with an exponent below 1e-6 and from 1e21, and the exponent not
// padded.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, errFloat
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 is written e-9.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}
