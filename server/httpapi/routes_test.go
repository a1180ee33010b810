package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/server"
)

// recordDevice registers and answers every request with success,
// remembering each one as "METHOD /path?query".
type recordDevice struct {
	mu   sync.Mutex
	seen []string
}

func newRecordDevice(t *testing.T, addr, ep string) *recordDevice {
	d := &recordDevice{}
	cc, err := coapudp.Dial(addr, options.WithHandlerFunc(d.handle))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, "/rd", message.AppLinkFormat, strings.NewReader("</1/0>,</3/0>"),
		message.Option{ID: message.URIQuery, Value: []byte("ep=" + ep)})
	if err != nil || resp.Code() != codes.Created {
		t.Fatalf("register: %v %v", resp, err)
	}
	return d
}

func (d *recordDevice) handle(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	p, _ := r.Options().Path()
	qs, _ := r.Options().Queries()
	line := r.Code().String() + " /" + strings.TrimPrefix(p, "/")
	if len(qs) > 0 {
		line += "?" + strings.Join(qs, "&")
	}
	d.mu.Lock()
	d.seen = append(d.seen, line)
	d.mu.Unlock()
	switch r.Code() {
	case codes.GET:
		if acc, err := r.Accept(); err == nil && acc == message.AppLinkFormat {
			_ = w.SetResponse(codes.Content, message.AppLinkFormat, strings.NewReader("</3/0/0>,</3/0/1>"))
			return
		}
		var opts []message.Option
		if obs, err := r.Observe(); err == nil && obs == 0 {
			opts = append(opts, message.Option{ID: message.Observe, Value: []byte{2}})
		}
		_ = w.SetResponse(codes.Content, message.TextPlain, strings.NewReader("Acme"), opts...)
	case codes.POST:
		if strings.Count(p, "/") <= 1 { // an object: Create
			_, _ = r.ReadBody()
			_ = w.SetResponse(codes.Created, message.TextPlain, nil,
				message.Option{ID: message.LocationPath, Value: []byte("1")},
				message.Option{ID: message.LocationPath, Value: []byte("7")})
			return
		}
		_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
	case codes.PUT:
		_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
	case codes.DELETE:
		_ = w.SetResponse(codes.Deleted, message.TextPlain, nil)
	}
}

// last returns the last request the device saw, "" for none.
func (d *recordDevice) last() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.seen) == 0 {
		return ""
	}
	return d.seen[len(d.seen)-1]
}

// TestAPIRoutes: each route reaches the device operation it names and
// answers with its status and JSON body; a method a route does not take
// falls through to the JSON 404.
func TestAPIRoutes(t *testing.T) {
	s := startServer(t, &server.Server{})
	d := newRecordDevice(t, s.LocalAddr().String(), "dev1")
	hs := apiServer(t, s, Config{})
	for _, tc := range []struct {
		method, path, body string
		status             int
		device             string // the request the device saw, "" for none
		reply              string // the JSON body, "" for none
	}{
		{"GET", "/api/devices/dev1/read?path=/3/0/0&format=text", "", 200, "GET /3/0/0",
			`{"format":0,"payload":"QWNtZQ==","records":[{"path":"/3/0/0","type":"string","value":"Acme"}]}`},
		{"GET", "/api/devices/dev1/discover?path=/3/0", "", 200, "GET /3/0", `["\u003c/3/0/0\u003e","\u003c/3/0/1\u003e"]`},
		{"POST", "/api/devices/dev1/write", `{"path":"/1/0/1","value":"300"}`, 204, "POST /1/0/1", ""},
		{"POST", "/api/devices/dev1/write", `{"path":"/1/0/1","value":"300","replace":true}`, 204, "PUT /1/0/1", ""},
		{"POST", "/api/devices/dev1/create", `{"path":"/1","value":"x"}`, 201, "POST /1", `{"path":"/1/7"}`},
		{"POST", "/api/devices/dev1/execute", `{"path":"/3/0/4","args":"0='a'"}`, 204, "POST /3/0/4", ""},
		{"POST", "/api/devices/dev1/delete", `{"path":"/1/7"}`, 204, "DELETE /1/7", ""},
		{"POST", "/api/devices/dev1/attributes", `{"path":"/1/0/1","query":"pmin=10&pmax=60"}`, 204, "PUT /1/0/1?pmin=10&pmax=60", ""},
		{"GET", "/api/devices/dev1/write", "", 404, "", `{"error":"no API endpoint GET /api/devices/dev1/write"}`},
		{"GET", "/api/update", "", 404, "", `{"error":"no API endpoint GET /api/update"}`},
		{"DELETE", "/api/devices/dev1", "", 404, "", `{"error":"no API endpoint DELETE /api/devices/dev1"}`},
	} {
		before := d.last()
		resp := apiDo(t, context.Background(), hs, tc.method, tc.path, tc.body)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.status || strings.TrimSpace(string(body)) != tc.reply {
			t.Errorf("%s %s: %s %s, want %d %s", tc.method, tc.path, resp.Status, body, tc.status, tc.reply)
		}
		want := tc.device
		if want == "" {
			want = before
		}
		if got := d.last(); got != want {
			t.Errorf("%s %s: device saw %q, want %q", tc.method, tc.path, got, want)
		}
	}

	// observe streams one NDJSON line per notification, the first being
	// the answer to the Observe request.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := apiDo(t, ctx, hs, "GET", "/api/devices/dev1/observe?path=/3/0/0", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("observe: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		t.Fatalf("observe: no line: %v", sc.Err())
	}
	var c Content
	if err := json.Unmarshal(sc.Bytes(), &c); err != nil || len(c.Records) != 1 || c.Records[0].Value != "Acme" {
		t.Errorf("observe line %s: %v", sc.Bytes(), err)
	}
	if got := d.last(); got != "GET /3/0/0" {
		t.Errorf("observe: device saw %q", got)
	}
}
