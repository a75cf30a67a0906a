package dst

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: every task
// of a run (the engines', the participants', the clients') must end with it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// schedulerFile is the one file allowed to start goroutines: the cooperative
// scheduler, which runs exactly one of them at a time.
const schedulerFile = "sched.go"

// TestPure: a seed decides the whole run only if the simulator reads no
// clock, draws no global randomness and starts goroutines only through its
// scheduler. The simulator's own sources (not its tests) call no wall-clock
// function (time.Now, Since, Until, Sleep, After, AfterFunc, NewTimer,
// NewTicker, Tick), no global random function, import no network, OS or
// unseeded random package, and contain go statements only in the scheduler.
// The engine and the participant SDK it drives are held to the same by
// TestSameSeedSameTrace: any clock read or goroutine of theirs outside the
// ports shows there as two traces of one seed that differ.
func TestPure(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked, sawScheduler := 0, false
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			switch p {
			case "os", "os/exec", "io/ioutil", "net", "net/http", "syscall", "math/rand", "crypto/rand", "unsafe", "sync", "sync/atomic":
				t.Errorf("%s imports %s", name, p)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				if name != schedulerFile {
					t.Errorf("%s: a goroutine at %v: only the scheduler (%s) starts them", name, fset.Position(n.Pos()), schedulerFile)
				}
				sawScheduler = true
			case *ast.SelectorExpr:
				id, ok := n.X.(*ast.Ident)
				if !ok {
					return true
				}
				switch {
				case id.Name == "time" && contains([]string{"Now", "Since", "Until", "Sleep", "After", "AfterFunc", "NewTimer", "NewTicker", "Tick"}, n.Sel.Name):
					t.Errorf("%s: time.%s at %v: the simulator has its own clock", name, n.Sel.Name, fset.Position(n.Pos()))
				case id.Name == "rand" && !contains([]string{"New", "NewPCG", "Rand"}, n.Sel.Name):
					t.Errorf("%s: rand.%s at %v: every random draw comes from the run's seed", name, n.Sel.Name, fset.Position(n.Pos()))
				}
			}
			return true
		})
	}
	if checked < 5 || !sawScheduler {
		t.Fatalf("only %d source files checked (scheduler seen: %v)", checked, sawScheduler)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
