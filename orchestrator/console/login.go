package console

import (
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"net/http"
	"strings"
)

// loginCSS is the login page's own style: the page is served before the
// token is known, so it carries its style inline, allowed by its hash.
const loginCSS = `body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1d2330;display:flex;justify-content:center;padding-top:10vh}
form{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:1.5rem 2rem;min-width:22rem}
h1{font-size:1.2rem;margin:0 0 1rem}label{display:block;margin-bottom:.3rem}
input{width:100%;box-sizing:border-box;padding:.4rem;margin-bottom:1rem;font:inherit}
button{padding:.4rem 1rem;font:inherit}.err{color:#b3261e;margin-bottom:1rem}`

var loginStyleHash = func() string {
	h := sha256.Sum256([]byte(loginCSS))
	return "'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"
}()

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>natstx console: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{{.CSS}}</style></head>
<body><form method="post" action="/login">
<h1>natstx console</h1>
{{if .Failed}}<div class="err" id="login-error">That token is not this console's.</div>{{end}}
<label for="token">Token (natstx server --ui-token, or NATSTX_UI_TOKEN)</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<button type="submit" id="login">Sign in</button>
</form></body></html>
`))

// login serves /login: GET shows the form (or, with ?token=, signs in as
// the form does); POST checks the form's token. A right token sets the
// session cookie and goes to the list.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.cfg.Token == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	var tok string
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		tok = r.URL.Query().Get("token")
	case http.MethodPost:
		if err := c.cop.Check(r); err != nil {
			deny(w, false, http.StatusForbidden, "refused: a cross-origin sign-in ("+err.Error()+")")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 4096)
		if err := r.ParseForm(); err != nil {
			deny(w, false, http.StatusBadRequest, "unreadable sign-in form: "+err.Error())
			return
		}
		tok = r.PostForm.Get("token")
	default:
		w.Header().Set("Allow", "GET, POST")
		deny(w, false, http.StatusMethodNotAllowed, "/login takes GET or POST")
		return
	}
	tok = strings.TrimSpace(tok)
	if tok != "" && equal(tok, c.cfg.Token) {
		http.SetCookie(w, &http.Cookie{
			Name: CookieName, Value: c.session, Path: "/",
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
		})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src "+loginStyleHash+"; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	code := http.StatusOK
	if tok != "" {
		code = http.StatusUnauthorized
	}
	w.WriteHeader(code)
	_ = loginPage.Execute(w, struct {
		CSS    template.CSS
		Failed bool
	}{template.CSS(loginCSS), tok != ""})
}
