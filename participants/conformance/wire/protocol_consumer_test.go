package wire

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/orchestrator"
	"github.com/natstx/natstx/participants"
	"github.com/natstx/natstx/participants/internal/consumer"
)

// placeholder is a participant name that the document writes
// <participant>.
const placeholder = "xPARTICIPANTx"

// consumerTable reads the table of the consumer's settings in
// docs/PROTOCOL.md (after "**The consumer.**"): each row's setting, without
// its backquotes, and value, in order.
func consumerTable(t *testing.T, doc string) [][2]string {
	t.Helper()
	_, after, ok := strings.Cut(doc, "**The consumer.**")
	if !ok {
		t.Fatal(`docs/PROTOCOL.md has no paragraph "**The consumer.**"`)
	}
	_, after, ok = strings.Cut(after, "\n| setting | value |\n| --- | --- |\n")
	if !ok {
		t.Fatal(`docs/PROTOCOL.md: no table "| setting | value |" after "**The consumer.**"`)
	}
	var rows [][2]string
	for _, line := range strings.Split(after, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 2 {
			t.Fatalf("docs/PROTOCOL.md, the consumer's settings: row %q has %d cells, want 2", line, len(cells))
		}
		rows = append(rows, [2]string{strings.Trim(cells[0], "`"), cells[1]})
	}
	if len(rows) == 0 {
		t.Fatal("docs/PROTOCOL.md: the table of the consumer's settings has no rows")
	}
	return rows
}

// configFields maps the JSON names of jetstream.ConsumerConfig (the
// JetStream API's) to cfg's fields.
func configFields(cfg jetstream.ConsumerConfig) map[string]reflect.Value {
	v := reflect.ValueOf(cfg)
	fields := map[string]reflect.Value{}
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = v.Field(i)
		}
	}
	return fields
}

var (
	codeSpan        = regexp.MustCompile("`([^`]*)`")
	ackWaitCell     = regexp.MustCompile(`(?:^|[ ;,])(\w+) by default`)
	maxAckPendCell  = regexp.MustCompile(`^(\w+) the participant's concurrency: (\d+) with the default concurrency of (\d+)$`)
	creatorDefaults = regexp.MustCompile("with the settings above and their defaults \\(`ack_wait` (\\w+), `max_ack_pending` (\\d+)\\)")
	multipliers     = map[string]int{"once": 1, "twice": 2, "thrice": 3}
)

// TestProtocolConsumerSettings checks the table of the consumer's settings
// in docs/PROTOCOL.md against the consumer the coordinator creates
// (orchestrator.ParticipantConsumerConfig) and the one the Go runtime and
// the watermill adapter want with their defaults (consumer.Config with
// participants.DefaultAckWait and participants.DefaultConcurrency): each
// row's value is the code's, every setting the code sets has a row, and
// what the last row leaves to the server's defaults the code does not set.
// The defaults the section on who creates the consumer repeats are checked
// too.
func TestProtocolConsumerSettings(t *testing.T) {
	raw, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	rows := consumerTable(t, doc)

	coordinator := orchestrator.ParticipantConsumerConfig(placeholder)
	runtime := consumer.Config(placeholder, participants.DefaultAckWait, participants.DefaultConcurrency)
	if !reflect.DeepEqual(coordinator, runtime) {
		t.Errorf("the coordinator creates the consumer %+v, the Go runtime with its defaults wants %+v: the document can describe only one", coordinator, runtime)
	}
	fields := configFields(coordinator)

	listed := map[string]bool{}
	for _, row := range rows {
		setting, value := row[0], row[1]
		if setting == "everything else" {
			// The settings it names are the server's defaults: the code
			// leaves them unset.
			names := codeSpan.FindAllStringSubmatch(value, -1)
			if len(names) == 0 {
				t.Errorf("docs/PROTOCOL.md, the consumer's settings: row %q names no setting", setting)
			}
			for _, m := range names {
				f, ok := fields[m[1]]
				if !ok {
					t.Errorf("docs/PROTOCOL.md, the consumer's settings: %q, in row %q, is no setting of the JetStream API's consumer config", m[1], setting)
					continue
				}
				listed[m[1]] = true
				if !f.IsZero() {
					t.Errorf("docs/PROTOCOL.md leaves %s to the server's default, but the code sets it to %v", m[1], f.Interface())
				}
			}
			continue
		}
		f, ok := fields[setting]
		if !ok {
			t.Errorf("docs/PROTOCOL.md, the consumer's settings: %q is no setting of the JetStream API's consumer config", setting)
			continue
		}
		listed[setting] = true
		switch setting {
		case "ack_wait":
			m := ackWaitCell.FindStringSubmatch(value)
			if m == nil {
				t.Errorf("docs/PROTOCOL.md, ack_wait: %q does not say %q", value, "<duration> by default")
				continue
			}
			d, err := time.ParseDuration(m[1])
			if err != nil {
				t.Errorf("docs/PROTOCOL.md, ack_wait: %q: %v", m[1], err)
			} else if d != coordinator.AckWait || d != participants.DefaultAckWait {
				t.Errorf("docs/PROTOCOL.md: ack_wait %v by default; the coordinator creates the consumer with %v, the Go runtime's default is %v",
					d, coordinator.AckWait, participants.DefaultAckWait)
			}
		case "max_ack_pending":
			m := maxAckPendCell.FindStringSubmatch(value)
			if m == nil {
				t.Errorf("docs/PROTOCOL.md, max_ack_pending: %q does not match %s", value, maxAckPendCell)
				continue
			}
			times, ok := multipliers[m[1]]
			if !ok {
				t.Errorf("docs/PROTOCOL.md, max_ack_pending: %q is no multiplier this test knows", m[1])
				continue
			}
			for _, c := range []int{1, 3, 100, participants.DefaultConcurrency} {
				if got := consumer.Config(placeholder, time.Second, c).MaxAckPending; got != times*c {
					t.Errorf("docs/PROTOCOL.md: max_ack_pending is %s the concurrency; with concurrency %d the Go runtime wants %d", m[1], c, got)
				}
			}
			pending, _ := strconv.Atoi(m[2])
			concurrency, _ := strconv.Atoi(m[3])
			if concurrency != participants.DefaultConcurrency {
				t.Errorf("docs/PROTOCOL.md: the default concurrency is %d; the Go runtime's is %d", concurrency, participants.DefaultConcurrency)
			}
			if pending != coordinator.MaxAckPending || pending != times*concurrency {
				t.Errorf("docs/PROTOCOL.md: max_ack_pending %d by default (%s %d); the coordinator creates the consumer with %d",
					pending, m[1], concurrency, coordinator.MaxAckPending)
			}
		default:
			m := codeSpan.FindStringSubmatch(value)
			if m == nil {
				t.Errorf("docs/PROTOCOL.md, %s: %q has no `value`", setting, value)
				continue
			}
			// The value as the JetStream API's JSON has it.
			var data strings.Builder
			enc := json.NewEncoder(&data)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(f.Interface()); err != nil {
				t.Fatal(err)
			}
			want := strings.ReplaceAll(strings.Trim(strings.TrimSpace(data.String()), `"`), placeholder, "<participant>")
			if m[1] != want {
				t.Errorf("docs/PROTOCOL.md: %s is `%s`; the code's is `%s`", setting, m[1], want)
			}
		}
	}
	// Every setting the code sets has a row; ack_policy and deliver_policy
	// too, though the code's values are the zero ones.
	for name, f := range fields {
		if (!f.IsZero() || name == "ack_policy" || name == "deliver_policy") && !listed[name] {
			t.Errorf("the code sets the consumer's %s (%v), which the table of docs/PROTOCOL.md does not list", name, f.Interface())
		}
	}

	m := creatorDefaults.FindStringSubmatch(doc)
	if m == nil {
		t.Fatalf("docs/PROTOCOL.md does not say %s", creatorDefaults)
	}
	if d, err := time.ParseDuration(m[1]); err != nil || d != coordinator.AckWait {
		t.Errorf("docs/PROTOCOL.md: the coordinator creates the consumer with ack_wait %s; the code, with %v", m[1], coordinator.AckWait)
	}
	if n, _ := strconv.Atoi(m[2]); n != coordinator.MaxAckPending {
		t.Errorf("docs/PROTOCOL.md: the coordinator creates the consumer with max_ack_pending %s; the code, with %d", m[2], coordinator.MaxAckPending)
	}
}
