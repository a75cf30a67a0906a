package messages

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Marshal returns st as JSON, as AppendJSON writes it, in a buffer sized
// for it.
func (st *TxStatus) Marshal() ([]byte, error) {
	return st.AppendJSON(make([]byte, 0, st.sizeHint()+escapeRoom))
}

// escapeRoom is what Marshal allows beyond sizeHint for the escapes of a
// few characters (a reason quoting a name) before the buffer must grow.
const escapeRoom = 32

// sizeHint is the length of st's JSON when none of its strings has a
// character to escape: what AppendJSON writes, counted.
func (st *TxStatus) sizeHint() int {
	n := len(`{"id":`) + jsonStringLen(st.ID) + len(`,"state":`) + jsonStringLen(st.State) +
		len(`,"owner":`) + jsonStringLen(st.Owner) + len(`,"participants":`) +
		len(`,"started_at":`) + jsonTimeLen(st.StartedAt) + len(`,"updated_at":`) + jsonTimeLen(st.UpdatedAt) + len(`}`)
	if st.Protocol != "" {
		n += len(`,"protocol":`) + jsonStringLen(st.Protocol)
	}
	if st.Reason != "" {
		n += len(`,"reason":`) + jsonStringLen(st.Reason)
	}
	if st.TimedOut {
		n += len(`,"timed_out":true`)
	}
	if st.OnePhase {
		n += len(`,"one_phase":true`)
	}
	if st.Participants == nil {
		n += len("null")
	} else {
		n += jsonArrayLen(len(st.Participants))
		for i := range st.Participants {
			n += st.Participants[i].sizeHint()
		}
	}
	if len(st.Waiting) > 0 {
		n += len(`,"waiting":`) + jsonArrayLen(len(st.Waiting))
		for _, w := range st.Waiting {
			n += jsonStringLen(w)
		}
	}
	if !st.WaitingSince.IsZero() {
		n += len(`,"waiting_since":`) + jsonTimeLen(st.WaitingSince)
	}
	if len(st.Steps) > 0 {
		n += len(`,"steps":`) + jsonArrayLen(len(st.Steps))
		for i := range st.Steps {
			n += st.Steps[i].sizeHint()
		}
	}
	if !st.Deadline.IsZero() {
		n += len(`,"deadline":`) + jsonTimeLen(st.Deadline)
	}
	if len(st.History) > 0 {
		n += len(`,"history":`) + jsonArrayLen(len(st.History))
		for i := range st.History {
			n += st.History[i].sizeHint()
		}
	}
	if st.HistoryDropped != 0 {
		n += len(`,"history_dropped":`) + jsonIntLen(st.HistoryDropped)
	}
	return n
}

// sizeHint is the length of p's JSON if no character is escaped.
func (p *ParticipantStatus) sizeHint() int {
	n := len(`{"name":`) + jsonStringLen(p.Name) + len(`,"vote":`) + jsonStringLen(p.Vote) +
		len(`,"acked":false`) + len(`,"sends":`) + jsonIntLen(p.Sends) + len(`}`)
	if p.Reason != "" {
		n += len(`,"reason":`) + jsonStringLen(p.Reason)
	}
	if p.Acked {
		n -= len("false") - len("true")
	}
	if p.Rejected != "" {
		n += len(`,"rejected":`) + jsonStringLen(p.Rejected)
	}
	return n
}

// sizeHint is the length of s's JSON if no character is escaped.
func (s *StepStatus) sizeHint() int {
	n := len(`{"name":`) + jsonStringLen(s.Name) + len(`,"participant":`) + jsonStringLen(s.Participant) +
		len(`,"status":`) + jsonStringLen(s.Status) + len(`}`)
	if s.Attempts != 0 {
		n += len(`,"attempts":`) + jsonIntLen(s.Attempts)
	}
	if s.CompensationAttempts != 0 {
		n += len(`,"compensation_attempts":`) + jsonIntLen(s.CompensationAttempts)
	}
	if s.LastError != "" {
		n += len(`,"last_error":`) + jsonStringLen(s.LastError)
	}
	if s.LastCode != "" {
		n += len(`,"last_code":`) + jsonStringLen(s.LastCode)
	}
	if !s.NextRetryAt.IsZero() {
		n += len(`,"next_retry_at":`) + jsonTimeLen(s.NextRetryAt)
	}
	if s.Stuck {
		n += len(`,"stuck":true`)
	}
	if s.Pivot {
		n += len(`,"pivot":true`)
	}
	if s.Note != "" {
		n += len(`,"note":`) + jsonStringLen(s.Note)
	}
	return n
}

// sizeHint is the length of ev's JSON if no character is escaped.
func (ev *TxEvent) sizeHint() int {
	n := len(`{"at":`) + jsonTimeLen(ev.At) + len(`,"event":`) + jsonStringLen(ev.Event) + len(`}`)
	if ev.Participant != "" {
		n += len(`,"participant":`) + jsonStringLen(ev.Participant)
	}
	if ev.Step != "" {
		n += len(`,"step":`) + jsonStringLen(ev.Step)
	}
	if ev.Attempt != 0 {
		n += len(`,"attempt":`) + jsonIntLen(ev.Attempt)
	}
	if ev.Detail != "" {
		n += len(`,"detail":`) + jsonStringLen(ev.Detail)
	}
	if ev.By != "" {
		n += len(`,"by":`) + jsonStringLen(ev.By)
	}
	return n
}

// jsonStringLen is the length of s as a JSON string if no character of s
// is escaped.
func jsonStringLen(s string) int { return len(s) + 2 }

// jsonArrayLen is the length of the brackets and commas of an array of n
// elements.
func jsonArrayLen(n int) int { return 2 + max(n-1, 0) }

// jsonIntLen is the length of i in JSON.
func jsonIntLen(i int) int { return JSONIntLen(int64(i)) }

// jsonTimeLen is the length of t as appendJSONTime writes it (RFC 3339
// with as many fractional digits as it takes) for a year from 0 to 9999.
func jsonTimeLen(t time.Time) int {
	n := len(`"2006-01-02T15:04:05Z"`)
	if ns := t.Nanosecond(); ns != 0 {
		n += len(".999999999")
		for ; ns%10 == 0; ns /= 10 {
			n--
		}
	}
	if _, offset := t.Zone(); offset != 0 {
		n += len("+07:00") - len("Z")
	}
	return n
}

// AppendJSON appends st as JSON to b: the same bytes json.Marshal gives for
// st, written without reflection. A coordinator writes a status at the
// start and the end of every transaction, so this is on its hot path; the
// result is checked against json.Marshal by the package's tests. The error
// is json.Marshal's for a time it cannot encode (a year outside 0-9999).
func (st *TxStatus) AppendJSON(b []byte) ([]byte, error) {
	var err error
	b = append(b, `{"id":`...)
	b = appendJSONString(b, st.ID)
	if st.Protocol != "" {
		b = append(b, `,"protocol":`...)
		b = appendJSONString(b, st.Protocol)
	}
	b = append(b, `,"state":`...)
	b = appendJSONString(b, st.State)
	if st.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, st.Reason)
	}
	if st.TimedOut {
		b = append(b, `,"timed_out":true`...)
	}
	if st.OnePhase {
		b = append(b, `,"one_phase":true`...)
	}
	b = append(b, `,"owner":`...)
	b = appendJSONString(b, st.Owner)
	b = append(b, `,"participants":`...)
	if st.Participants == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range st.Participants {
			if i > 0 {
				b = append(b, ',')
			}
			b = st.Participants[i].appendJSON(b)
		}
		b = append(b, ']')
	}
	if len(st.Waiting) > 0 {
		b = append(b, `,"waiting":[`...)
		for i, w := range st.Waiting {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, w)
		}
		b = append(b, ']')
	}
	if !st.WaitingSince.IsZero() {
		if b, err = appendJSONTime(append(b, `,"waiting_since":`...), st.WaitingSince); err != nil {
			return nil, err
		}
	}
	if b, err = appendJSONTime(append(b, `,"started_at":`...), st.StartedAt); err != nil {
		return nil, err
	}
	if b, err = appendJSONTime(append(b, `,"updated_at":`...), st.UpdatedAt); err != nil {
		return nil, err
	}
	if len(st.Steps) > 0 {
		b = append(b, `,"steps":[`...)
		for i := range st.Steps {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = st.Steps[i].appendJSON(b); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	if !st.Deadline.IsZero() {
		if b, err = appendJSONTime(append(b, `,"deadline":`...), st.Deadline); err != nil {
			return nil, err
		}
	}
	if len(st.History) > 0 {
		b = append(b, `,"history":[`...)
		for i := range st.History {
			if i > 0 {
				b = append(b, ',')
			}
			if b, err = st.History[i].appendJSON(b); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	if st.HistoryDropped != 0 {
		b = strconv.AppendInt(append(b, `,"history_dropped":`...), int64(st.HistoryDropped), 10)
	}
	return append(b, '}'), nil
}

func (p *ParticipantStatus) appendJSON(b []byte) []byte {
	b = appendJSONString(append(b, `{"name":`...), p.Name)
	b = appendJSONString(append(b, `,"vote":`...), p.Vote)
	if p.Reason != "" {
		b = appendJSONString(append(b, `,"reason":`...), p.Reason)
	}
	b = strconv.AppendBool(append(b, `,"acked":`...), p.Acked)
	b = strconv.AppendInt(append(b, `,"sends":`...), int64(p.Sends), 10)
	if p.Rejected != "" {
		b = appendJSONString(append(b, `,"rejected":`...), p.Rejected)
	}
	return append(b, '}')
}

func (s *StepStatus) appendJSON(b []byte) ([]byte, error) {
	b = appendJSONString(append(b, `{"name":`...), s.Name)
	b = appendJSONString(append(b, `,"participant":`...), s.Participant)
	b = appendJSONString(append(b, `,"status":`...), s.Status)
	if s.Attempts != 0 {
		b = strconv.AppendInt(append(b, `,"attempts":`...), int64(s.Attempts), 10)
	}
	if s.CompensationAttempts != 0 {
		b = strconv.AppendInt(append(b, `,"compensation_attempts":`...), int64(s.CompensationAttempts), 10)
	}
	if s.LastError != "" {
		b = appendJSONString(append(b, `,"last_error":`...), s.LastError)
	}
	if s.LastCode != "" {
		b = appendJSONString(append(b, `,"last_code":`...), s.LastCode)
	}
	if !s.NextRetryAt.IsZero() {
		var err error
		if b, err = appendJSONTime(append(b, `,"next_retry_at":`...), s.NextRetryAt); err != nil {
			return nil, err
		}
	}
	if s.Stuck {
		b = append(b, `,"stuck":true`...)
	}
	if s.Pivot {
		b = append(b, `,"pivot":true`...)
	}
	if s.Note != "" {
		b = appendJSONString(append(b, `,"note":`...), s.Note)
	}
	return append(b, '}'), nil
}

func (ev *TxEvent) appendJSON(b []byte) ([]byte, error) {
	b, err := appendJSONTime(append(b, `{"at":`...), ev.At)
	if err != nil {
		return nil, err
	}
	b = appendJSONString(append(b, `,"event":`...), ev.Event)
	if ev.Participant != "" {
		b = appendJSONString(append(b, `,"participant":`...), ev.Participant)
	}
	if ev.Step != "" {
		b = appendJSONString(append(b, `,"step":`...), ev.Step)
	}
	if ev.Attempt != 0 {
		b = strconv.AppendInt(append(b, `,"attempt":`...), int64(ev.Attempt), 10)
	}
	if ev.Detail != "" {
		b = appendJSONString(append(b, `,"detail":`...), ev.Detail)
	}
	if ev.By != "" {
		b = appendJSONString(append(b, `,"by":`...), ev.By)
	}
	return append(b, '}'), nil
}

// appendJSONTime appends t as time.Time's MarshalJSON does.
func appendJSONTime(b []byte, t time.Time) ([]byte, error) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		return nil, err
	}
	return append(b, '"'), nil
}

// appendJSONString appends s as a JSON string the way encoding/json does by
// default: quotes, backslashes and control characters escaped, and also
// <, >, & (HTML-safe), U+2028 and U+2029; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// PeekState returns the state of a TxStatus encoded as JSON without
// decoding the rest of it (its participants, steps and history), for a
// reader that skips most statuses by their state. ok is false when data is
// not a JSON object with a string "state".
func PeekState(data []byte) (state string, ok bool) {
	// A status written by AppendJSON has its state as its second or third
	// key, before any array or object: no '[' or '{' before the key means
	// the key is the top level's (a string holding "state":" would have
	// its quotes escaped), and a value with no backslash is read as is.
	const key = `"state":"`
	if i := bytes.Index(data, []byte(key)); i > 0 && data[0] == '{' && !bytes.ContainsAny(data[1:i], "[{") {
		v := data[i+len(key):]
		if j := bytes.IndexByte(v, '"'); j >= 0 && bytes.IndexByte(v[:j], '\\') < 0 && utf8.Valid(v[:j]) {
			return string(v[:j]), true
		}
	}
	// Anything else: walk the top level's keys.
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		if name, _ := t.(string); name == "state" {
			err := dec.Decode(&state)
			return state, err == nil
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return "", false
		}
	}
	return "", false
}
