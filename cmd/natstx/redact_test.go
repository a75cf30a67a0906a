package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRedactURLMasksEveryPassword: redactURL masks the password (or token)
// of every URL of a list, including URLs url.Parse refuses (a '#' or '/' in
// the password) and URLs without a scheme, and leaves the rest as it is.
func TestRedactURLMasksEveryPassword(t *testing.T) {
	cases := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://op:s3cret@127.0.0.1:4222", "nats://op:xxxxx@127.0.0.1:4222"},
		{"nats://s3cret@127.0.0.1:4222", "nats://xxxxx@127.0.0.1:4222"},
		{"nats://op:s3c@ret@127.0.0.1:4222", "nats://op:xxxxx@127.0.0.1:4222"},
		{"nats://op:s3c#ret@127.0.0.1:4222", "nats://op:xxxxx@127.0.0.1:4222"},
		{"nats://op:s3c/ret@127.0.0.1:4222", "nats://op:xxxxx@127.0.0.1:4222"},
		{"op:s3cret@127.0.0.1:4222", "op:xxxxx@127.0.0.1:4222"},
		{"nats://a:s3cret@127.0.0.1:4222, nats://127.0.0.1:4223,nats://b:s3cret@127.0.0.1:4224",
			"nats://a:xxxxx@127.0.0.1:4222, nats://127.0.0.1:4223,nats://b:xxxxx@127.0.0.1:4224"},
		{"", ""},
		{"5s", "5s"},
		{"127.0.0.1:4222", "127.0.0.1:4222"},
		{"/home/me@work/natstx-data", "/home/me@work/natstx-data"},
	}
	for _, c := range cases {
		got := redactURL(c.in)
		if got != c.want {
			t.Errorf("redactURL(%q) = %q, want %q", c.in, got, c.want)
		}
		if strings.Contains(got, "s3c") {
			t.Errorf("redactURL(%q) = %q still shows the secret", c.in, got)
		}
	}
}

// TestPrintConfigMasksURLPasswords: --print-config shows a password in
// --nats or --routes (flag, NATSTX_* variable) as xxxxx, keeping the user
// and the host.
func TestPrintConfigMasksURLPasswords(t *testing.T) {
	const secret = "s3cret-pw"
	checks, shown := 0, 0
	check := func(what string, m map[string]any, key string, want ...string) {
		t.Helper()
		checks++
		all := fmt.Sprint(m)
		if strings.Contains(all, secret) {
			shown++
			t.Errorf("%s: --print-config shows the password: %v", what, m)
		}
		got := fmt.Sprint(m[key])
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %s is %q, want it to show %q", what, key, got, w)
			}
		}
	}
	routes := "nats://route:" + secret + "@127.0.0.1:6222,nats://127.0.0.1:6223"
	m := printed(t, nil, "server", "--nats", "nats://op:"+secret+"@127.0.0.1:4222", "--routes", routes)
	check("server flags", m, "nats", "nats://op:xxxxx@127.0.0.1:4222")
	check("server flags", m, "routes", "nats://route:xxxxx@127.0.0.1:6222", "nats://127.0.0.1:6223")

	m = printed(t, []string{"NATSTX_NATS=nats://op:" + secret + "@127.0.0.1:4222", "NATSTX_ROUTES=" + routes}, "server")
	check("server variables", m, "nats", "nats://op:xxxxx@127.0.0.1:4222")
	check("server variables", m, "routes", "nats://route:xxxxx@127.0.0.1:6222")

	m = printed(t, nil, "nats", "--routes", routes)
	check("nats flags", m, "routes", "nats://route:xxxxx@127.0.0.1:6222", "nats://127.0.0.1:6223")
	t.Logf("%d --print-config checks, %d showed the password", checks, shown)
}

// TestBenchSummaryMasksNATSPassword: bench's summary names the NATS server
// it used without the password of --nats, in text and in --json (key
// "nats" kept). A NATS server without authentication takes any user and
// password.
func TestBenchSummaryMasksNATSPassword(t *testing.T) {
	const secret = "s3cret-bench"
	_, url := startServer(t)
	withPW := strings.Replace(url, "nats://", "nats://bench:"+secret+"@", 1)
	masked := strings.Replace(url, "nats://", "nats://bench:xxxxx@", 1)

	stdout, stderr, code := run(t, 2*time.Minute, "bench", "--nats", withPW, "-n", "1", "--count", "20", "--jetstream-msgs", "0", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, secret) {
		t.Fatalf("--json shows the password:\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
	s := benchJSON(t, stdout)
	if s["nats"] != masked {
		t.Fatalf("nats: %v, want %s", s["nats"], masked)
	}

	stdout, stderr, code = run(t, 2*time.Minute, "bench", "--nats", withPW, "-n", "1", "--count", "20", "--jetstream-msgs", "0")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, secret) || !strings.Contains(stdout, "NATS "+masked) {
		t.Fatalf("text: want NATS %s and no password:\nstdout:\n%s\nstderr:\n%s", masked, stdout, stderr)
	}
	t.Logf("bench summary: %s (json and text), password shown 0 times", masked)
}

// TestPrintConfigMasksSecretFlags: --print-config shows --password and
// --ui-token as "xxxxx (set)" whether they come from a flag, a NATSTX_*
// variable or the config file, and as empty when not set; the secret itself
// appears nowhere in the output. For every command that prints its
// configuration (server, nats).
func TestPrintConfigMasksSecretFlags(t *testing.T) {
	const pw, token = "s3cret-password-value", "s3cret-ui-token-0123456789abcdef"
	cfg := filepath.Join(t.TempDir(), "natstx.yaml")
	if err := os.WriteFile(cfg, []byte("user: op\npassword: "+pw+"\nui-listen: 127.0.0.1:0\nui-token: "+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	checks := 0
	check := func(what string, m map[string]any, keys ...string) {
		t.Helper()
		checks++
		if all := fmt.Sprint(m); strings.Contains(all, pw) || strings.Contains(all, token) {
			t.Errorf("%s: --print-config shows a secret: %v", what, m)
		}
		for _, k := range keys {
			if m[k] != "xxxxx (set)" {
				t.Errorf("%s: %s is %q, want \"xxxxx (set)\"", what, k, m[k])
			}
		}
	}
	m := printed(t, nil, "server", "--user", "op", "--password", pw, "--ui-listen", "127.0.0.1:0", "--ui-token", token)
	check("server flags", m, "password", "ui-token")
	if m["user"] != "op" {
		t.Errorf("server flags: user is %q, want op (not a secret)", m["user"])
	}
	m = printed(t, []string{"NATSTX_USER=op", "NATSTX_PASSWORD=" + pw, "NATSTX_UI_LISTEN=127.0.0.1:0", "NATSTX_UI_TOKEN=" + token}, "server")
	check("server variables", m, "password", "ui-token")
	m = printed(t, nil, "server", "--config", cfg)
	check("server config file", m, "password", "ui-token")
	m = printed(t, []string{"NATSTX_USER=op", "NATSTX_PASSWORD=" + pw}, "nats")
	check("nats variables", m, "password")
	m = printed(t, nil, "nats", "--user", "op", "--password", pw)
	check("nats flags", m, "password")
	m = printed(t, nil, "server")
	if m["password"] != "" || m["ui-token"] != "" {
		t.Errorf("without secrets: password %q, ui-token %q, want both empty", m["password"], m["ui-token"])
	}
	if !t.Failed() {
		t.Logf("%d --print-config outputs with secrets, none showed one", checks)
	}
}
