package messages

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// awkwardStrings are the strings whose JSON encoding has a special case.
var awkwardStrings = []string{
	"", "order-42", `say "hi"`, `back\slash`, "<script>&amp;</script>", "tab\there", "nl\ncr\r",
	"\b\f\x00\x01\x1f\x7f", "zu spät — 遅すぎる 🙁", "\u2028line\u2029para", "bad \xff utf-8 \xc3", "\xed\xa0\x80",
	strings.Repeat("x", 300),
}

func randomString(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return ""
	}
	if r.IntN(2) == 0 {
		return awkwardStrings[r.IntN(len(awkwardStrings))]
	}
	b := make([]byte, r.IntN(24))
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return string(b)
}

func randomTime(r *rand.Rand) time.Time {
	switch r.IntN(5) {
	case 0:
		return time.Time{}
	case 1:
		return time.Date(2026, 11, 30, 2, 30, 0, 0, time.UTC)
	case 2:
		return time.Date(2026, 1, 2, 3, 4, 5, r.IntN(1e9), time.FixedZone("", 5*3600+30*60))
	}
	return time.Unix(r.Int64N(4e9), r.Int64N(1e9)).UTC()
}

func randomStatus(r *rand.Rand) TxStatus {
	st := TxStatus{
		ID: randomString(r), Protocol: randomString(r), State: randomString(r), Reason: randomString(r),
		TimedOut: r.IntN(2) == 0, OnePhase: r.IntN(2) == 0, Owner: randomString(r), WaitingSince: randomTime(r), StartedAt: randomTime(r),
		UpdatedAt: randomTime(r), Deadline: randomTime(r), HistoryDropped: r.IntN(3) * r.IntN(100),
	}
	if n := r.IntN(4); n > 0 || r.IntN(2) == 0 {
		st.Participants = make([]ParticipantStatus, n)
		for i := range st.Participants {
			st.Participants[i] = ParticipantStatus{Name: randomString(r), Vote: randomString(r), Reason: randomString(r),
				Acked: r.IntN(2) == 0, Sends: r.IntN(3) - 1, Rejected: randomString(r)}
		}
	}
	if n := r.IntN(3); n > 0 || r.IntN(2) == 0 {
		st.Waiting = make([]string, n)
		for i := range st.Waiting {
			st.Waiting[i] = randomString(r)
		}
	}
	if n := r.IntN(3); n > 0 || r.IntN(2) == 0 {
		st.Steps = make([]StepStatus, n)
		for i := range st.Steps {
			st.Steps[i] = StepStatus{Name: randomString(r), Participant: randomString(r), Status: randomString(r),
				Attempts: r.IntN(3), CompensationAttempts: r.IntN(3) - 1, LastError: randomString(r), LastCode: randomString(r),
				NextRetryAt: randomTime(r), Stuck: r.IntN(2) == 0, Pivot: r.IntN(2) == 0, Note: randomString(r)}
		}
	}
	if n := r.IntN(5); n > 0 || r.IntN(2) == 0 {
		st.History = make([]TxEvent, n)
		for i := range st.History {
			st.History[i] = TxEvent{At: randomTime(r), Event: randomString(r), Participant: randomString(r), Step: randomString(r),
				Attempt: r.IntN(3) - 1, Detail: randomString(r), By: randomString(r)}
		}
	}
	return st
}

func TestStatusAppendJSONGivesTheBytesOfJSONMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		st := randomStatus(r)
		want, wantErr := json.Marshal(st)
		if got, err := st.Marshal(); !bytes.Equal(got, want) || (err == nil) != (wantErr == nil) {
			t.Fatalf("case %d: Marshal gives %s, %v; json.Marshal %s, %v", i, got, err, want, wantErr)
		}
		got, err := st.AppendJSON([]byte("prefix"))
		if wantErr != nil || err != nil {
			t.Fatalf("case %d: json.Marshal error %v, AppendJSON error %v", i, wantErr, err)
		}
		if !bytes.Equal(got[len("prefix"):], want) || string(got[:len("prefix")]) != "prefix" {
			t.Fatalf("case %d:\nAppendJSON  %s\njson.Marshal %s", i, got, want)
		}
	}
}

func TestStatusAppendJSONRefusesTheTimesJSONMarshalRefuses(t *testing.T) {
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, st := range map[string]TxStatus{
		"started_at":    {StartedAt: far},
		"waiting_since": {WaitingSince: far},
		"deadline":      {Deadline: far},
		"next_retry_at": {Steps: []StepStatus{{NextRetryAt: far}}},
		"history at":    {History: []TxEvent{{At: far}}},
	} {
		_, wantErr := json.Marshal(st)
		if _, err := st.AppendJSON(nil); err == nil || wantErr == nil {
			t.Errorf("%s in year 10000: AppendJSON error %v, json.Marshal error %v; want both to fail", name, err, wantErr)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range awkwardStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	})
}

func BenchmarkStatusEncode(b *testing.B) {
	at := time.Date(2026, 11, 30, 2, 30, 0, 123456000, time.UTC)
	st := TxStatus{ID: "4FQ3ZKcJmgxA6pJnS0QhZQ", State: "committed", Owner: "SxNJm0Dmj5Csn1tbCDNCF1", StartedAt: at, UpdatedAt: at}
	for _, p := range []string{"inventory", "payment", "shipping"} {
		st.Participants = append(st.Participants, ParticipantStatus{Name: p, Vote: "yes", Acked: true, Sends: 1})
		st.History = append(st.History, TxEvent{At: at, Event: EventVote, Participant: p, Detail: "yes"}, TxEvent{At: at, Event: EventAck, Participant: p, Detail: "commit"})
	}
	st.History = append(st.History, TxEvent{At: at, Event: EventBegun, By: st.Owner}, TxEvent{At: at, Event: EventEnded, Detail: "committed", By: st.Owner})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(st); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := st.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestPeekStateReadsWhatUnmarshalReads(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 20000 {
		st := randomStatus(r)
		data, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var head struct {
			State string `json:"state"`
		}
		if err := json.Unmarshal(data, &head); err != nil {
			t.Fatal(err)
		}
		if got, ok := PeekState(data); !ok || got != head.State {
			t.Fatalf("case %d: PeekState = %q, %v; Unmarshal reads %q from %s", i, got, ok, head.State, data)
		}
	}
	for _, c := range []struct {
		doc, want string
		ok        bool
	}{
		{`{"participants":[{"name":"a","state":"committed"}],"state":"aborted"}`, "aborted", true},
		{`{"nested":{"state":"committed"},"state":"preparing"}`, "preparing", true},
		{`{"id":"a\"state\":\"committed","state":"aborted"}`, "aborted", true},
		{` {"state":"committed"}`, "committed", true},
		{`{"id":"x","state":"a\u00e9b"}`, "aéb", true},
		{`{"id":"x"}`, "", false},
		{`{"id":"x","state":7}`, "", false},
		{`["state":"committed"]`, "", false},
		{`not json`, "", false},
		{``, "", false},
	} {
		if got, ok := PeekState([]byte(c.doc)); got != c.want || ok != c.ok {
			t.Errorf("PeekState(%s) = %q, %v; want %q, %v", c.doc, got, ok, c.want, c.ok)
		}
	}
}

// plainStrings replaces every exported string in the struct v points to,
// at any depth, by what is left of it without the characters AppendJSON escapes.
func plainStrings(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(strings.Map(func(r rune) rune {
			if r < 0x20 || r == '"' || r == '\\' || r == '<' || r == '>' || r == '&' || r == utf8.RuneError || r == '\u2028' || r == '\u2029' {
				return -1
			}
			return r
		}, v.String()))
	case reflect.Pointer:
		plainStrings(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				plainStrings(v.Field(i))
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			plainStrings(v.Index(i))
		}
	}
}

// TestStatusSizeHintIsTheLengthOfAPlainStatus: Marshal sizes its buffer by
// sizeHint, which counts what AppendJSON writes; it is the exact length
// when no character is escaped, and less otherwise.
func TestStatusSizeHintIsTheLengthOfAPlainStatus(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	escaped := 0
	for i := range 20000 {
		st := randomStatus(r)
		if i%2 == 0 {
			plainStrings(reflect.ValueOf(&st))
		}
		b, err := st.AppendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		hint := st.sizeHint()
		switch {
		case bytes.IndexByte(b, '\\') >= 0:
			escaped++
			if hint > len(b) {
				t.Fatalf("case %d: sizeHint %d, more than the %d bytes with escapes of %s", i, hint, len(b), b)
			}
		case hint != len(b):
			t.Fatalf("case %d: sizeHint %d, want the length %d of %s", i, hint, len(b), b)
		}
		if m, _ := st.Marshal(); cap(m) < min(len(b), hint+escapeRoom) {
			t.Fatalf("case %d: Marshal's buffer holds %d bytes, want at least %d", i, cap(m), min(len(b), hint+escapeRoom))
		}
	}
	if escaped < 5000 || escaped > 15000 {
		t.Fatalf("%d of 20000 statuses have escapes: the cases do not cover both kinds", escaped)
	}
}

func TestJSONTimeLenIsTheLengthOfTheTime(t *testing.T) {
	for _, at := range []time.Time{
		time.Date(2026, 11, 30, 2, 30, 0, 0, time.UTC),
		time.Date(2026, 11, 30, 2, 30, 0, 100_000_000, time.UTC),
		time.Date(2026, 11, 30, 2, 30, 0, 123_456_789, time.UTC),
		time.Date(2026, 11, 30, 2, 30, 0, 1, time.UTC),
		time.Date(0, 1, 1, 0, 0, 0, 10, time.FixedZone("", -(9*3600+30*60))),
		time.Date(9999, 12, 31, 23, 59, 59, 999_999_990, time.FixedZone("", 5*3600+30*60)),
		time.Date(1890, 1, 1, 0, 0, 0, 0, time.FixedZone("LMT", -75)),
		time.Now(),
		time.Now().UTC(),
	} {
		b, err := appendJSONTime(nil, at)
		if err != nil {
			t.Fatal(err)
		}
		if got := jsonTimeLen(at); got != len(b) {
			t.Errorf("jsonTimeLen(%v) = %d, want the length of %s", at, got, b)
		}
	}
}
