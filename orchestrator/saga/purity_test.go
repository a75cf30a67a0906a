package saga

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestPure: the saga core does no I/O, reads no clock and starts no
// goroutine, as package txn. Its dependencies (from go list -deps) include no
// NATS client or server, no network and no logger; its own files import
// nothing that does I/O and call no wall-clock or global-random function.
func TestPure(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the package's dependencies: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || !slices.Contains(deps, "go.yaml.in/yaml/v3") || !slices.Contains(deps, "github.com/natstx/natstx/orchestrator/saga") {
		t.Fatalf("go list -deps gave an implausible list: %q", deps)
	}
	for _, d := range deps {
		for _, bad := range []string{"github.com/nats-io/", "net", "os/exec", "database/sql", "go.uber.org/zap", "log/slog",
			"github.com/natstx/natstx/orchestrator", "github.com/natstx/natstx/participants"} {
			if d == bad || strings.HasPrefix(d, bad+"/") || (strings.HasSuffix(bad, "/") && strings.HasPrefix(d, bad)) {
				if d != "github.com/natstx/natstx/orchestrator/saga" {
					t.Errorf("package saga depends on %s", d)
				}
			}
		}
	}

	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
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
			case "os", "io/ioutil", "io/fs", "net", "net/http", "syscall", "math/rand", "math/rand/v2", "crypto/rand", "sync", "unsafe", "runtime", "log", "log/slog":
				t.Errorf("%s imports %s", name, p)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				t.Errorf("%s: a goroutine at %v", name, fset.Position(n.Pos()))
			case *ast.SelectorExpr:
				id, ok := n.X.(*ast.Ident)
				if ok && id.Name == "time" && slices.Contains([]string{"Now", "Since", "Until", "Sleep", "After", "AfterFunc", "NewTimer", "NewTicker", "Tick"}, n.Sel.Name) {
					t.Errorf("%s: time.%s at %v: time comes in events", name, n.Sel.Name, fset.Position(n.Pos()))
				}
			}
			return true
		})
	}
	if checked < 6 {
		t.Fatalf("only %d source files checked", checked)
	}
}
