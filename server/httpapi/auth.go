package httpapi

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/internal/bodydeadline"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// requireAuth wraps the API: a request needs the bearer token or a
// console session cookie (401), and with the cookie a state-changing
// request also needs the session's CSRF header (403); every request needs
// what sameSite checks.
func (a *api) requireAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		_, s, cookie := a.sessions.lookup(r, time.Now())
		switch {
		case bearer && validToken(got, a.cfg.Token):
		case !bearer && cookie:
			if !safeMethod(r.Method) && subtle.ConstantTimeCompare([]byte(r.Header.Get(csrfHeader)), []byte(s.csrf)) != 1 {
				writeError(w, http.StatusForbidden, "missing or wrong "+csrfHeader+" header: a console request that changes something must carry the session's CSRF token")
				return
			}
		default:
			w.Header().Set("WWW-Authenticate", `Bearer realm="lwm2m server API"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong API token: send Authorization: Bearer TOKEN, with the token from the server's token file, or sign in to the console")
			return
		}
		if !sameSite(w, r) {
			return
		}
		bodydeadline.Slide(r)
		next.ServeHTTP(w, r)
	})
}

// ownHost reports whether r's Host header names the address the request
// came in on: that IP and port, or localhost or a loopback IP with the
// port when it came in on loopback. A name that merely resolves to the API
// (DNS rebinding) does not match.
func ownHost(r *http.Request) bool {
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	local, err := netip.ParseAddrPort(la.String())
	if err != nil {
		return false
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, "80"
	}
	if port != strconv.Itoa(int(local.Port())) {
		return false
	}
	loopback := local.Addr().IsLoopback()
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		ip = ip.Unmap()
		return ip == local.Addr().Unmap() || loopback && ip.IsLoopback()
	}
	return loopback && strings.EqualFold(host, "localhost")
}

// requireContentType checks a request body's media type: a JSON body sent
// as text/plain is what a cross-site form would send (415).
func requireContentType(w http.ResponseWriter, r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != want {
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type must be %s", want))
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// The console's session: a cookie that names a random session ID kept in
// memory (never the token), and a CSRF token per session that every
// state-changing request carries in a header.
const (
	sessionCookie  = "lwm2m_session"
	csrfHeader     = "X-CSRF-Token"
	sessionTTL     = 12 * time.Hour
	maxSessions    = 64
	maxSignInBytes = 4 << 10
)

// sessions are the console's signed-in browsers.
type sessions struct {
	mu sync.Mutex
	m  map[string]session // by session ID
}

type session struct {
	csrf    string
	expires time.Time
}

// create starts a session, dropping expired ones and, past maxSessions,
// the one that expires first.
func (ss *sessions) create(now time.Time) (id string, s session) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = make(map[string]session)
	}
	for k, v := range ss.m {
		if now.After(v.expires) {
			delete(ss.m, k)
		}
	}
	for len(ss.m) >= maxSessions {
		first := ""
		for k, v := range ss.m {
			if first == "" || v.expires.Before(ss.m[first].expires) {
				first = k
			}
		}
		delete(ss.m, first)
	}
	id, s = rand.Text(), session{csrf: rand.Text(), expires: now.Add(sessionTTL)}
	ss.m[id] = s
	return id, s
}

// lookup returns r's session, if its cookie names a live one.
func (ss *sessions) lookup(r *http.Request, now time.Time) (string, session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return "", session{}, false
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[c.Value]
	if !ok || now.After(s.expires) {
		return "", session{}, false
	}
	return c.Value, s, true
}

func (ss *sessions) remove(id string) {
	ss.mu.Lock()
	delete(ss.m, id)
	ss.mu.Unlock()
}

// safeMethod reports a method that changes nothing (RFC 9110 §9.2.1): only
// the others need the CSRF header.
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// validToken compares a presented token with the server's in constant time.
func validToken(got, token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) == 1
}

// sameSite checks what every request needs, signed in or not: a Host that
// names the API's own address (403, against DNS rebinding) and no Origin
// but the API's own (403, against cross-site requests).
func sameSite(w http.ResponseWriter, r *http.Request) bool {
	if !ownHost(r) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("Host %q is not this API's address", r.Host))
		return false
	}
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	if o := r.Header.Get("Origin"); o != "" && o != scheme+r.Host {
		writeError(w, http.StatusForbidden, fmt.Sprintf("cross-origin request from %q refused", o))
		return false
	}
	return true
}

// signIn serves POST /api/session: the body {"token": "..."} with the
// server's API token starts a console session. The answer sets the
// session cookie (HttpOnly, SameSite=Strict, Secure over TLS) and carries
// the session's CSRF token: {"csrf": "..."}.
func (a *api) signIn(w http.ResponseWriter, r *http.Request) {
	if !sameSite(w, r) || !requireContentType(w, r, "application/json") {
		return
	}
	var req struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSignInBytes)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		return
	}
	if !validToken(req.Token, a.cfg.Token) {
		a.warnSignIn(r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "wrong API token: paste the token from the server's token file")
		return
	}
	id, s := a.sessions.create(time.Now())
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(sessionTTL / time.Second)})
	a.logger().Info("console signed in", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]string{"csrf": s.csrf})
}

// sessionInfo serves GET /api/session: the CSRF token of the caller's
// session, for a page loaded after sign-in; 401 without one.
func (a *api) sessionInfo(w http.ResponseWriter, r *http.Request) {
	if !sameSite(w, r) {
		return
	}
	_, s, ok := a.sessions.lookup(r, time.Now())
	if !ok {
		writeError(w, http.StatusUnauthorized, "not signed in")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"csrf": s.csrf})
}

// signOut serves DELETE /api/session: it ends the caller's session
// (which needs its CSRF header) and clears the cookie.
func (a *api) signOut(w http.ResponseWriter, r *http.Request) {
	if !sameSite(w, r) {
		return
	}
	id, s, ok := a.sessions.lookup(r, time.Now())
	if !ok {
		writeError(w, http.StatusUnauthorized, "not signed in")
		return
	}
	if subtle.ConstantTimeCompare([]byte(r.Header.Get(csrfHeader)), []byte(s.csrf)) != 1 {
		writeError(w, http.StatusForbidden, "missing or wrong "+csrfHeader+" header")
		return
	}
	a.sessions.remove(id)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) logger() *slog.Logger {
	if a.s.Logger != nil {
		return a.s.Logger
	}
	return slog.Default()
}

// warnSignIn logs a sign-in with a wrong token at Warn at most once a
// minute, and at Debug in between: a browser that retries must not flood
// the log.
func (a *api) warnSignIn(remote string) {
	const msg = "console sign-in with a wrong token"
	now := time.Now()
	a.warnMu.Lock()
	warn := now.Sub(a.warned) >= time.Minute
	if warn {
		a.warned = now
	}
	a.warnMu.Unlock()
	if warn {
		a.logger().Warn(msg, "remote", remote)
		return
	}
	a.logger().Debug(msg, "remote", remote)
}
