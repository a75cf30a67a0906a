package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/natstx/natstx/orchestrator/metrics"
)

// metricsOptions are the flags of the metrics endpoint of server and
// participant.
type metricsOptions struct {
	listen string
	pprof  bool
}

func addMetricsFlags(f *pflag.FlagSet, o *metricsOptions) {
	f.StringVar(&o.listen, "metrics-listen", "", "HOST:PORT to serve Prometheus metrics (/metrics), /healthz and /readyz on; empty: off. Nothing there needs credentials: keep it on loopback or a private network")
	f.BoolVar(&o.pprof, "pprof", false, "with --metrics-listen, also serve Go's profiler under /debug/pprof/")
}

// serveMetrics starts the metrics endpoint if o asks for one, and returns
// the function that stops it; ready backs /readyz.
func serveMetrics(o metricsOptions, ready func() error, log *zap.Logger, cs ...prometheus.Collector) (stop func(), err error) {
	if o.listen == "" {
		if o.pprof {
			return nil, usageError{errors.New("--pprof needs --metrics-listen")}
		}
		return func() {}, nil
	}
	if _, _, err := splitHostPort("metrics-listen", o.listen); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", o.listen, err)
	}
	srv := &http.Server{Handler: metrics.Handler(metrics.NewRegistry(cs...), ready, o.pprof), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("the metrics endpoint stopped", zap.Error(err))
		}
	}()
	log.Info("serving metrics", zap.String("listen", ln.Addr().String()), zap.Bool("pprof", o.pprof))
	return func() {
		_ = srv.Close()
		<-done
	}, nil
}
