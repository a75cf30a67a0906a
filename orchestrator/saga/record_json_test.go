package saga

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// awkwardStrings are the strings whose JSON encoding has a special case.
var awkwardStrings = []string{
	"", "order-42", `say "hi"`, `back\slash`, "<script>&amp;</script>", "tab\there", "nl\ncr\r",
	"\b\f\x00\x01\x1f\x7f", "zu spät — 遅すぎる 🙁", "\u2028line\u2029para", "bad \xff utf-8 \xc3", "\xed\xa0\x80",
	"\ufffd", strings.Repeat("x", 300),
}

func randomString(r *rand.Rand) string {
	switch r.IntN(6) {
	case 0, 1:
		return ""
	case 2, 3:
		return awkwardStrings[r.IntN(len(awkwardStrings))]
	case 4:
		return "step-" + string(rune('a'+r.IntN(26)))
	}
	b := make([]byte, r.IntN(24))
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return string(b)
}

// randomTime is a zero time one time in four; now and then (one in 300) a
// time json.Marshal refuses: a year past 9999 or a zone 24 hours off.
func randomTime(r *rand.Rand) time.Time {
	switch r.IntN(12) {
	case 0, 1, 2:
		return time.Time{}
	case 3:
		return time.Date(2026, 11, 30, 2, 30, 0, 0, time.UTC)
	case 4:
		return time.Date(2026, 1, 2, 3, 4, 5, r.IntN(1e9), time.FixedZone("", 5*3600+30*60))
	case 5:
		return time.Date(1890, 1, 1, 0, 0, 0, r.IntN(10)*100, time.FixedZone("LMT", -75))
	case 6:
		return time.Date(r.IntN(10000), time.Month(1+r.IntN(12)), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1e9),
			time.FixedZone("", (r.IntN(47)-23)*3600+r.IntN(4)*15*60))
	case 7:
		return time.Time{}.In(time.FixedZone("X", 3600)) // zero, in a zone
	case 8:
		if r.IntN(25) == 0 {
			if r.IntN(2) == 0 {
				return time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
			}
			return time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600))
		}
	}
	return time.Unix(r.Int64N(4e9), r.Int64N(1e9)*int64(r.IntN(2))).UTC()
}

func randomDuration(r *rand.Rand) time.Duration {
	switch r.IntN(4) {
	case 0:
		return 0
	case 1:
		return time.Duration(r.IntN(100)) * time.Millisecond
	case 2:
		return -time.Duration(r.Int64N(1e12))
	}
	return time.Duration(r.Uint64())
}

// randomFloat is zero half the time; now and then (one in 200) not a
// number or infinite, which json.Marshal refuses.
func randomFloat(r *rand.Rand) float64 {
	switch r.IntN(20) {
	case 0, 1, 2, 3, 4, 5, 6, 7, 8, 9:
		return 0
	case 10:
		return math.Copysign(0, -1)
	case 11:
		return 2
	case 12:
		return 1.5
	case 13:
		return []float64{1e-6, 9.99e-7, 1e-7, 1e21, 9.99e20, 1e300, 5e-324, -1e-9, math.MaxFloat64, 123456789012345678}[r.IntN(10)]
	case 14:
		if r.IntN(10) == 0 {
			return []float64{math.NaN(), math.Inf(1), math.Inf(-1)}[r.IntN(3)]
		}
	case 15:
		return math.Float64frombits(r.Uint64()) // NaN and infinities at times too
	}
	return r.NormFloat64() * math.Pow(10, float64(r.IntN(40)-20))
}

func randomBytes(r *rand.Rand) []byte {
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, r.IntN(40))
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

func randomStrings(r *rand.Rand) []string {
	switch r.IntN(3) {
	case 0:
		return nil
	case 1:
		return []string{}
	}
	ss := make([]string, 1+r.IntN(3))
	for i := range ss {
		ss[i] = randomString(r)
	}
	return ss
}

func randomRetry(r *rand.Rand) RetryPolicy {
	return RetryPolicy{InitialInterval: randomDuration(r), BackoffFactor: randomFloat(r), MaxInterval: randomDuration(r),
		MaxAttempts: r.IntN(4) - 1, NonRetryable: randomStrings(r)}
}

// sliceOf returns nil, an empty slice or n random elements, n below 5.
func sliceOf[T any](r *rand.Rand, elem func() T) []T {
	switch r.IntN(5) {
	case 0:
		return nil
	case 1:
		return []T{}
	}
	s := make([]T, 1+r.IntN(4))
	for i := range s {
		s[i] = elem()
	}
	return s
}

func randomRecord(r *rand.Rand) Record {
	def := Definition{
		Name: randomString(r), Order: Order(randomString(r)), Deadline: randomDuration(r), Timeout: randomDuration(r),
		Retry: randomRetry(r),
		Compensation: CompensationPolicy{InitialInterval: randomDuration(r), BackoffFactor: randomFloat(r),
			MaxInterval: randomDuration(r), StuckAfterAttempts: r.IntN(30) - 5, StuckAfter: randomDuration(r)},
		Steps: sliceOf(r, func() Step {
			s := Step{Name: randomString(r), Participant: randomString(r), Action: randomBytes(r), Compensation: randomBytes(r),
				DependsOn: randomStrings(r), Pivot: r.IntN(3) == 0, Timeout: randomDuration(r)}
			if r.IntN(2) == 0 {
				p := randomRetry(r)
				s.Retry = &p
			}
			return s
		}),
	}
	if r.IntN(3) == 0 {
		def = def.WithDefaults()
	}
	return Record{
		ID: randomString(r), Revision: []uint64{0, 1, 7, math.MaxUint64, r.Uint64()}[r.IntN(5)], Definition: def,
		State: State(randomString(r)), Reason: randomString(r), StartedAt: randomTime(r), Deadline: randomTime(r),
		PastPivot: r.IntN(2) == 0,
		Steps: sliceOf(r, func() StepRecord {
			return StepRecord{Name: randomString(r), Status: StepStatus(randomString(r)), Attempts: r.IntN(4) - 1,
				FirstAttemptAt: randomTime(r), MayHaveRun: r.IntN(2) == 0, CompensationAttempts: r.IntN(3) * (r.IntN(1000) - 1),
				CompensationStartedAt: randomTime(r), LastError: randomString(r), LastCode: randomString(r),
				NextRetryAt: randomTime(r), Stuck: r.IntN(2) == 0, Note: randomString(r)}
		}),
		Operator: sliceOf(r, func() OperatorAction {
			return OperatorAction{At: randomTime(r), Kind: EventKind(randomString(r)), Step: randomString(r), Who: randomString(r), Why: randomString(r)}
		}),
	}
}

// checkRecordJSON fails unless Marshal and AppendJSON give the bytes of
// json.Marshal for rec, or all fail.
func checkRecordJSON(t *testing.T, what string, rec Record) (refused bool) {
	t.Helper()
	want, wantErr := json.Marshal(rec)
	got, err := rec.Marshal()
	if (err == nil) != (wantErr == nil) || !bytes.Equal(got, want) {
		t.Fatalf("%s: Marshal gives %s, %v;\njson.Marshal gives %s, %v", what, got, err, want, wantErr)
	}
	got, err = rec.AppendJSON([]byte("prefix"))
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("%s: AppendJSON error %v, json.Marshal error %v", what, err, wantErr)
	}
	if err == nil && (string(got[:len("prefix")]) != "prefix" || !bytes.Equal(got[len("prefix"):], want)) {
		t.Fatalf("%s:\nAppendJSON   %s\njson.Marshal %s", what, got, want)
	}
	return wantErr != nil
}

func TestRecordAppendJSONGivesTheBytesOfJSONMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const n = 20000
	refused := 0
	for i := range n {
		if checkRecordJSON(t, "random record "+strconv.Itoa(i), randomRecord(r)) {
			refused++
		}
	}
	t.Logf("json.Marshal refused %d of %d records", refused, n)
	// Most records encode; a few have a time or a factor json.Marshal
	// refuses, and AppendJSON must refuse them too.
	if refused < 50 || refused > n/4 {
		t.Fatalf("json.Marshal refused %d of %d records: the cases do not cover both kinds", refused, n)
	}
	for _, rec := range []Record{{}, {Steps: []StepRecord{}, Definition: Definition{Steps: []Step{}}}, typicalRecord()} {
		checkRecordJSON(t, "fixed record", rec)
	}
}

// TestRecordAppendJSONRefusesWhatJSONMarshalRefuses: every time and every
// backoff factor json.Marshal cannot write fails AppendJSON too.
func TestRecordAppendJSONRefusesWhatJSONMarshalRefuses(t *testing.T) {
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, change := range map[string]func(*Record){
		"started_at":              func(r *Record) { r.StartedAt = far },
		"deadline":                func(r *Record) { r.Deadline = far },
		"first_attempt_at":        func(r *Record) { r.Steps[0].FirstAttemptAt = far },
		"compensation_started_at": func(r *Record) { r.Steps[1].CompensationStartedAt = far },
		"next_retry_at":           func(r *Record) { r.Steps[2].NextRetryAt = far },
		"operator at":             func(r *Record) { r.Operator = []OperatorAction{{At: far}} },
		"retry backoff_factor":    func(r *Record) { r.Definition.Retry.BackoffFactor = math.NaN() },
		"compensation factor":     func(r *Record) { r.Definition.Compensation.BackoffFactor = math.Inf(1) },
		"step's backoff_factor":   func(r *Record) { r.Definition.Steps[1].Retry.BackoffFactor = math.Inf(-1) },
	} {
		rec := typicalRecord()
		rec.Definition.Steps = append([]Step(nil), rec.Definition.Steps...)
		for i := range rec.Definition.Steps {
			p := *rec.Definition.Steps[i].Retry
			rec.Definition.Steps[i].Retry = &p
		}
		change(&rec)
		_, wantErr := json.Marshal(rec)
		_, err := rec.AppendJSON(nil)
		if err == nil || wantErr == nil {
			t.Errorf("%s: AppendJSON error %v, json.Marshal error %v; want both to fail", name, err, wantErr)
		}
	}
}

// plainRecord replaces every string of the value v points to, at any
// depth, by what is left of it without the characters AppendJSON escapes,
// and every float by a whole number: the record SizeHint counts exactly.
func plainRecord(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(strings.Map(func(r rune) rune {
			if r < 0x20 || r == '"' || r == '\\' || r == '<' || r == '>' || r == '&' || r == utf8.RuneError || r == '\u2028' || r == '\u2029' {
				return -1
			}
			return r
		}, v.String()))
	case reflect.Float64:
		if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			v.SetFloat(2)
		} else {
			v.SetFloat(math.Trunc(math.Mod(f, 1e12)))
		}
	case reflect.Pointer:
		if !v.IsNil() {
			plainRecord(v.Elem())
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			return
		}
		for i := range v.NumField() {
			plainRecord(v.Field(i))
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.Uint8 {
			for i := range v.Len() {
				plainRecord(v.Index(i))
			}
		}
	}
}

// TestRecordSizeHintIsTheLengthOfAPlainRecord: Marshal sizes its buffer by
// SizeHint, which counts what AppendJSON writes; it is the exact length
// when no character is escaped and the floats are whole, and less
// otherwise.
func TestRecordSizeHintIsTheLengthOfAPlainRecord(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	escaped, exact := 0, 0
	for i := range 20000 {
		rec := randomRecord(r)
		if i%2 == 0 {
			plainRecord(reflect.ValueOf(&rec))
		}
		b, err := rec.AppendJSON(nil)
		if err != nil {
			continue
		}
		hint := rec.SizeHint()
		switch {
		case i%2 == 0:
			exact++
			if hint != len(b) {
				t.Fatalf("case %d: SizeHint %d, want the length %d of %s", i, hint, len(b), b)
			}
		case bytes.IndexByte(b, '\\') >= 0:
			escaped++
		}
		if m, _ := rec.Marshal(); cap(m) < min(len(b), hint+escapeRoom) {
			t.Fatalf("case %d: Marshal's buffer holds %d bytes, want at least %d", i, cap(m), min(len(b), hint+escapeRoom))
		}
	}
	if escaped < 2000 || exact < 5000 {
		t.Fatalf("%d records with escapes, %d plain: the cases do not cover both kinds", escaped, exact)
	}
}

// TestRecordMarshalTakesOneBuffer: a typical record is written in the
// buffer Marshal makes, without growing it.
func TestRecordMarshalTakesOneBuffer(t *testing.T) {
	rec := typicalRecord()
	if n := testing.AllocsPerRun(100, func() { _, _ = rec.Marshal() }); n != 1 {
		t.Errorf("Marshal of a typical record allocates %v times, want 1", n)
	}
}

func FuzzRecordAppendJSON(f *testing.F) {
	f.Add("order-42", "inventory", []byte(`{"qty":2}`), int64(1767225600), int64(123456789), 0, 2.0, int64(5e9), uint8(0))
	f.Add("<script>&amp;", "\u2028\u2029", []byte{}, int64(0), int64(0), 19800, 1e-7, int64(-1), uint8(0xff))
	f.Add("bad \xff utf-8", "", []byte(nil), int64(253402300800), int64(1), -75, math.Inf(1), int64(0), uint8(0x55))
	f.Fuzz(func(t *testing.T, s1, s2 string, payload []byte, sec, nsec int64, offset int, factor float64, d int64, flags uint8) {
		at := time.Unix(sec, nsec).In(time.FixedZone(s2, offset))
		if flags&1 != 0 {
			at = at.UTC()
		}
		p := &RetryPolicy{InitialInterval: time.Duration(d), BackoffFactor: factor, MaxAttempts: int(d % 7), NonRetryable: []string{s1, s2}}
		if flags&2 != 0 {
			p = nil
		}
		steps := []StepRecord{{Name: s1, Status: StepStatus(s2), Attempts: int(flags), FirstAttemptAt: at, LastError: s2, Note: s1}, {}}
		if flags&4 != 0 {
			steps = nil
		}
		rec := Record{
			ID: s1, Revision: uint64(sec), State: State(s2), Reason: s1, StartedAt: at, PastPivot: flags&8 != 0, Steps: steps,
			Definition: Definition{Name: s2, Order: Order(s1), Deadline: time.Duration(d), Timeout: time.Duration(-d),
				Retry:        RetryPolicy{BackoffFactor: -factor, NonRetryable: []string{s1}},
				Compensation: CompensationPolicy{BackoffFactor: factor, StuckAfter: time.Duration(d), StuckAfterAttempts: int(flags) - 3},
				Steps:        []Step{{Name: s1, Participant: s2, Action: payload, Compensation: []byte(s1), DependsOn: []string{s2}, Retry: p}}},
		}
		if flags&16 != 0 {
			rec.Deadline = at
			rec.Operator = []OperatorAction{{At: at, Kind: EventKind(s1), Step: s2, Who: s1, Why: s2}}
		}
		checkRecordJSON(t, "fuzzed record", rec)
	})
}

// typicalRecord is the record of a bench saga of three steps at its last
// write: completed, each step done at its first attempt.
func typicalRecord() Record {
	at := time.Date(2026, 11, 30, 2, 30, 0, 123456789, time.UTC)
	payload := []byte(`{"order":"4FQ3ZKcJmgxA6pJnS0QhZQ","qty":2}`)
	def := Definition{
		Name:         "bench",
		Timeout:      5 * time.Second,
		Retry:        RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond},
		Compensation: CompensationPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond},
	}
	rec := Record{ID: "4FQ3ZKcJmgxA6pJnS0QhZQ", Revision: 7, State: StateCompleted, StartedAt: at}
	for _, p := range []string{"inventory", "payment", "shipping"} {
		def.Steps = append(def.Steps, Step{Name: p, Participant: p, Action: payload, Compensation: payload})
		rec.Steps = append(rec.Steps, StepRecord{Name: p, Status: StepDone, Attempts: 1, FirstAttemptAt: at.Add(time.Millisecond), MayHaveRun: true})
	}
	rec.Definition = def.WithDefaults()
	return rec
}

func BenchmarkRecordEncode(b *testing.B) {
	rec := typicalRecord()
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(rec); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := rec.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
