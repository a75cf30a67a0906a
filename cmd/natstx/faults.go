package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/natstx/natstx/orchestrator"
)

// faultEnv names the environment variable that makes `natstx server` kill
// itself with SIGKILL at a protocol point, for crash tests:
// NATSTX_FAULT=<point>:<n> kills the process the n-th time any transaction
// reaches <point> (one of prepare-sent, vote-received, commit-durable,
// commit-acked). Unset in normal use.
const faultEnv = "NATSTX_FAULT"

// faultHookFromEnv returns the hook NATSTX_FAULT asks for, or nil.
func faultHookFromEnv() (func(orchestrator.FaultPoint, string) bool, error) {
	spec := os.Getenv(faultEnv)
	if spec == "" {
		return nil, nil
	}
	name, count, ok := strings.Cut(spec, ":")
	n, err := strconv.Atoi(count)
	point := orchestrator.FaultPoint(name)
	valid := false
	for _, p := range []orchestrator.FaultPoint{orchestrator.PointPrepareSent, orchestrator.PointVoteReceived, orchestrator.PointCommitDurable, orchestrator.PointCommitAcked} {
		valid = valid || p == point
	}
	if !ok || err != nil || n < 1 || !valid {
		return nil, usageError{fmt.Errorf("%s=%q: want <point>:<n> with point one of prepare-sent, vote-received, commit-durable, commit-acked and n >= 1", faultEnv, spec)}
	}
	var hits atomic.Int64
	return func(p orchestrator.FaultPoint, txid string) bool {
		if p != point || hits.Add(1) != int64(n) {
			return false
		}
		fmt.Fprintf(os.Stderr, "natstx: %s: killing this process at %s of transaction %s\n", faultEnv, p, txid)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL cannot be caught: the process ends here
	}, nil
}
