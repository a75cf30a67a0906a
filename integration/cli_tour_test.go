package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// docCommand is one "$ command" line of a code block in a doc, with the
// output the doc shows under it (none when the next line is blank).
type docCommand struct {
	line   string
	output []string
}

// docBlocks returns the "$ ..." commands of the code blocks of a markdown
// text, in order, each with the output lines shown under it.
func docBlocks(text string) []docCommand {
	var cmds []docCommand
	var cur *docCommand
	indent := ""
	for _, l := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(l)
		if c, ok := strings.CutPrefix(trimmed, "$ "); ok && strings.HasPrefix(l, "    ") {
			cmds = append(cmds, docCommand{line: c})
			cur = &cmds[len(cmds)-1]
			indent = l[:len(l)-len(strings.TrimLeft(l, " "))]
			continue
		}
		if cur == nil || trimmed == "" || !strings.HasPrefix(l, indent) {
			cur = nil
			continue
		}
		cur.output = append(cur.output, strings.TrimPrefix(l, indent))
	}
	return cmds
}

// docSection returns the part of a markdown text from the heading title to
// the next heading of the same level.
func docSection(t *testing.T, text, title string) string {
	t.Helper()
	level := title[:strings.Index(title, " ")+1]
	_, section, ok := strings.Cut(text, "\n"+title+"\n")
	if !ok {
		t.Fatalf("no section %q", title)
	}
	section, _, _ = strings.Cut(section, "\n"+level)
	return section
}

// docBlockAfter returns the lines of the code block that follows the
// paragraph ending with intro.
func docBlockAfter(t *testing.T, text, intro string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(text, intro+"\n\n")
	if !ok {
		t.Fatalf("no code block after %q", intro)
	}
	all := strings.Split(rest, "\n")
	indent := all[0][:len(all[0])-len(strings.TrimLeft(all[0], " "))]
	if len(indent) < 4 {
		t.Fatalf("no code block after %q", intro)
	}
	var lines []string
	for _, l := range all {
		if !strings.HasPrefix(l, indent) || strings.TrimSpace(l) == "" {
			break
		}
		lines = append(lines, strings.TrimPrefix(l, indent))
	}
	return lines
}

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docVariables are what differs from run to run in a line of output shown
// in the docs (times, durations, generated IDs, votes that race; "..." in a
// line stands for anything): each shown text matching find matches want in
// the actual output.
var docVariables = []struct{ find, want string }{
	{`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`, `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`},
	{`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`, `\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`},
	{`\b\d\d:\d\d:\d\d\.\d{3}\b`, `\d\d:\d\d:\d\d\.\d{3}`},
	{`\(\S+ after start\)`, `\([0-9.]+(ns|µs|ms|s) after start\)`},
	{`=(yes|no|pending)(\+ack)?\b`, `=(yes|no|pending)(\+ack)?`},
	{`\b\d+(\.\d+)?(ns|µs|ms|s)\b`, `[0-9.]+(ns|µs|ms|s)`},
	{`\b[A-Za-z0-9]{22}\b`, `[A-Za-z0-9]{22}`},
	{`process \d+`, `process \d+`},
	{`sequence \d+`, `sequence \d+`},
	{`natstx v\d+\.\d+\.\d+\S*`, `natstx (v\d+\.\d+\.\d+\S*|\(devel\))`},
	{`\b[0-9a-f]{40} \(\S+\)`, `([0-9a-f]{40} \(\S+\)(, modified)?|unknown \(built without VCS information\))`},
	{`\bgo1\.\d+(\.\d+)?`, `go1\.\d+(\.\d+)?\S*`},
	{`\.\.\.`, `.*`},
}

// docVariable finds any of docVariables.
var docVariable = func() *regexp.Regexp {
	alts := make([]string, len(docVariables))
	for i, v := range docVariables {
		alts[i] = "(?:" + v.find + ")"
	}
	return regexp.MustCompile(strings.Join(alts, "|"))
}()

// docLine turns one line of output shown in the docs into the regular
// expression an actual line must match.
func docLine(line string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	last := 0
	for _, m := range docVariable.FindAllStringIndex(line, -1) {
		b.WriteString(regexp.QuoteMeta(line[last:m[0]]))
		tok := line[m[0]:m[1]]
		for _, v := range docVariables {
			if regexp.MustCompile("^(?:" + v.find + ")$").MatchString(tok) {
				b.WriteString(v.want)
				break
			}
		}
		last = m[1]
	}
	b.WriteString(regexp.QuoteMeta(line[last:]))
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// matchOutput reports whether the actual lines are the lines the docs show,
// where a shown line "..." stands for any number of lines.
func matchOutput(shown, actual []string) bool {
	if len(shown) == 0 {
		return len(actual) == 0
	}
	if strings.TrimSpace(shown[0]) == "..." {
		for i := 0; i <= len(actual); i++ {
			if matchOutput(shown[1:], actual[i:]) {
				return true
			}
		}
		return false
	}
	return len(actual) > 0 && docLine(strings.TrimRight(shown[0], " ")).MatchString(strings.TrimRight(actual[0], " ")) &&
		matchOutput(shown[1:], actual[1:])
}

// lines splits output into lines without the final newline.
func lines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// shell runs command lines as a user types them: with bash (for the quoting)
// in dir, with env added to this process's environment.
type shell struct {
	t   *testing.T
	dir string
	env []string
}

func (sh shell) command(line string, extraEnv ...string) *exec.Cmd {
	cmd := exec.Command("bash", "-c", "exec "+line)
	cmd.Dir = sh.dir
	cmd.Env = append(append(os.Environ(), sh.env...), extraEnv...)
	return cmd
}

// run runs line to its end (at most limit) and returns its stdout, stderr
// and exit code.
func (sh shell) run(line string, limit time.Duration, extraEnv ...string) (string, string, int) {
	sh.t.Helper()
	cmd := sh.command(line, extraEnv...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		sh.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		sh.t.Fatalf("%s did not finish within %v\nstdout:\n%s\nstderr:\n%s", line, limit, stdout.String(), stderr.String())
	}
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		sh.t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// expect runs a doc command and checks its exit code and, when the doc shows
// output, that stdout then stderr are that output.
func (sh shell) expect(c docCommand, code int, limit time.Duration, rewrite func(string) string) (string, string) {
	sh.t.Helper()
	stdout, stderr, got := sh.run(rewrite(c.line), limit)
	if got != code {
		sh.t.Fatalf("$ %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", c.line, got, code, stdout, stderr)
	}
	if len(c.output) > 0 {
		shown := make([]string, len(c.output))
		for i, l := range c.output {
			shown[i] = rewrite(l)
		}
		if !matchOutput(shown, append(lines(stdout), lines(stderr)...)) {
			sh.t.Fatalf("$ %s: the output is not what the docs show\nshown:\n%s\ngot:\n%s%s", c.line, strings.Join(shown, "\n"), stdout, stderr)
		}
	}
	return stdout, stderr
}

// daemon is a long-running command of a doc (a server, a participant, a
// watcher), its stdout and stderr collected.
type daemon struct {
	line string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder // stdout and stderr, line by line as they come
	errs strings.Builder // stderr only
	std  strings.Builder // stdout only
	done chan struct{}
	code int
}

func (d *daemon) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

func (d *daemon) stdout() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.std.String()
}

func (d *daemon) stderr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.errs.String()
}

// start starts line and waits until a line of its output contains ready;
// t.Cleanup kills it if it still runs.
func (sh shell) start(line, ready string, extraEnv ...string) *daemon {
	sh.t.Helper()
	d := &daemon{line: line, cmd: sh.command(line, extraEnv...), done: make(chan struct{})}
	outR, outW, err := os.Pipe()
	if err != nil {
		sh.t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		sh.t.Fatal(err)
	}
	d.cmd.Stdout, d.cmd.Stderr = outW, errW
	if err := d.cmd.Start(); err != nil {
		sh.t.Fatal(err)
	}
	_, _ = outW.Close(), errW.Close()
	var readers sync.WaitGroup
	for _, r := range []*os.File{outR, errR} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				d.mu.Lock()
				d.out.WriteString(sc.Text() + "\n")
				if r == errR {
					d.errs.WriteString(sc.Text() + "\n")
				} else {
					d.std.WriteString(sc.Text() + "\n")
				}
				d.mu.Unlock()
			}
			_ = r.Close()
		}()
	}
	go func() {
		readers.Wait()
		err := d.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			d.code = ee.ExitCode()
		}
		close(d.done)
	}()
	sh.t.Cleanup(func() {
		select {
		case <-d.done:
			return
		default:
		}
		_ = d.cmd.Process.Kill()
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			sh.t.Errorf("%s: still running 10s after SIGKILL", line)
		}
	})
	sh.waitFor(d, ready, 60*time.Second)
	return d
}

// waitFor waits until the daemon printed a line containing want.
func (sh shell) waitFor(d *daemon, want string, limit time.Duration) {
	sh.t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(d.output(), want) {
		select {
		case <-d.done:
			sh.t.Fatalf("%s exited (%d) before printing %q:\n%s", d.line, d.code, want, d.output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			sh.t.Fatalf("%s printed no %q within %v:\n%s", d.line, want, limit, d.output())
		}
	}
}

// waitForStdout waits until the daemon printed a line on standard output.
func (sh shell) waitForStdout(d *daemon, limit time.Duration) {
	sh.t.Helper()
	deadline := time.Now().Add(limit)
	for len(lines(d.stdout())) == 0 {
		select {
		case <-d.done:
			sh.t.Fatalf("%s exited (%d) before printing on stdout:\n%s", d.line, d.code, d.output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			sh.t.Fatalf("%s printed nothing on stdout within %v:\n%s", d.line, limit, d.output())
		}
	}
}

// stop sends sig and waits for the exit code.
func (d *daemon) stop(t *testing.T, sig syscall.Signal, limit time.Duration) int {
	t.Helper()
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
		return d.code
	case <-time.After(limit):
		t.Fatalf("%s did not exit within %v of %v:\n%s", d.line, limit, sig, d.output())
		return -1
	}
}

// installNatstx runs the README's `go install ./cmd/natstx` as written, from
// the repository's root, with GOBIN pointing at a directory of the test
// (instead of $(go env GOPATH)/bin) that then goes first on PATH.
func installNatstx(t *testing.T, line string) string {
	t.Helper()
	bin := t.TempDir()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	sh := shell{t: t, dir: root}
	stdout, stderr, code := sh.run(line, 10*time.Minute, "GOBIN="+bin)
	if code != 0 {
		t.Fatalf("$ %s: exit %d\n%s%s", line, code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(bin, "natstx")); err != nil {
		t.Fatalf("$ %s installed no natstx: %v", line, err)
	}
	return bin
}

// tourLate is how long after its transactions finished the tour inspects
// them again: past two minutes, so that a retention of minutes (the old
// default was one) would have lost them, and the default of 2h must hold.
const tourLate = 2*time.Minute + 5*time.Second

// tourLateFlag shortens tourLate while one works on the test (go test
// ./integration -run TestCLITour -args -tour.late=1s); the check of the
// default retention then proves nothing, and the test says so.
var tourLateFlag = flag.Duration("tour.late", tourLate, "how long after the tour's transactions finished to inspect them again")

// TestCLITourFromREADME runs README.md's tour as written, each command in a
// shell, and compares the output of every command that the README shows
// output for. It changes only the address: NATS listens on a free port
// (NATSTX_NATS_LISTEN for the server, NATSTX_NATS for every other command,
// the README's nats://127.0.0.1:4222 rewritten in commands and output).
//
// Beyond the steps: a second server on the tour's data directory is refused
// (exit 1, naming the holder); the server restart in the middle leaves no
// participant logging an error, to the end of the test; and more than two
// minutes after the transactions finished, with the default --retention,
// step 5 and the audit still show them as the README does. The wait is
// spent on the other docs' commands (docs/CLI.md, the README's demo), run
// on servers of their own at the same time.
func TestCLITourFromREADME(t *testing.T) {
	readme := readDoc(t, "README.md")
	tour := docSection(t, readme, "## A five-minute tour")
	cmds := docBlocks(tour)
	addr := freeAddr(t)
	url := "nats://" + addr
	rewrite := func(s string) string { return strings.ReplaceAll(s, "nats://127.0.0.1:4222", url) }
	dir := t.TempDir()
	var bin string
	sh := shell{t: t, dir: dir}
	client := func() shell {
		return shell{t: t, dir: dir, env: []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "NATSTX_NATS=" + url}}
	}
	server := func() shell {
		return shell{t: t, dir: dir, env: []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "NATSTX_NATS_LISTEN=" + addr}}
	}

	var (
		srv          *daemon
		participants []*daemon
		watch        *daemon
		begins       int
		finished     time.Time
		inspect      []docCommand // step 5 and the audit, run again later
		audit        docCommand
		ranBench     string // the bench run during the wait
	)
	for _, c := range cmds {
		switch {
		case c.line == "go install ./cmd/natstx":
			bin = installNatstx(t, c.line)
			sh = client()
		case c.line == "natstx version":
			stdout, _ := sh.expect(c, 0, time.Minute, rewrite)
			if !strings.Contains(stdout, "nats-server  v2.") || !strings.Contains(stdout, "protocol ") {
				t.Fatalf("natstx version:\n%s", stdout)
			}
		case c.line == "natstx server":
			if srv != nil { // step 6: Ctrl-C, then start it again
				if code := srv.stop(t, syscall.SIGINT, 30*time.Second); code != 0 {
					t.Fatalf("the server stopped with exit %d:\n%s", code, srv.output())
				}
			}
			srv = server().start(c.line, "ready on "+url)
			if len(c.output) > 0 && !matchOutput([]string{rewrite(c.output[0])}, lines(srv.stdout())[:1]) {
				t.Fatalf("$ %s: shown %q, got:\n%s", c.line, c.output[0], srv.output())
			}
			if len(participants) == 0 {
				// The README: a second server on natstx-data exits 1 naming
				// the process that holds it.
				stdout, stderr, code := server().run(c.line+" --nats-listen "+freeAddr(t), 30*time.Second)
				holder := fmt.Sprintf("natstx-data is locked by process %d (natstx server)", srv.cmd.Process.Pid)
				if code != 1 || !strings.Contains(stderr, holder) {
					t.Fatalf("a second server on natstx-data: exit %d, want 1 and %q\n%s%s", code, holder, stdout, stderr)
				}
			}
		case strings.HasPrefix(c.line, "natstx participant "):
			participants = append(participants, sh.start(c.line, "ready"))
		case c.line == "natstx tx watch":
			watch = sh.start(c.line, "watching transactions on "+url)
			if !matchOutput([]string{rewrite(c.output[0])}, lines(watch.output())) {
				t.Fatalf("$ %s: shown %q, got %q", c.line, c.output[0], watch.output())
			}
		case strings.HasPrefix(c.line, "natstx tx begin "):
			begins++
			if begins == 1 {
				sh.expect(c, 0, time.Minute, rewrite)
				break
			}
			sh.expect(c, 1, time.Minute, rewrite)
			// "The watcher printed each step": the README's lines, in order.
			shown := docBlockAfter(t, tour, "to abort. The watcher printed each step:")
			sh.waitFor(watch, "order-2 aborted", 30*time.Second)
			finished = time.Now()
			got := lines(watch.stdout())
			for _, want := range shown {
				re := docLine(want)
				for len(got) > 0 && !re.MatchString(got[0]) {
					got = got[1:]
				}
				if len(got) == 0 {
					t.Fatalf("the watcher did not print %q in order:\n%s", want, watch.output())
				}
				got = got[1:]
			}
		case strings.HasPrefix(c.line, "natstx tx list") || strings.HasPrefix(c.line, "natstx tx status "):
			sh.expect(c, 0, time.Minute, rewrite)
			inspect = append(inspect, c)
		case c.line == "natstx audit":
			// Right after the restart, a participant may still be
			// reconnecting: in doubt until it answers, within seconds.
			audit = c
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				stdout, stderr, code := sh.run(c.line, time.Minute)
				if code == 0 && matchOutput(c.output, lines(stdout)) {
					break
				}
				if code != 0 || time.Now().After(deadline) {
					t.Fatalf("$ %s: exit %d, want %q\n%s%s", c.line, code, c.output, stdout, stderr)
				}
			}
			// The wait for the late inspection runs the other docs'
			// commands meanwhile, on their own servers.
			if !strings.Contains(readme, "\n    go run ./cmd/natstx demo ") || !strings.Contains(readme, "\n    make test ") {
				t.Fatal("README.md no longer gives go run ./cmd/natstx demo and make test for a fresh machine")
			}
			demoLine := docBlockAfter(t, readme, "invariant (stock, funds, capacity), and ends with")[0]
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				runReadmeDemo(t, demoLine)
			}()
			// Step 8's first bench runs on its own NATS: it changes nothing
			// the late inspection looks at, so it runs in the wait too.
			go func() {
				defer wg.Done()
				for _, b := range cmds {
					if strings.HasPrefix(b.line, "natstx bench") && !strings.Contains(b.line, "--nats") {
						tourBench(t, dir, bin, b, rewrite)
						ranBench = b.line
						return
					}
				}
			}()
			runCLIDoc(t, bin)
			wg.Wait()
			if t.Failed() {
				return
			}
			if *tourLateFlag < tourLate {
				t.Logf("-tour.late %v: the transactions are inspected again too early to prove the default retention", *tourLateFlag)
			}
			if wait := time.Until(finished.Add(*tourLateFlag)); wait > 0 {
				t.Logf("waiting %v more, to inspect the transactions %v after they finished", wait.Round(time.Second), *tourLateFlag)
				time.Sleep(wait)
			}
			for _, c := range inspect {
				sh.expect(c, 0, time.Minute, rewrite)
			}
			sh.expect(audit, 0, time.Minute, rewrite)
			t.Logf("%v after the transactions finished, tx list, tx status and audit show them as the README does", time.Since(finished).Round(time.Second))
		case strings.HasPrefix(c.line, "natstx bench"):
			if c.line != ranBench {
				tourBench(t, dir, bin, c, rewrite)
			}
		default:
			t.Fatalf("the tour has a command this test does not know how to check: %s", c.line)
		}
	}
	if begins != 2 || audit.line == "" || len(inspect) < 2 || srv == nil {
		t.Fatalf("the tour lacks steps this test checks: %d begins, audit %q, %d inspections", begins, audit.line, len(inspect))
	}
	// No participant logged an error, from the start to now: through the
	// restart, the retention and the benches.
	for _, p := range participants {
		for _, l := range lines(p.stderr()) {
			if strings.Contains(l, "\tERROR\t") || strings.Contains(l, "ERROR") {
				t.Errorf("%s logged an error:\n%s", p.line, p.stderr())
				break
			}
		}
	}
	if watch != nil {
		select {
		case <-watch.done:
			t.Errorf("the watcher ended (exit %d) although the server was only restarted:\n%s", watch.code, watch.output())
		default:
		}
	}
}

// tourBench runs a bench command of the tour, without NATSTX_NATS as typed
// in the README (bench runs its own NATS unless the line says --nats), and
// checks its figures: with --json, every transaction committed by the
// running server through the API; as text, the atomicity line.
func tourBench(t *testing.T, dir, bin string, c docCommand, rewrite func(string) string) {
	own := shell{t: t, dir: dir, env: []string{"PATH=" + bin + ":" + os.Getenv("PATH")}}
	stdout, stderr, code := own.run(rewrite(c.line), 5*time.Minute)
	if code != 0 {
		t.Errorf("$ %s: exit %d\n%s%s", c.line, code, stdout, stderr)
		return
	}
	if strings.Contains(c.line, "--json") {
		var s map[string]any
		if err := json.Unmarshal([]byte(stdout), &s); err != nil {
			t.Errorf("$ %s: %v\n%s", c.line, err, stdout)
			return
		}
		if s["coordinator"] != "api" || s["transactions"].(float64) < 1 || s["committed"] != s["transactions"] || s["cut_short"] != false || s["jetstream_msgs_per_sec"].(float64) <= 0 {
			t.Errorf("$ %s: want every transaction committed by the running server, through the API: %s", c.line, stdout)
			return
		}
		t.Logf("$ %s: %.0f txn/s through the running server", c.line, s["txn_per_sec"].(float64))
	} else if !regexp.MustCompile(`(?m)^atomicity: [1-9]\d* transactions, \d+ committed, \d+ aborted, 0 violations$`).MatchString(stdout) {
		t.Errorf("$ %s: no atomicity line with 0 violations:\n%s", c.line, stdout)
	}
}

// runReadmeDemo runs the README's first command, `go run ./cmd/natstx
// demo`, from the repository's root, and checks that it ends with a line
// like the one the README shows (shown).
func runReadmeDemo(t *testing.T, shown string) {
	const demo = "go run ./cmd/natstx demo"
	root, err := filepath.Abs("..")
	if err != nil {
		t.Error(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "exec "+demo)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Errorf("$ %s: %v\n%s", demo, err, out)
		return
	}
	got := lines(string(out))
	// The counts vary with the random failures; the total and the
	// violations do not.
	want := regexp.MustCompile(`^` + regexp.QuoteMeta(strings.SplitN(shown, ",", 2)[0]) + `, \d+ committed, \d+ aborted, 0 violations$`)
	if len(got) == 0 || !want.MatchString(got[len(got)-1]) {
		t.Errorf("$ %s: the last line is not like %q:\n%s", demo, shown, out)
	}
}

// runCLIDoc runs every "$" command of docs/CLI.md, in order, as one session
// in a directory of its own with a copy of configs/, and compares the output
// of each command that the page shows output for. Servers, participants and
// watchers run in the background; a watcher with --count must end by itself
// with the changes the page shows. Addresses: nats://127.0.0.1:4222 and
// 127.0.0.1:4223 become free ports, nats://127.0.0.1:4299 one where nothing
// listens.
func runCLIDoc(t *testing.T, bin string) {
	t.Helper()
	page := readDoc(t, filepath.Join("docs", "CLI.md"))
	cmds := docBlocks(page)
	if len(cmds) < 30 {
		t.Fatalf("docs/CLI.md has %d commands; the parser lost some", len(cmds))
	}
	dir := t.TempDir()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-r", filepath.Join(root, "configs"), dir).CombinedOutput(); err != nil {
		t.Fatalf("copying configs: %v %s", err, out)
	}
	a, b, dead := freeAddr(t), freeAddr(t), freeAddr(t)
	rewrite := strings.NewReplacer("nats://127.0.0.1:4222", "nats://"+a, "127.0.0.1:4223", b, "nats://127.0.0.1:4299", "nats://"+dead).Replace
	path := "PATH=" + bin + ":" + os.Getenv("PATH")
	client := shell{t: t, dir: dir, env: []string{path, "NATSTX_NATS=nats://" + a, "HOME=" + dir}}
	bare := shell{t: t, dir: dir, env: []string{path, "HOME=" + dir}}
	var servers []*daemon
	var watchers []*daemon
	for _, c := range cmds {
		line := rewrite(c.line)
		switch {
		case c.line == "natstx server":
			servers = append(servers, bare.start(line, "ready on nats://"+a, "NATSTX_NATS_LISTEN="+a))
			if !matchOutput([]string{rewrite(c.output[0])}, lines(servers[len(servers)-1].stdout())[:1]) {
				t.Fatalf("$ %s: shown %q, got %q", c.line, c.output[0], servers[len(servers)-1].output())
			}
		case strings.HasPrefix(c.line, "natstx nats ") || strings.HasPrefix(c.line, "natstx server --nats "):
			ready := "listening on"
			if strings.HasPrefix(c.line, "natstx server") {
				ready = "ready on"
			}
			d := bare.start(line, ready)
			servers = append(servers, d)
			if len(c.output) > 0 && !matchOutput([]string{rewrite(c.output[0])}, lines(d.stdout())[:1]) {
				t.Fatalf("$ %s: shown %q, got %q", c.line, c.output[0], d.output())
			}
		case strings.HasPrefix(c.line, "natstx participant "):
			d := client.start(line, "ready")
			// "ready" may first show in a log line on stderr ("already"):
			// the ready line itself is on stdout.
			client.waitForStdout(d, 60*time.Second)
			if len(c.output) > 0 && !matchOutput(c.output[:1], lines(d.stdout())[:1]) {
				t.Fatalf("$ %s: shown %q, got %q", c.line, c.output[0], d.output())
			}
		case strings.HasPrefix(c.line, "natstx tx watch"):
			d := client.start(line, "watching transactions on nats://"+a)
			if len(c.output) > 0 && !matchOutput([]string{rewrite(c.output[0])}, lines(d.stderr())[:1]) {
				t.Fatalf("$ %s: shown %q, got %q", c.line, c.output[0], d.stderr())
			}
			watchers = append(watchers, d)
		case strings.HasPrefix(c.line, "cat "):
			// The page shows a file: it is written as shown.
			if err := os.WriteFile(filepath.Join(dir, strings.TrimPrefix(c.line, "cat ")), []byte(strings.Join(c.output, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			client.expect(c, 0, time.Minute, rewrite)
		default:
			code := 0
			for _, l := range c.output {
				if strings.HasPrefix(l, "natstx: unknown command") {
					code = 2
				} else if strings.HasPrefix(l, "natstx: ") {
					code = 1
				}
			}
			sh := client
			if strings.Contains(c.line, "natstx server") || strings.HasPrefix(c.line, "natstx bench") {
				sh = bare // NATSTX_NATS would make them use that NATS instead of their own
			}
			cmd := c
			if !strings.HasPrefix(c.line, "natstx ") {
				// An assignment or a shell built-in: bash runs it as is.
				stdout, stderr, got := sh.runPlain(line, time.Minute)
				if got != code || (len(c.output) > 0 && !matchOutput(c.output, append(lines(stdout), lines(stderr)...))) {
					t.Fatalf("$ %s: exit %d, want %d\nshown:\n%s\ngot:\n%s%s", c.line, got, code, strings.Join(c.output, "\n"), stdout, stderr)
				}
				continue
			}
			sh.expect(cmd, code, 5*time.Minute, rewrite)
		}
	}
	// The watcher with --count printed what the page shows, and ended.
	shown := docBlockAfter(t, page, "and the watcher prints, then exits:")
	for _, w := range watchers {
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not end after its --count changes:\n%s", w.line, w.output())
		}
		out := lines(w.stdout())
		if w.code != 0 || !matchOutput(shown, out) {
			t.Fatalf("%s: exit %d; shown:\n%s\ngot:\n%s", w.line, w.code, strings.Join(shown, "\n"), w.output())
		}
	}
	for i := len(servers) - 1; i >= 0; i-- {
		if code := servers[i].stop(t, syscall.SIGINT, 30*time.Second); code != 0 {
			t.Fatalf("%s: exit %d after SIGINT:\n%s", servers[i].line, code, servers[i].output())
		}
	}
}

// runPlain runs line with bash as it is (no exec: it may be an assignment
// or a built-in).
func (sh shell) runPlain(line string, limit time.Duration) (string, string, int) {
	sh.t.Helper()
	return sh.run("bash -c "+shellQuote(line), limit)
}

// shellQuote quotes s for bash.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
