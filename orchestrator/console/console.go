// Package console is natstx's web console: an http.Handler that serves a
// few pages (plain HTML, CSS and JavaScript embedded in the binary: no CDN,
// no build step, nothing fetched from the internet) and the small JSON API
// they read, over the data of a coordinator.
//
// The pages are a live list of transactions and sagas with filters (state,
// protocol, participant, minimum age, unfinished, retrying, stuck), a detail
// page per transaction (each participant's vote, acknowledgement and sends,
// or each saga step's status, attempts, last error and next retry; what it
// waits for and since when; its event history), and a dashboard that charts
// the engine's counters. An operator can abort a preparing transaction, and
// retry, resolve a stuck step of, or abort a saga, each confirmed in the page
// and sent with who asks and why.
//
// The console is a thin driver: it reads and acts through a Source (an
// *orchestrator.Client on the server's NATS connection) and, for the
// dashboard, through the engine's Stats and OldestInFlight funcs. `natstx
// server --ui-listen` and `natstx demo --ui` serve it.
//
// Security: with a Token, every request must carry it, as "Authorization:
// Bearer TOKEN" or in the cookie that /login sets; it is compared in
// constant time. Without one, the console answers only requests whose Host
// is a loopback name or address (a web page elsewhere cannot reach it
// through DNS rebinding). Every request that changes state is a POST that
// must carry the header X-Natstx-Console (which a page on another origin
// cannot set without a CORS preflight, which the console never grants) and
// pass Go's cross-origin protection (Sec-Fetch-Site, Origin).
package console

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator"
)

// Source is what the console reads and acts through; *orchestrator.Client
// implements it.
type Source interface {
	// Status returns a transaction's latest status.
	Status(ctx context.Context, id string) (messages.TxStatus, error)
	// List returns every status held (the console filters them itself).
	List(ctx context.Context, states ...string) ([]messages.TxStatus, error)
	// AbortAs asks the owning coordinator to abort a preparing transaction,
	// recording who asks (messages.AbortRequest.Who) and why.
	AbortAs(ctx context.Context, id, reason, who string) (messages.TxStatus, error)
	// ActOnSaga applies an operator action to a saga.
	ActOnSaga(ctx context.Context, req messages.SagaActRequest) (messages.TxStatus, error)
}

// Config configures a console.
type Config struct {
	// Source reads and acts on transactions; required.
	Source Source
	// Stats, if set, backs the dashboard: the engine's counters
	// (Engine.Stats). Without it /api/stats answers 404.
	Stats func() orchestrator.StatsSnapshot
	// OldestInFlight, if set, is how long the engine's oldest transaction in
	// flight has run (Engine.OldestInFlight), for the dashboard.
	OldestInFlight func() time.Duration
	// Token, if not empty, must come with every request (Authorization:
	// Bearer, or the cookie /login sets). Without it only loopback Host
	// names are served.
	Token string
	// StuckAfter is how long a two-phase transaction may wait for a
	// participant before the "stuck" filter counts it (default
	// DefaultStuckAfter); a request may ask for another threshold.
	StuckAfter time.Duration
	// MaxList bounds the transactions one list answer carries, newest first
	// (default DefaultMaxList).
	MaxList int
	// Timeout bounds each call to the Source (default 10s).
	Timeout time.Duration
	// Logger logs operator actions (who, what, why); nil logs nothing.
	Logger *zap.Logger
}

// DefaultStuckAfter is Config.StuckAfter's default.
const DefaultStuckAfter = time.Minute

// DefaultMaxList is Config.MaxList's default.
const DefaultMaxList = 500

// CSRFHeader is the header every POST must carry (any non-empty value); the
// console's own pages set it.
const CSRFHeader = "X-Natstx-Console"

// CookieName is the name of the cookie /login sets.
const CookieName = "natstx_console"

//go:embed static
var staticFiles embed.FS

// Console is the console's http.Handler.
type Console struct {
	cfg     Config
	mux     *http.ServeMux
	static  fs.FS
	cop     *http.CrossOriginProtection
	session string // the cookie value that proves a login: HMAC of the token

	listMu   sync.Mutex
	listAt   time.Time
	listDone []messages.TxStatus
}

// New returns a console for cfg.
func New(cfg Config) (*Console, error) {
	if cfg.Source == nil {
		return nil, errors.New("natstx: console.Config.Source is required (an *orchestrator.Client)")
	}
	if cfg.StuckAfter <= 0 {
		cfg.StuckAfter = DefaultStuckAfter
	}
	if cfg.MaxList <= 0 {
		cfg.MaxList = DefaultMaxList
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	sub, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, mux: http.NewServeMux(), static: sub, cop: http.NewCrossOriginProtection()}
	if cfg.Token != "" {
		m := hmac.New(sha256.New, []byte(cfg.Token))
		m.Write([]byte("natstx console session v1"))
		c.session = hex.EncodeToString(m.Sum(nil))
	}
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	page := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { c.serveFile(w, r, name) }
	}
	c.mux.HandleFunc("GET /{$}", page("list.html"))
	c.mux.HandleFunc("GET /tx/{id}", page("detail.html"))
	c.mux.HandleFunc("GET /dashboard", page("dashboard.html"))
	c.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(c.static)))
	c.mux.HandleFunc("GET /api/tx", c.apiList)
	c.mux.HandleFunc("GET /api/tx/{id}", c.apiDetail)
	c.mux.HandleFunc("POST /api/tx/{id}/{action}", c.apiAct)
	c.mux.HandleFunc("GET /api/stats", c.apiStats)
	c.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path+" (GET /api/tx, GET /api/tx/ID, POST /api/tx/ID/abort|retry|resolve, GET /api/stats)")
	})
}

func (c *Console) serveFile(w http.ResponseWriter, r *http.Request, name string) {
	b, err := fs.ReadFile(c.static, name)
	if err != nil {
		http.Error(w, "missing page "+name, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// ServeHTTP serves the console: the Host check (without a token), the
// login, the token check, the CSRF check of POSTs, then the pages and API.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	api := strings.HasPrefix(r.URL.Path, "/api/")
	if c.cfg.Token == "" && !loopbackHost(r.Host) {
		deny(w, api, http.StatusForbidden, "this console has no token, so it serves only loopback addresses (127.0.0.1, ::1, localhost), not Host "+r.Host+": open it there, or give it a token (natstx server --ui-token)")
		return
	}
	if r.URL.Path == "/login" {
		c.login(w, r)
		return
	}
	if c.cfg.Token != "" && !c.authorized(r) {
		if !api && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		deny(w, api, http.StatusUnauthorized, "this console needs its token: send 'Authorization: Bearer TOKEN', or sign in at /login")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := c.checkCSRF(r); err != nil {
			deny(w, api, http.StatusForbidden, err.Error())
			return
		}
	}
	c.mux.ServeHTTP(w, r)
}

// checkCSRF refuses a state-changing request that a page of another origin
// could have made.
func (c *Console) checkCSRF(r *http.Request) error {
	if err := c.cop.Check(r); err != nil {
		return errors.New("refused: a cross-origin request (" + err.Error() + ")")
	}
	if r.Header.Get(CSRFHeader) == "" {
		return errors.New("refused: a request that changes state must carry the header " + CSRFHeader + " (the console's pages set it; add it to scripted calls)")
	}
	return nil
}

// authorized reports whether r carries the token, as a bearer token or the
// login cookie, compared in constant time.
func (c *Console) authorized(r *http.Request) bool {
	if a := r.Header.Get("Authorization"); a != "" {
		if tok, ok := strings.CutPrefix(a, "Bearer "); ok {
			return equal(strings.TrimSpace(tok), c.cfg.Token)
		}
	}
	if ck, err := r.Cookie(CookieName); err == nil {
		return equal(ck.Value, c.session)
	}
	return false
}

// equal compares a and b in constant time (of their hashes, so that not even
// the length of the secret shows).
func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// loopbackHost reports whether the Host header names a loopback address or
// localhost.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// deny answers an error: JSON for the API, text otherwise.
func deny(w http.ResponseWriter, api bool, code int, msg string) {
	if api {
		writeError(w, code, msg)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}
