package orchestrator_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
)

// TestReadyCheckNamesTheMissingStreams: on a real embedded server, the
// readiness probe is ready while the coordinator's stream and buckets
// exist; once a bucket and the command stream are deleted it says not
// ready and names both; within its cache period it does not look again.
func TestReadyCheckNamesTheMissingStreams(t *testing.T) {
	f := newFixture(t, orchestrator.Config{})
	fresh := orchestrator.NewReadyCheck(f.eng, 20*time.Millisecond)
	cached := orchestrator.NewReadyCheck(f.eng, time.Hour)
	for _, c := range []*orchestrator.ReadyCheck{fresh, cached} {
		if err := c.Ready(); err != nil {
			t.Fatalf("not ready with every stream present: %v", err)
		}
	}
	want := orchestrator.RequiredStreams(orchestrator.Config{})
	for _, s := range []string{messages.CommandStream, "KV_natstx_tx", "KV_natstx_ids", "KV_natstx_coordinators", "KV_natstx_saga", "KV_natstx_status"} {
		if !strings.Contains(strings.Join(want, " "), s) {
			t.Errorf("RequiredStreams lacks %s: %v", s, want)
		}
	}

	js, err := jetstream.New(f.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Second)
	if err := js.DeleteKeyValue(ctx, orchestrator.SagaBucket); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, messages.CommandStream); err != nil {
		t.Fatal(err)
	}
	time.Sleep(40 * time.Millisecond)
	err = fresh.Ready()
	if err == nil {
		t.Fatal("ready with the command stream and the saga bucket deleted")
	}
	for _, s := range []string{messages.CommandStream, "KV_" + orchestrator.SagaBucket} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("the error does not name %s: %v", s, err)
		}
	}
	if strings.Contains(err.Error(), "KV_"+orchestrator.RecordBucket) {
		t.Errorf("the error names a stream that exists: %v", err)
	}
	if err := cached.Ready(); err != nil {
		t.Errorf("looked at the streams again within its cache period: %v", err)
	}
	if err := f.eng.Ready(); err != nil {
		t.Fatalf("the engine itself should still be ready: %v", err)
	}
	f.eng.Stop()
	if err := cached.Ready(); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("a stopped engine, cached streams: %v", err)
	}
}
