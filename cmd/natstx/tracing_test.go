package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otelVars are the variables setupTracing reads (itself or through the
// SDK); each test starts with none of them set.
var otelVars = []string{
	envSDKDisabled, envTracesExporter, envOTLPEndpoint, envOTLPTracesEndpoint, envOTLPProtocol, envOTLPTracesProtocol,
	"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_INSECURE",
}

// clearOTEL unsets every OTEL variable for the test (t.Setenv restores them
// after) and sets the given ones, "NAME=value".
func clearOTEL(t *testing.T, set ...string) {
	t.Helper()
	for _, k := range otelVars {
		t.Setenv(k, "")
		if err := os.Unsetenv(k); err != nil {
			t.Fatal(err)
		}
	}
	for _, kv := range set {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// collector is an OTLP/HTTP trace receiver on 127.0.0.1 that keeps what it
// is sent.
type collector struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []*coltrace.ExportTraceServiceRequest
	errs []string
}

func newCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &req)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf":
			c.errs = append(c.errs, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		case err != nil:
			c.errs = append(c.errs, err.Error())
		default:
			c.reqs = append(c.reqs, &req)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// exported is one span the collector received, with its resource's
// service.name.
type exported struct {
	service string
	span    *tracepb.Span
}

// spans returns every span received so far, and fails on a request that
// was not an OTLP/HTTP protobuf export.
func (c *collector) spans(t *testing.T) []exported {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errs) > 0 {
		t.Fatalf("the collector got requests that are not OTLP/HTTP protobuf exports: %v", c.errs)
	}
	var out []exported
	for _, req := range c.reqs {
		for _, rs := range req.GetResourceSpans() {
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out = append(out, exported{service: service, span: s})
				}
			}
		}
	}
	return out
}

func TestTracingIsOffByDefaultAndWhenDisabled(t *testing.T) {
	for _, c := range []struct {
		name string
		env  []string
	}{
		{"nothing set", nil},
		{"sdk disabled", []string{envSDKDisabled + "=true", envOTLPEndpoint + "=http://127.0.0.1:1"}},
		{"exporter none", []string{envTracesExporter + "=none", envOTLPEndpoint + "=http://127.0.0.1:1"}},
		{"only a protocol", []string{envOTLPProtocol + "=grpc"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			clearOTEL(t, c.env...)
			tp, shutdown, err := setupTracing(context.Background(), "natstx-test")
			if err != nil || tp != nil {
				t.Fatalf("tracer provider %v, error %v; want none, no error", tp, err)
			}
			if err := shutdown(context.Background()); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
		})
	}
}

// TestTracingExportsToTheEndpointAtShutdown: with an OTLP endpoint set,
// a span ended is exported over HTTP by the time shutdown returns, under
// the default service name or OTEL_SERVICE_NAME.
func TestTracingExportsToTheEndpointAtShutdown(t *testing.T) {
	for _, c := range []struct {
		name, service string
		env           []string
	}{
		{"endpoint", "natstx-test", []string{envOTLPEndpoint + "=URL"}},
		{"traces endpoint and service name", "orders", []string{envOTLPTracesEndpoint + "=URL/v1/traces", "OTEL_SERVICE_NAME=orders", envOTLPProtocol + "=http/protobuf"}},
		{"exporter otlp", "natstx-test", []string{envTracesExporter + "=otlp", envOTLPEndpoint + "=URL"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			col := newCollector(t)
			var env []string
			for _, kv := range c.env {
				env = append(env, strings.ReplaceAll(kv, "URL", col.srv.URL))
			}
			clearOTEL(t, env...)
			tp, shutdown, err := setupTracing(context.Background(), "natstx-test")
			if err != nil || tp == nil {
				t.Fatalf("tracer provider %v, error %v; want one", tp, err)
			}
			_, span := tp.Tracer("test").Start(context.Background(), "a span")
			span.End()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := shutdown(ctx); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			got := col.spans(t)
			if len(got) != 1 || got[0].span.GetName() != "a span" || got[0].service != c.service {
				t.Fatalf("exported %v, want one span \"a span\" of service %s", got, c.service)
			}
		})
	}
}

// TestTracingRefusesWhatIsNotBuiltIn: OTLP over gRPC (or JSON), or an
// exporter other than otlp and none, is a usage error saying what is
// built in.
func TestTracingRefusesWhatIsNotBuiltIn(t *testing.T) {
	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"grpc", []string{envOTLPEndpoint + "=http://127.0.0.1:4317", envOTLPProtocol + "=grpc"}, "only http/protobuf is built in"},
		{"traces grpc", []string{envTracesExporter + "=otlp", envOTLPTracesProtocol + "=grpc", envOTLPProtocol + "=http/protobuf"}, envOTLPTracesProtocol + `="grpc": only http/protobuf is built in`},
		{"json", []string{envOTLPEndpoint + "=http://127.0.0.1:4318", envOTLPProtocol + "=http/json"}, "only http/protobuf is built in"},
		{"console", []string{envTracesExporter + "=console"}, "console is not supported"},
		{"zipkin", []string{envTracesExporter + "=zipkin"}, "unsupported trace exporter"},
	} {
		t.Run(c.name, func(t *testing.T) {
			clearOTEL(t, c.env...)
			tp, _, err := setupTracing(context.Background(), "natstx-test")
			var ue usageError
			if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) || tp != nil {
				t.Fatalf("error %v (usage error %v), tracer provider %v; want a usage error with %q", err, errors.As(err, &ue), tp, c.want)
			}
		})
	}
}

func TestTxBeginRefusesABadTraceparentNamingTheFlag(t *testing.T) {
	url := deadURL(t)
	for _, args := range [][]string{
		{"tx", "begin", "-p", "loyalty", "--traceparent", "garbage"},
		{"tx", "begin", "-p", "loyalty", "--traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		{"tx", "begin", "--saga", "--step", "grant=loyalty", "--traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"},
	} {
		wantExit(t, 2, "--traceparent", append(args, "--nats", url)...)
	}
}

// TestParticipantExportsItsCommandSpansAtExit: `natstx participant` with an
// OTLP endpoint in its environment handles each command in a span that it
// exports, at the latest when it stops, under service.name
// natstx-participant-NAME; `tx begin --traceparent` with a valid value runs
// the transaction, and the participant's spans are in the caller's trace
// (the trace ID of the traceparent), each the child of the coordinator's
// span of its command, which the command's headers carried. The coordinator
// traces too (its own OTLP endpoint), so that its command spans are the
// participant's parents. (A coordinator without tracing,
// orchestrator.Config.TracerProvider nil, records no span but passes the
// caller's trace context on in its commands unchanged: see
// TestAnEngineThatDoesNotTracePassesTheCallersTraceOn in orchestrator.)
func TestParticipantExportsItsCommandSpansAtExit(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	col, colServer := newCollector(t), newCollector(t)
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	srv := startProc(t, []string{envOTLPEndpoint + "=" + colServer.srv.URL}, "server", "--nats-listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", t.TempDir(), "--log-level", "warn")
	srv.waitLine(t, "ready on", 30*time.Second)
	p := startProc(t, []string{envOTLPEndpoint + "=" + col.srv.URL}, "participant", "sim", "--name", "loyalty", "--nats", url, "--log-level", "warn")
	p.waitLine(t, "ready", 30*time.Second)
	wantExit(t, 0, "committed", "tx", "begin", "--nats", url, "--id", "traced-1", "-p", "loyalty",
		"--traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("participant exited %d; stderr:\n%s", code, p.stderr.String())
	}
	if code := srv.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("server exited %d; stderr:\n%s", code, srv.stderr.String())
	}
	// The coordinator's command spans, by span ID.
	commands := map[string]string{}
	for _, e := range colServer.spans(t) {
		if strings.HasPrefix(e.span.GetName(), "natstx.command.") {
			commands[hex.EncodeToString(e.span.GetSpanId())] = e.span.GetName()
		}
	}
	ops := map[string]bool{}
	for _, e := range col.spans(t) {
		txid := ""
		for _, kv := range e.span.GetAttributes() {
			if kv.GetKey() == "natstx.txid" {
				txid = kv.GetValue().GetStringValue()
			}
		}
		if e.service != "natstx-participant-loyalty" || txid != "traced-1" || e.span.GetKind() != tracepb.Span_SPAN_KIND_CONSUMER {
			t.Errorf("span %q of service %q, transaction %q, kind %v", e.span.GetName(), e.service, txid, e.span.GetKind())
		}
		if got := hex.EncodeToString(e.span.GetTraceId()); got != traceID {
			t.Errorf("span %q is in trace %s, want the caller's trace %s", e.span.GetName(), got, traceID)
		}
		parent := hex.EncodeToString(e.span.GetParentSpanId())
		if op := strings.TrimPrefix(e.span.GetName(), "natstx.participant "); commands[parent] != "natstx.command."+op {
			t.Errorf("span %q has parent %s (%q), want the coordinator's natstx.command.%s span; its command spans: %v", e.span.GetName(), parent, commands[parent], op, commands)
		}
		ops[e.span.GetName()] = true
	}
	if !ops["natstx.participant prepare"] || !ops["natstx.participant commit"] {
		t.Fatalf("exported spans %v, want the prepare's and the commit's", ops)
	}
}
