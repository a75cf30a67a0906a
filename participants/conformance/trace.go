package conformance

import (
	"context"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/trace"
)

// RemoteSpan is the trace context of a coordinator's span, for a
// transport's tracing tests: the span context and the traceparent header
// that carries it. n tells them apart.
func RemoteSpan(n byte) (trace.SpanContext, string) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, n, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13},
		SpanID:     trace.SpanID{0x0a, n, 1, 2, 3, 4, 5, 6},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	return sc, fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID())
}

// HandlerSpans records the span context that each handler call's context
// carries, by a key the handler chooses (such as "op txid"). Its zero value
// is ready; it is safe for concurrent use.
type HandlerSpans struct {
	mu  sync.Mutex
	got map[string][]trace.SpanContext
}

// Record records the span context of ctx under key.
func (h *HandlerSpans) Record(ctx context.Context, key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.got == nil {
		h.got = map[string][]trace.SpanContext{}
	}
	h.got[key] = append(h.got[key], trace.SpanContextFromContext(ctx))
}

// Of returns the span contexts recorded under key, one a call.
func (h *HandlerSpans) Of(key string) []trace.SpanContext {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.got[key]
}
