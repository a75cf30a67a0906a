package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
)

// The standard OpenTelemetry variables natstx reads itself; otlptracehttp
// reads the other OTEL_EXPORTER_OTLP_* ones (headers, timeout, certificates,
// compression), and the SDK OTEL_TRACES_SAMPLER, OTEL_BSP_* and
// OTEL_RESOURCE_ATTRIBUTES.
const (
	envSDKDisabled         = "OTEL_SDK_DISABLED"
	envTracesExporter      = "OTEL_TRACES_EXPORTER"
	envOTLPEndpoint        = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envOTLPTracesEndpoint  = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envOTLPProtocol        = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envOTLPTracesProtocol  = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	otlpHTTPProtobuf       = "http/protobuf"
	tracingShutdownTimeout = 5 * time.Second
)

// tracingOn reports whether the OTEL_* variables ask for traces: off when
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none, and by default; on
// when OTEL_TRACES_EXPORTER=otlp or an OTLP endpoint is set. An exporter or
// a protocol this build lacks is an error that says what it has.
func tracingOn() (bool, error) {
	if strings.EqualFold(strings.TrimSpace(os.Getenv(envSDKDisabled)), "true") {
		return false, nil
	}
	on := os.Getenv(envOTLPEndpoint) != "" || os.Getenv(envOTLPTracesEndpoint) != ""
	if exporters := strings.TrimSpace(os.Getenv(envTracesExporter)); exporters != "" {
		on = false
		for _, e := range strings.Split(exporters, ",") {
			switch e = strings.TrimSpace(e); e {
			case "otlp":
				on = true
			case "none":
				return false, nil
			case "console":
				return false, fmt.Errorf("%s=console is not supported: this natstx build exports traces with OTLP over HTTP only; use %s=otlp (or none)", envTracesExporter, envTracesExporter)
			default:
				return false, fmt.Errorf("%s=%q: unsupported trace exporter; this natstx build has otlp (OTLP over HTTP) and none", envTracesExporter, e)
			}
		}
	}
	if !on {
		return false, nil
	}
	for _, name := range []string{envOTLPTracesProtocol, envOTLPProtocol} {
		if p := strings.TrimSpace(os.Getenv(name)); p != "" {
			if p != otlpHTTPProtobuf {
				return false, fmt.Errorf("%s=%q: only %s is built in (OTLP over HTTP, port 4318 by default); point natstx at the collector's HTTP receiver", name, p, otlpHTTPProtobuf)
			}
			break // the traces-specific one wins
		}
	}
	return true, nil
}

// setupTracing returns the tracer provider the standard OTEL_* variables
// ask for (see tracingOn), exporting spans with OTLP over HTTP (otlptracehttp
// reads the OTEL_EXPORTER_OTLP_* variables: endpoint, headers, timeout,
// TLS), batched, under a resource whose service.name is OTEL_SERVICE_NAME
// or else serviceName; and shutdown, which flushes the spans not yet
// exported and stops. With tracing off, tp is nil (no tracing, at no cost)
// and shutdown does nothing. Errors are usage errors naming the variable.
func setupTracing(ctx context.Context, serviceName string) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	on, err := tracingOn()
	if err != nil || !on {
		if err != nil {
			err = usageError{err}
		}
		return nil, noop, err
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK())
	if err != nil {
		return nil, noop, usageError{fmt.Errorf("tracing: OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES: %w", err)}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, noop, usageError{fmt.Errorf("tracing: the OTLP exporter (OTEL_EXPORTER_OTLP_* variables): %w", err)}
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return sdk, sdk.Shutdown, nil
}

// startTracing is setupTracing for a long-running command (natstx server,
// participant, demo): it logs whether tracing is on, and returns stop,
// which flushes the spans (within 5s) and logs a failure to. Call stop once
// the command's work has stopped, so that its last spans are exported.
func startTracing(ctx context.Context, serviceName string, log *zap.Logger) (tp trace.TracerProvider, stop func(), err error) {
	tp, shutdown, err := setupTracing(ctx, serviceName)
	if err != nil {
		return nil, func() {}, err
	}
	if tp == nil {
		return nil, func() {}, nil
	}
	log.Info("tracing on: exporting spans with OTLP over HTTP", zap.String("service", serviceName))
	return tp, func() {
		sctx, cancel := context.WithTimeout(context.Background(), tracingShutdownTimeout)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("tracing: flushing the last spans failed", zap.Error(err))
		}
	}, nil
}

// withTraceParent returns ctx carrying the remote span context of a W3C
// traceparent header value (the --traceparent flag), which the coordinator
// continues; an empty value returns ctx as is.
func withTraceParent(ctx context.Context, traceparent string) (context.Context, error) {
	if traceparent == "" {
		return ctx, nil
	}
	out := propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{messages.HeaderTraceParent: traceparent})
	if !trace.SpanContextFromContext(out).IsValid() {
		return ctx, usageError{errors.New("--traceparent " + fmt.Sprintf("%q", traceparent) +
			" is not a W3C traceparent: want 00-<32 hex digits of trace ID>-<16 hex digits of parent span ID>-<2 hex digits of flags>, e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}
	}
	return out, nil
}
