package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/servertest"
	"github.com/lwm2m-fota/lwm2m/objects"
	"github.com/lwm2m-fota/lwm2m/server"
)

const testToken = "test-token-0123456789"

// startServer runs s on a free loopback port until the test ends.
func startServer(t *testing.T, s *server.Server) *server.Server {
	t.Helper()
	s.Addr = "127.0.0.1:0"
	return servertest.Start(t, s)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// apiServer serves s's API on httptest with testToken.
func apiServer(t *testing.T, s *server.Server, cfg Config) *httptest.Server {
	t.Helper()
	if cfg.Token == "" {
		cfg.Token = testToken
	}
	hs := httptest.NewServer(Handler(s, cfg))
	t.Cleanup(hs.Close)
	return hs
}

// apiDo sends an authenticated request; a body starting with '{' is JSON.
func apiDo(t *testing.T, ctx context.Context, hs *httptest.Server, method, path, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, hs.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	if strings.HasPrefix(body, "{") {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// apiUpload sends pkg to /api/update?query.
func apiUpload(t *testing.T, ctx context.Context, hs *httptest.Server, query string, pkg []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", hs.URL+"/api/update?"+query, bytes.NewReader(pkg))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// device is an in-process LwM2M client (package lwm2m) with the Device
// object and a Firmware Update object whose handlers keep the package.
type device struct {
	*servertest.Device
	ep  string
	obj *fwupdate.Object

	mu      sync.Mutex
	fw      bytes.Buffer
	reboots int
	// fail, when set, fails the package's integrity check (Result 5).
	fail bool
	// opened, when set, receives the package URI of each download, and
	// hold, when set, keeps StreamOpen waiting: the device stalls in
	// Downloading.
	opened chan string
	hold   chan struct{}
}

// startDevice runs a device with endpoint ep against s until the test
// ends, and waits until it is registered.
func startDevice(t *testing.T, s *server.Server, ep string, setup ...func(*device)) *device {
	t.Helper()
	d := &device{ep: ep}
	for _, f := range setup {
		f(d)
	}
	var err error
	d.Device, err = servertest.RunDevice(t, s, servertest.DeviceConfig{
		Endpoint: ep,
		Info: objects.DeviceInfo{Manufacturer: "Acme", FirmwareVersion: "1.0", Reboot: func() {
			d.mu.Lock()
			d.reboots++
			d.mu.Unlock()
		}},
		Firmware:  d,
		Installed: func(o *fwupdate.Object) { d.obj = o },
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *device) StreamOpen(ctx context.Context, uri string, _ []byte) error {
	if d.opened != nil {
		d.opened <- uri
	}
	if d.hold != nil {
		select {
		case <-d.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fw.Reset()
	return nil
}

func (d *device) StreamWrite(b []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fw.Write(b)
	return nil
}

func (d *device) StreamFinish() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail {
		return fwupdate.ErrIntegrity
	}
	return nil
}

func (d *device) Reset() error { return nil }

func (d *device) PerformUpgrade(context.Context) error {
	go d.obj.SetResult(fwupdate.ResultSuccess) // applied at once, no reboot
	return nil
}

// firmware is the last package the device received.
func (d *device) firmware() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Clone(d.fw.Bytes())
}

func (d *device) rebootCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reboots
}

// muteDevice registers from a plain UDP socket and then answers no
// request: the path of each request it receives (retransmissions too)
// goes to paths. It can still send a Send (POST /dp) of its own.
type muteDevice struct {
	conn  *net.UDPConn
	srv   net.Addr
	mid   int32
	paths chan string
	acks  chan message.Message
}

// newMuteDevice registers as ep, with the query parameters given, such as
// "Q" for queue mode.
func newMuteDevice(t *testing.T, s *server.Server, ep string, query ...string) *muteDevice {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d := &muteDevice{conn: conn, srv: s.LocalAddr(), paths: make(chan string, 64), acks: make(chan message.Message, 4)}
	go d.read()
	opts := message.Options{{ID: message.URIPath, Value: []byte("rd")}, {ID: message.ContentFormat, Value: []byte{40}},
		{ID: message.URIQuery, Value: []byte("ep=" + ep)}}
	for _, q := range query {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
	}
	if code := d.post(t, opts, []byte("</3/0>")); code != codes.Created {
		t.Fatalf("register: %v", code)
	}
	return d
}

// post sends a confirmable POST and returns the code of its answer.
func (d *muteDevice) post(t *testing.T, opts message.Options, payload []byte) codes.Code {
	t.Helper()
	d.mid++
	m := message.Message{Token: []byte{byte(d.mid)}, Code: codes.POST, Type: message.Confirmable, MessageID: d.mid,
		Options: opts, Payload: payload}
	b := make([]byte, 1500)
	n, err := coder.DefaultCoder.Encode(m, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.conn.WriteTo(b[:n], d.srv); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case a := <-d.acks:
			if a.MessageID == m.MessageID {
				return a.Code
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no answer to POST")
		}
	}
}

// send sends SenML JSON values (LwM2M 1.1 Core §6.4.6, POST /dp).
func (d *muteDevice) send(t *testing.T, senmlJSON string) codes.Code {
	t.Helper()
	return d.post(t, message.Options{{ID: message.URIPath, Value: []byte("dp")}, {ID: message.ContentFormat, Value: []byte{110}}},
		[]byte(senmlJSON))
}

func (d *muteDevice) read() {
	buf := make([]byte, 1500)
	for {
		n, _, err := d.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m := message.Message{Options: make(message.Options, 0, 16)} // Decode fills up to cap
		if _, err := coder.DefaultCoder.Decode(buf[:n], &m); err != nil {
			continue
		}
		if m.Type == message.Acknowledgement {
			d.acks <- m
			continue
		}
		p, _ := m.Options.Path()
		select {
		case d.paths <- strings.TrimPrefix(p, "/"):
		default:
		}
	}
}

// published reports whether s serves pkg as an image.
func published(s *server.Server, pkg []byte) bool {
	sum := sha256.Sum256(pkg)
	rec := httptest.NewRecorder()
	s.ImageHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/fw/"+hex.EncodeToString(sum[:8]), nil))
	return rec.Code == http.StatusOK
}

// testPackage is a package of n bytes.
func testPackage(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}
