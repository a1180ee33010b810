package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/internal/bodydeadline"
	"io"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/server"
)

// Record is a decoded value in API answers.
type Record struct {
	Path  string `json:"path"`
	Type  string `json:"type"`
	Value string `json:"value"` // plain-text form; opaque in hex, time in RFC 3339
}

// Content is the answer to read and the body of an observe line.
type Content struct {
	Format  uint16   `json:"format"`
	Payload string   `json:"payload"` // base64
	Records []Record `json:"records,omitempty"`
	Error   string   `json:"decode_error,omitempty"`
}

// WriteRequest is the body of write and create. Value is written as plain
// text; otherwise Payload (base64) in Format.
type WriteRequest struct {
	Path    string  `json:"path"`
	Value   *string `json:"value,omitempty"`
	Format  string  `json:"format,omitempty"`
	Payload string  `json:"payload,omitempty"`
	Replace bool    `json:"replace,omitempty"`
}

// Config configures Handler.
type Config struct {
	// Token is the bearer token every request must carry in
	// "Authorization: Bearer TOKEN". Empty refuses every request.
	Token string
	// MaxPackageSize bounds a package uploaded to /api/update (413
	// beyond). Zero means server.DefaultMaxPackageSize.
	MaxPackageSize int64
	// PackageDir keeps uploaded packages while their update runs, each
	// in a file of mode 0600 removed when the update ends. Empty means
	// os.TempDir().
	PackageDir string
	// Console, when set, serves the web console's files (package
	// server/console) at every path outside /api/, without
	// authentication: the console signs in through /api/session.
	Console http.Handler
	// Routes are more routes (http.ServeMux patterns such as
	// "GET /api/campaigns") served behind the same authentication:
	// packages built on the server, such as campaigns, add theirs here.
	Routes map[string]http.Handler
	// Bootstrap serves GET /api/bootstrap and /api/bootstrap/{ep}, the
	// bootstrap history (bootstrap.Server's HistoryHandler, package
	// server/bootstrap), behind the same authentication. Nil answers
	// them 404.
	Bootstrap http.Handler
	// BodyTimeout bounds the wait for a request body: an unauthenticated
	// one must arrive whole within it, an authenticated one (a package
	// upload) must bring some bytes within every BodyTimeout. Zero means
	// DefaultBodyTimeout.
	BodyTimeout time.Duration
}

// DefaultBodyTimeout is Config.BodyTimeout when zero.
const DefaultBodyTimeout = bodydeadline.Default

// Result is one device's outcome in the last line of /api/update.
type Result struct {
	Endpoint   string `json:"endpoint"`
	Result     int    `json:"result"`
	ResultName string `json:"result_name"`
	Error      string `json:"error,omitempty"`
}

// UpdateLine is one NDJSON line of the /api/update stream: progress
// lines, then one line with Results.
type UpdateLine struct {
	Progress *server.Progress `json:"progress,omitempty"`
	Results  []Result         `json:"results,omitempty"`
}

func toContent(c server.Content, base model.Path) Content {
	out := Content{Format: uint16(c.Format), Payload: base64.StdEncoding.EncodeToString(c.Payload)}
	if c.Format == content.LinkFormat {
		return out
	}
	recs, err := c.Records(base)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	for _, r := range recs {
		out.Records = append(out.Records, Record{Path: r.Path.String(), Type: r.Value.Type.String(), Value: formatValue(r.Value)})
	}
	return out
}

// formatValue shows a value for people: opaque in hex, a float always
// with a decimal point or exponent, a time in RFC 3339 (UTC).
func formatValue(v model.Value) string {
	switch v.Type {
	case model.TypeOpaque:
		return hex.EncodeToString(v.Bytes)
	case model.TypeFloat:
		s := strconv.FormatFloat(v.Float, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eIN") {
			s += ".0"
		}
		return s
	case model.TypeTime:
		return v.Time().UTC().Format(time.RFC3339)
	}
	return v.String()
}

// Handler returns s's HTTP/JSON command interface, documented in
// docs/SERVER.md. Every request needs cfg.Token as a bearer token, or the
// session cookie of the web console's sign-in (POST /api/session) and,
// when it changes something, the session's CSRF header; a Host header
// naming the address it came in on and no foreign Origin; bodies need
// their Content-Type. Errors are JSON: {"error": "..."}.
func Handler(s *server.Server, cfg Config) http.Handler {
	a := &api{s: s, cfg: cfg, sessions: &sessions{}}
	api := a.requireAuth(a.routes())
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/session", a.signIn)
	mux.HandleFunc("GET /api/session", a.sessionInfo)
	mux.HandleFunc("DELETE /api/session", a.signOut)
	mux.Handle("/api/", api)
	if cfg.Console != nil {
		mux.Handle("/", consoleFiles(cfg.Console))
	} else {
		mux.Handle("/", api)
	}
	d := cfg.BodyTimeout
	if d <= 0 {
		d = DefaultBodyTimeout
	}
	return bodydeadline.Wrap(d, mux)
}

// consoleFiles serves the console's static files to anyone on the API's
// own address, with headers that keep the page from being framed and
// from loading anything from elsewhere.
func consoleFiles(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !sameSite(w, r) {
			return
		}
		if !safeMethod(r.Method) {
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: the console's files are read-only", r.Method, r.URL.Path))
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}

// api serves Handler's routes, one method each.
type api struct {
	s        *server.Server
	cfg      Config
	sessions *sessions

	warnMu sync.Mutex
	warned time.Time // when warnSignIn last logged at Warn

	streams atomic.Int64 // event streams open now
}

func (a *api) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/", a.notFound)
	mux.HandleFunc("GET /api/devices", a.list)
	mux.HandleFunc("GET /api/devices/{ep}", a.device)
	mux.HandleFunc("GET /api/devices/{ep}/read", a.read)
	mux.HandleFunc("GET /api/devices/{ep}/discover", a.discover)
	mux.HandleFunc("POST /api/devices/{ep}/write", a.write)
	mux.HandleFunc("POST /api/devices/{ep}/create", a.create)
	mux.HandleFunc("POST /api/devices/{ep}/execute", a.execute)
	mux.HandleFunc("POST /api/devices/{ep}/delete", a.delete)
	mux.HandleFunc("POST /api/devices/{ep}/attributes", a.attributes)
	mux.HandleFunc("GET /api/devices/{ep}/observe", a.observe)
	mux.HandleFunc("POST /api/update", a.update)
	// The web console's routes (package server/console).
	mux.HandleFunc("GET /api/events", a.events)
	mux.HandleFunc("GET /api/status", a.statusList)
	mux.HandleFunc("GET /api/devices/{ep}/status", a.deviceStatus)
	for pattern, h := range a.cfg.Routes {
		mux.Handle(pattern, h)
	}
	// Queue mode and Send (srvqueue): the last values each device sent.
	mux.HandleFunc("GET /api/devices/{ep}/values", a.values)
	// The bootstrap server's history (package server/bootstrap).
	mux.HandleFunc("GET /api/bootstrap", a.bootstrap)
	mux.HandleFunc("GET /api/bootstrap/{ep}", a.bootstrap)
	return mux
}

func (a *api) bootstrap(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Bootstrap == nil {
		writeError(w, http.StatusNotFound, "no bootstrap server: start lwm2m server with -bootstrap or -bootstrap-dtls")
		return
	}
	a.cfg.Bootstrap.ServeHTTP(w, r)
}

func (a *api) notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path))
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	out := []Device{}
	for _, reg := range a.s.Registrations() {
		out = append(out, a.deviceOf(reg))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) device(w http.ResponseWriter, r *http.Request) {
	reg, ok := a.s.Registration(r.PathValue("ep"))
	if !ok {
		apiError(w, fmt.Errorf("%w: %q", server.ErrNotRegistered, r.PathValue("ep")))
		return
	}
	writeJSON(w, http.StatusOK, a.deviceOf(reg))
}

// Device is a device in /api/devices: its registration, and for a
// queue-mode device whether it is awake and how many operations wait.
type Device struct {
	server.Registration
	Awake  *bool `json:"awake,omitempty"` // only for queue-mode devices
	Queued int   `json:"queued,omitempty"`
}

// deviceOf is reg as /api/devices shows it.
func (a *api) deviceOf(reg server.Registration) Device {
	s := a.s
	d := Device{Registration: reg}
	if reg.Queue {
		awake := !s.Asleep(reg.Endpoint)
		d.Awake = &awake
		d.Queued = s.Queued(reg.Endpoint)
	}
	return d
}

// Value is one resource's last sent value in /api/devices/{ep}/values.
type Value struct {
	Record
	Time time.Time `json:"time"` // when the server received it
}

func (a *api) values(w http.ResponseWriter, r *http.Request) {
	vals, err := a.s.Values(r.PathValue("ep"))
	if err != nil {
		apiError(w, err)
		return
	}
	out := []Value{}
	for _, v := range vals {
		out = append(out, Value{Record: Record{Path: v.Path.String(), Type: v.Value.Type.String(), Value: formatValue(v.Value)}, Time: v.Time.UTC()})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) read(w http.ResponseWriter, r *http.Request) {
	p, f, ok := pathAndFormat(w, r)
	ctx, cancel, ok := requestContext(w, r, ok)
	if !ok {
		return
	}
	defer cancel()
	c, err := a.s.Read(ctx, r.PathValue("ep"), p, f)
	if err != nil {
		apiError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toContent(c, p))
}

func (a *api) discover(w http.ResponseWriter, r *http.Request) {
	p, ok := parsePath(w, r.URL.Query().Get("path"))
	ctx, cancel, ok := requestContext(w, r, ok)
	if !ok {
		return
	}
	defer cancel()
	links, err := a.s.Discover(ctx, r.PathValue("ep"), p)
	if err != nil {
		apiError(w, err)
		return
	}
	out := make([]string, len(links))
	for i, l := range links {
		out[i] = l.String()
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) write(w http.ResponseWriter, r *http.Request) {
	var req WriteRequest
	p, f, payload, ok := decodeWrite(w, r, &req)
	ctx, cancel, ok := requestContext(w, r, ok)
	if !ok {
		return
	}
	defer cancel()
	noContent(w, a.s.Write(ctx, r.PathValue("ep"), p, f, payload, req.Replace))
}

func (a *api) create(w http.ResponseWriter, r *http.Request) {
	var req WriteRequest
	p, f, payload, ok := decodeWrite(w, r, &req)
	ctx, cancel, ok := requestContext(w, r, ok)
	if !ok {
		return
	}
	defer cancel()
	np, err := a.s.Create(ctx, r.PathValue("ep"), p, f, payload)
	if err != nil {
		apiError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"path": np.String()})
}

func (a *api) execute(w http.ResponseWriter, r *http.Request) {
	var req struct{ Path, Args string }
	p, ok := decodePathBody(w, r, &req, &req.Path)
	ctx, cancel, ok := requestContext(w, r, ok)
	if !ok {
		return
	}
	defer cancel()
	noContent(w, a.s.Execute(ctx, r.PathValue("ep"), p, req.Args))
}

func (a *api) delete(w http.ResponseWriter, r *http.Request) {
	var req struct{ Path string }
	p, ok := decodePathBody(w, r, &req, &req.Path)
	ctx, cancel, ok := requestContext(w, r, ok)
	if !ok {
		return
	}
	defer cancel()
	noContent(w, a.s.Delete(ctx, r.PathValue("ep"), p))
}

func (a *api) attributes(w http.ResponseWriter, r *http.Request) {
	var req struct{ Path, Query string }
	p, ok := decodePathBody(w, r, &req, &req.Path)
	ctx, cancel, ok := requestContext(w, r, ok)
	if !ok {
		return
	}
	defer cancel()
	noContent(w, a.s.WriteAttributes(ctx, r.PathValue("ep"), p, req.Query))
}

// noContent answers a device operation that returns no body: 204, or
// err as apiError maps it.
func noContent(w http.ResponseWriter, err error) {
	if err != nil {
		apiError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) observe(w http.ResponseWriter, r *http.Request) {
	p, f, ok := pathAndFormat(w, r)
	if !ok {
		return
	}
	ch := make(chan server.Notification, 16)
	o, err := a.s.Observe(r.Context(), r.PathValue("ep"), p, f, func(n server.Notification) {
		select {
		case ch <- n:
		default: // a slow reader misses values, never blocks the device
		}
	})
	if err != nil {
		apiError(w, err)
		return
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = o.Cancel(ctx)
	}()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	_ = rc.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case n := <-ch:
			if enc.Encode(toContent(n.Content, p)) != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

// updateParams are /api/update's query parameters.
type updateParams struct {
	pattern string
	method  server.Method
	timeout time.Duration
}

func (a *api) parseUpdateParams(r *http.Request) (updateParams, int, error) {
	q := r.URL.Query()
	up := updateParams{method: server.PullCoAP, timeout: 10 * time.Minute}
	if m := q.Get("method"); m != "" {
		var err error
		if up.method, err = server.ParseMethod(m); err != nil {
			return up, http.StatusBadRequest, err
		}
	}
	if t := q.Get("timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 {
			return up, http.StatusBadRequest, fmt.Errorf("bad timeout %q: want a positive Go duration such as 10m", t)
		}
		up.timeout = d
	}
	ep, match := q.Get("ep"), q.Get("match")
	if (ep == "") == (match == "") {
		return up, http.StatusBadRequest, errors.New("give exactly one of the query parameters ep and match")
	}
	up.pattern = match
	if ep != "" {
		if _, ok := a.s.Registration(ep); !ok {
			return up, http.StatusNotFound, fmt.Errorf("%w: %q", server.ErrNotRegistered, ep)
		}
		up.pattern = escapeGlob(ep)
	}
	if _, err := path.Match(up.pattern, ""); err != nil {
		return up, http.StatusBadRequest, fmt.Errorf("bad match pattern %q: %w", up.pattern, err)
	}
	return up, 0, nil
}

// receivePackage stores the request body in a private file of its own,
// up to max bytes, and returns its name; the caller removes it.
func receivePackage(w http.ResponseWriter, r *http.Request, dir string, max int64) (string, int, error) {
	if r.ContentLength > max {
		return "", http.StatusRequestEntityTooLarge, fmt.Errorf("package of %d bytes is larger than the server's limit of %d bytes (-max-package-size)", r.ContentLength, max)
	}
	f, err := os.CreateTemp(dir, "lwm2m-package-*")
	if err != nil {
		return "", http.StatusInternalServerError, fmt.Errorf("storing the package: %w", err)
	}
	n, err := io.Copy(f, http.MaxBytesReader(w, r.Body, max))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		os.Remove(f.Name())
		return "", http.StatusRequestEntityTooLarge, fmt.Errorf("package larger than the server's limit of %d bytes (-max-package-size)", max)
	case err != nil:
		os.Remove(f.Name())
		return "", http.StatusBadRequest, fmt.Errorf("receiving the package: %w", err)
	case n == 0:
		os.Remove(f.Name())
		return "", http.StatusBadRequest, server.ErrEmptyPackage
	}
	return f.Name(), 0, nil
}

// update runs /api/update: the body is the package itself; the server
// keeps it in a private file only while the update runs.
func (a *api) update(w http.ResponseWriter, r *http.Request) {
	if !requireContentType(w, r, "application/octet-stream") {
		return
	}
	up, code, err := a.parseUpdateParams(r)
	if err != nil {
		writeError(w, code, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), up.timeout)
	defer cancel()
	rc := http.NewResponseController(w)
	// The body's read deadline is bodydeadline's (Handler): it slides
	// while the package arrives and is lifted at its end.
	file, code, err := receivePackage(w, r, a.cfg.PackageDir, a.maxPackageSize())
	if err != nil {
		writeError(w, code, err.Error())
		return
	}
	defer os.Remove(file)
	a.streamUpdate(ctx, w, rc, up, file)
}

func (a *api) maxPackageSize() int64 {
	if a.cfg.MaxPackageSize <= 0 {
		return server.DefaultMaxPackageSize
	}
	return a.cfg.MaxPackageSize
}

// streamUpdate runs the update of file and writes an NDJSON line per
// progress report as it comes, then the line with the results. An update
// that fails before its first report is an error status instead.
func (a *api) streamUpdate(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, up updateParams, file string) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	lines := make(chan server.Progress, 64)
	done := make(chan struct{})
	var res []server.DeviceResult
	var err error
	go func() {
		defer close(done)
		res, err = a.s.UpdateMany(ctx, up.pattern, file, up.method, progressTo(ctx, lines))
	}()
	started := false
	for running := true; running; {
		select {
		case p := <-lines:
			started = true
			_ = enc.Encode(UpdateLine{Progress: &p})
			_ = rc.Flush()
		case <-done:
			running = false
		}
	}
	if err != nil && !started {
		apiError(w, err)
		return
	}
	for len(lines) > 0 {
		p := <-lines
		_ = enc.Encode(UpdateLine{Progress: &p})
	}
	_ = enc.Encode(UpdateLine{Results: results(res)})
}

// progressTo returns a progress callback that sends to lines without
// holding up the update on a slow reader.
func progressTo(ctx context.Context, lines chan<- server.Progress) func(server.Progress) {
	return func(p server.Progress) {
		if p.Phase == "deliver" {
			// One per block: a slow reader may miss some.
			select {
			case lines <- p:
			default:
			}
			return
		}
		// State changes are few and each one counts; streamUpdate
		// drains lines until UpdateMany returns.
		select {
		case lines <- p:
		case <-ctx.Done():
		}
	}
}

// results is the results line's list: never null, even when empty.
func results(res []server.DeviceResult) []Result {
	out := []Result{}
	for _, d := range res {
		a := Result{Endpoint: d.Endpoint, Result: int(d.Result), ResultName: d.Result.String()}
		if d.Err != nil {
			a.Error = apiMessage(d.Err)
		}
		out = append(out, a)
	}
	return out
}

func escapeGlob(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', '\\':
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// apiError maps errors to HTTP: unknown endpoint 404, a device's CoAP
// error 502 with the code, a timeout 504.
func apiError(w http.ResponseWriter, err error) {
	body := map[string]string{"error": apiMessage(err)}
	status := http.StatusInternalServerError
	var ce *server.CodeError
	switch {
	case errors.Is(err, server.ErrNotRegistered):
		status = http.StatusNotFound
	case errors.Is(err, server.ErrNoHTTPListener), errors.Is(err, server.ErrEmptyPackage):
		status = http.StatusBadRequest
	case errors.As(err, &ce):
		status = http.StatusBadGateway
		body["coap_code"] = fmt.Sprintf("%d.%02d", ce.Code>>5, ce.Code&0x1f)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, server.ErrQueueExpired):
		status = http.StatusGatewayTimeout
	case errors.Is(err, server.ErrQueueFull):
		status = http.StatusServiceUnavailable
	case errors.Is(err, server.ErrUpdateRunning):
		status = http.StatusConflict
	}
	writeJSON(w, status, body)
}

// apiMessage is err's message without package server's "server: " prefix,
// which means nothing to the API's user.
func apiMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "server: ")
}

func parsePath(w http.ResponseWriter, s string) (model.Path, bool) {
	p, err := model.ParsePath(s)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return p, false
	}
	return p, true
}

func pathAndFormat(w http.ResponseWriter, r *http.Request) (model.Path, content.Format, bool) {
	p, ok := parsePath(w, r.URL.Query().Get("path"))
	if !ok {
		return p, 0, false
	}
	f, err := server.ParseFormat(r.URL.Query().Get("format"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return p, 0, false
	}
	return p, f, true
}

// requestContext bounds a device operation by the request's "timeout"
// query parameter, when given; ok false skips it.
func requestContext(w http.ResponseWriter, r *http.Request, ok bool) (context.Context, context.CancelFunc, bool) {
	if !ok {
		return nil, nil, false
	}
	t := r.URL.Query().Get("timeout")
	if t == "" {
		ctx, cancel := context.WithCancel(r.Context())
		return ctx, cancel, true
	}
	d, err := time.ParseDuration(t)
	if err != nil || d <= 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad timeout %q: want a positive Go duration such as 30s", t))
		return nil, nil, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return ctx, cancel, true
}

// decodePathBody decodes a JSON body with a path field into v.
func decodePathBody(w http.ResponseWriter, r *http.Request, v any, path *string) (model.Path, bool) {
	if !decodeJSON(w, r, v) {
		return model.Path{}, false
	}
	return parsePath(w, *path)
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if !requireContentType(w, r, "application/json") {
		return false
	}
	body := http.MaxBytesReader(w, r.Body, 1<<20)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		return false
	}
	// Read to the end: only then does net/http watch the connection and
	// cancel the request's context when the client goes away.
	if _, err := io.Copy(io.Discard, body); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		return false
	}
	return true
}

func decodeWrite(w http.ResponseWriter, r *http.Request, req *WriteRequest) (model.Path, content.Format, []byte, bool) {
	if !decodeJSON(w, r, req) {
		return model.Path{}, 0, nil, false
	}
	p, ok := parsePath(w, req.Path)
	if !ok {
		return p, 0, nil, false
	}
	if req.Value != nil {
		return p, content.TextPlain, []byte(*req.Value), true
	}
	f, err := server.ParseFormat(req.Format)
	if err == nil && f == server.AnyFormat {
		err = errors.New("format needed with payload")
	}
	var payload []byte
	if err == nil {
		payload, err = base64.StdEncoding.DecodeString(req.Payload)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return p, 0, nil, false
	}
	return p, f, payload, true
}
