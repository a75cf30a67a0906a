package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	neturl "net/url"
	"os"
	"runtime"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// The metrics bench reads from a --memory-metrics endpoint: those of the
// process and Go collectors of client_golang, which orchestrator/metrics
// NewRegistry registers.
const (
	promRSSMetric  = "process_resident_memory_bytes"
	promHeapMetric = "go_memstats_heap_inuse_bytes"
)

// memScrapeTimeout bounds one scrape of --memory-metrics.
const memScrapeTimeout = 10 * time.Second

// errRSSUnavailable is what a sample of bench's own process says on an OS
// without /proc/self/status: RSS is not known there, and not estimated.
var errRSSUnavailable = fmt.Errorf("RSS unavailable on %s: it is read from /proc/self/status (VmRSS), which only Linux has", runtime.GOOS)

// benchMemory is the "memory" key of bench's JSON (with --memory-every):
// the samples and the RSS growth between the sample after the first Every
// transactions and the last one.
type benchMemory struct {
	Every int `json:"every"`
	// Source is "self" (bench's own process) or the --memory-metrics URL.
	Source  string      `json:"source"`
	Samples []memSample `json:"samples"`
	// RSSGrowth is the last sample's RSS over the second sample's (the one
	// after the first Every transactions); null without both, or with no
	// sample after the second.
	RSSGrowth *float64 `json:"rss_growth"`
}

// memSample is one memory sample: transactions finished when it was taken,
// seconds since the load started, and the process's resident set size and
// Go heap in use in bytes. A value that could not be read is null and Error
// says why.
type memSample struct {
	Transactions int64   `json:"transactions"`
	ElapsedS     float64 `json:"elapsed_s"`
	RSSBytes     *int64  `json:"rss_bytes"`
	HeapBytes    *int64  `json:"heap_bytes"`
	Error        string  `json:"error,omitempty"`

	missing bool // a value could not be read (RSS on an OS without it aside)
	noRSS   bool // RSS is not known on this OS
}

// memReader reads RSS and heap in use; a value it could not read is nil and
// err says why.
type memReader func(ctx context.Context) (rss, heap *int64, err error)

// memSampler takes bench's memory samples: one when the load starts, then
// one each time another every transactions have finished, read by the
// goroutine whose transaction made the count (one of --concurrency workers
// waits for the read, the others go on). A nil memSampler takes none.
type memSampler struct {
	every  int64
	source string
	read   memReader
	warn   io.Writer // a sample that could not be read is reported here at once

	ctx     context.Context
	start   time.Time
	mu      sync.Mutex
	samples []memSample
	failed  int // samples missing a value (RSS on an OS without it aside)
}

// checkMemoryFlags checks --memory-every and --memory-metrics.
func checkMemoryFlags(every int, metricsURL string) error {
	if every < 0 {
		return usageError{fmt.Errorf("--memory-every must not be negative (got %d); 0 takes no memory samples", every)}
	}
	if metricsURL == "" {
		return nil
	}
	if every == 0 {
		return usageError{errors.New("--memory-metrics needs --memory-every N, the transactions between two memory samples")}
	}
	u, err := neturl.Parse(metricsURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Errorf("--memory-metrics %q: want an http:// or https:// URL of a Prometheus endpoint, such as http://127.0.0.1:9464/metrics", metricsURL)}
	}
	return nil
}

// newMemSampler returns the sampler o asks for, nil without --memory-every.
func newMemSampler(o benchOptions, warn io.Writer) *memSampler {
	if o.memEvery == 0 {
		return nil
	}
	m := &memSampler{every: int64(o.memEvery), source: "self", read: readSelfMemory, warn: warn}
	if o.memMetrics != "" {
		m.source, m.read = o.memMetrics, scrapeMemory(o.memMetrics)
	}
	return m
}

// describe says whose memory the samples are, for the text output.
func (m *benchMemory) describe() string {
	if m.Source == "self" {
		return "bench's own process (embedded NATS if any, coordinator if its own, simulated participants, load)"
	}
	return m.Source
}

// begin takes the first sample, before any transaction finished; start is
// the load's start, ctx the run's.
func (m *memSampler) begin(ctx context.Context, start time.Time) {
	if m == nil {
		return
	}
	m.ctx, m.start = ctx, start
	m.take(0)
}

// finished is told the count of finished transactions each time one
// finishes, and takes a sample at every multiple of m.every.
func (m *memSampler) finished(n int64) {
	if m == nil || n%m.every != 0 {
		return
	}
	m.take(n)
}

// take reads one sample after n transactions finished and keeps it, unless
// the run was cut short while it was read.
func (m *memSampler) take(n int64) {
	rss, heap, err := m.read(m.ctx)
	s := memSample{Transactions: n, ElapsedS: time.Since(m.start).Seconds(), RSSBytes: rss, HeapBytes: heap}
	if err != nil && m.ctx.Err() != nil {
		return
	}
	if err != nil {
		s.Error = err.Error()
		s.noRSS = errors.Is(err, errRSSUnavailable)
	}
	s.missing = heap == nil || rss == nil && !s.noRSS
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.missing {
		m.failed++
		fmt.Fprintf(m.warn, "natstx bench: memory sample at %s transactions: %v\n", thousands(n), err)
	}
	m.samples = append(m.samples, s)
}

// report is the "memory" key of the summary; call it after the load.
func (m *memSampler) report() *benchMemory {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Two samples read at once (a slow scrape) may have been kept out of order.
	samples := slices.SortedFunc(slices.Values(m.samples), func(a, b memSample) int { return cmp.Compare(a.Transactions, b.Transactions) })
	r := &benchMemory{Every: int(m.every), Source: m.source, Samples: append([]memSample{}, samples...)}
	if n := len(r.Samples); n >= 3 {
		base, last := r.Samples[1].RSSBytes, r.Samples[n-1].RSSBytes
		if base != nil && last != nil && *base > 0 {
			g := float64(*last) / float64(*base)
			r.RSSGrowth = &g
		}
	}
	return r
}

// missing is the error of a run whose samples lack values (not counting RSS
// on an OS that has none), nil when none does.
func (m *memSampler) missing() error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failed == 0 {
		return nil
	}
	first := ""
	for _, s := range m.samples {
		if s.missing {
			first = s.Error
			break
		}
	}
	return fmt.Errorf("%d of %d memory samples could not be read (first: %s); the report shows them as missing, the other figures are as measured", m.failed, len(m.samples), first)
}

// readSelfMemory reads bench's own RSS (VmRSS of /proc/self/status, Linux
// only) and Go heap in use (runtime/metrics, without stopping the world:
// heap objects plus unused heap slots, which is what the Go collector of
// client_golang reports as go_memstats_heap_inuse_bytes).
func readSelfMemory(context.Context) (rss, heap *int64, err error) {
	s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	rtmetrics.Read(s)
	var errs []string
	if s[0].Value.Kind() == rtmetrics.KindUint64 && s[1].Value.Kind() == rtmetrics.KindUint64 {
		h := int64(s[0].Value.Uint64() + s[1].Value.Uint64())
		heap = &h
	} else {
		errs = append(errs, "heap unavailable: this Go runtime lacks /memory/classes/heap/objects:bytes or /memory/classes/heap/unused:bytes")
	}
	if runtime.GOOS != "linux" {
		if len(errs) > 0 {
			return nil, heap, fmt.Errorf("%s; %w", errs[0], errRSSUnavailable)
		}
		return nil, heap, errRSSUnavailable
	}
	status, rerr := os.ReadFile("/proc/self/status")
	if rerr == nil {
		var v int64
		if v, rerr = vmRSS(string(status)); rerr == nil {
			rss = &v
		}
	}
	if rerr != nil {
		errs = append(errs, fmt.Sprintf("RSS unavailable: /proc/self/status: %v", rerr))
	}
	if len(errs) > 0 {
		return rss, heap, errors.New(strings.Join(errs, "; "))
	}
	return rss, heap, nil
}

// vmRSS returns the VmRSS line of a /proc/<pid>/status text, in bytes.
func vmRSS(status string) (int64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, fmt.Errorf("unexpected line %q", line)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no VmRSS line")
}

// scrapeMemory returns a reader of RSS and heap in use from the Prometheus
// endpoint at url, parsed by client_golang's own expfmt decoder.
func scrapeMemory(url string) memReader {
	client := &http.Client{Timeout: memScrapeTimeout}
	return func(ctx context.Context) (rss, heap *int64, err error) {
		fams, err := scrapeFamilies(ctx, client, url)
		if err != nil {
			return nil, nil, fmt.Errorf("could not read %s and %s from %s: %w", promRSSMetric, promHeapMetric, url, err)
		}
		var errs []string
		rss, err = gaugeValue(fams, promRSSMetric)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", url, err))
		}
		heap, err = gaugeValue(fams, promHeapMetric)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", url, err))
		}
		if len(errs) > 0 {
			return rss, heap, errors.New(strings.Join(errs, "; "))
		}
		return rss, heap, nil
	}
}

// scrapeFamilies GETs url and decodes its metric families.
func scrapeFamilies(ctx context.Context, client *http.Client, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := client.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*neturl.Error](err); ok {
			err = ue.Err // it names the URL again
		}
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	dec := expfmt.NewDecoder(io.LimitReader(resp.Body, 64<<20), expfmt.ResponseFormat(resp.Header))
	fams := map[string]*dto.MetricFamily{}
	for {
		mf := &dto.MetricFamily{}
		err := dec.Decode(mf)
		if errors.Is(err, io.EOF) {
			return fams, nil
		}
		if err != nil {
			return nil, fmt.Errorf("parsing the exposition: %w", err)
		}
		fams[mf.GetName()] = mf
	}
}

// gaugeValue returns the value of the one series of the gauge (or untyped
// metric) name in fams.
func gaugeValue(fams map[string]*dto.MetricFamily, name string) (*int64, error) {
	mf, ok := fams[name]
	if !ok || len(mf.GetMetric()) == 0 {
		return nil, fmt.Errorf("no metric %s", name)
	}
	if len(mf.GetMetric()) > 1 {
		return nil, fmt.Errorf("%s has %d series, want one", name, len(mf.GetMetric()))
	}
	m := mf.GetMetric()[0]
	var v float64
	switch {
	case m.GetGauge() != nil:
		v = m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		v = m.GetUntyped().GetValue()
	default:
		return nil, fmt.Errorf("%s is a %s, not a gauge", name, mf.GetType())
	}
	if math.IsNaN(v) || v < 0 || v > math.MaxInt64 {
		return nil, fmt.Errorf("%s is %v, not a byte count", name, v)
	}
	b := int64(v)
	return &b, nil
}

// printMemory prints the samples as a table, the samples missing a value,
// and the RSS growth line.
func printMemory(out io.Writer, m *benchMemory) {
	fmt.Fprintf(out, "memory of %s, a sample every %s transactions:\n", m.describe(), thousands(int64(m.Every)))
	fmt.Fprintf(out, "  %14s %10s %12s %12s\n", "transactions", "elapsed", "RSS", "heap in use")
	mib := func(b *int64) string {
		if b == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f MiB", float64(*b)/(1<<20))
	}
	var missing []string
	noRSS := false
	for _, s := range m.Samples {
		fmt.Fprintf(out, "  %14s %9.2fs %12s %12s\n", thousands(s.Transactions), s.ElapsedS, mib(s.RSSBytes), mib(s.HeapBytes))
		if s.missing {
			missing = append(missing, fmt.Sprintf("  at %s transactions: %s", thousands(s.Transactions), s.Error))
		}
		noRSS = noRSS || s.noRSS
	}
	if noRSS {
		fmt.Fprintln(out, "  "+errRSSUnavailable.Error())
	}
	if len(missing) > 0 {
		fmt.Fprintln(out, "missing (not read, so not shown):")
		for _, l := range missing {
			fmt.Fprintln(out, l)
		}
	}
	switch n := len(m.Samples); {
	case m.RSSGrowth != nil:
		g := *m.RSSGrowth
		verb := "grew"
		if g < 1 {
			verb = "shrank"
		}
		fmt.Fprintf(out, "RSS %s %.1f%% (ratio %.3f) from transaction %s to %s\n", verb, math.Abs(g-1)*100, g,
			thousands(m.Samples[1].Transactions), thousands(m.Samples[n-1].Transactions))
	case n < 3:
		fmt.Fprintf(out, "RSS growth: not computed (it compares the last sample with the one after the first %s transactions; the run gave %d samples)\n", thousands(int64(m.Every)), n)
	default:
		fmt.Fprintf(out, "RSS growth: not computed (RSS missing at transaction %s or %s)\n", thousands(m.Samples[1].Transactions), thousands(m.Samples[n-1].Transactions))
	}
}

// thousands writes n with commas between groups of three digits.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
