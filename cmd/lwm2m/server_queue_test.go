package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/lwm2m/senml"
)

// rawDevice is a scripted device: it registers with the given queries,
// answers every GET with "v", and sends what the test tells it to.
type rawDevice struct {
	cc  *udpclient.Conn
	loc string
}

func startRawDevice(t *testing.T, coapAddr string, query ...string) *rawDevice {
	t.Helper()
	cc, err := coapudp.Dial(coapAddr, options.WithHandlerFunc(func(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
		_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte("v")))
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	var opts []message.Option
	for _, q := range query {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := cc.Post(ctx, "/rd", message.AppLinkFormat, bytes.NewReader([]byte("</3/0>")), opts...)
	if err != nil || resp.Code() != codes.Created {
		t.Fatalf("register: %v %v", resp, err)
	}
	loc, _ := resp.Options().LocationPath()
	return &rawDevice{cc: cc, loc: loc}
}

func (d *rawDevice) post(t *testing.T, path string, cf message.MediaType, body []byte) codes.Code {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := d.cc.Post(ctx, path, cf, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp.Code()
}

// binCLI runs "lwm2m server ARGS" as the built program.
func binCLI(t *testing.T, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(bin, append([]string{"server"}, args...)...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), o.String(), e.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, o.String(), e.String()
}

// waitListLine runs "lwm2m server list" until ep's line contains want.
func waitListLine(t *testing.T, bin, api, ep, want string) {
	t.Helper()
	waitfor.Until(t, 20*time.Second, func() error {
		code, out, errs := binCLI(t, bin, "list", "-api", api)
		if code != 0 {
			return fmt.Errorf("list: exit %d: %s", code, errs)
		}
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == ep && strings.Contains(l, want) {
				return nil
			}
		}
		return fmt.Errorf("no line of %s with %q in:\n%s", ep, want, out)
	})
}

// TestServerQueueModeCLI runs the program as server and as commands: list
// shows a queue-mode device awake, then asleep with a read waiting for it,
// and the read completes once the device sends its Update.
func TestServerQueueModeCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the program and runs server processes")
	}
	bin := e2eBuild(t)

	// The default window (93 s): a device that just registered is awake.
	srv := e2eStartServer(t, bin, "-coap", "127.0.0.1:0")
	startRawDevice(t, srv.coap, "ep=q-awake", "lt=600", "lwm2m=1.1", "Q")
	startRawDevice(t, srv.coap, "ep=plain", "lt=600", "lwm2m=1.1")
	waitListLine(t, bin, srv.api, "q-awake", " awake ")
	waitListLine(t, bin, srv.api, "plain", " - ")
	code, out, _ := binCLI(t, bin, "list", "-api", srv.api)
	if code != 0 || !strings.Contains(out, "QUEUE") || !strings.Contains(out, "LAST SEEN") {
		t.Errorf("list: exit %d, no QUEUE and LAST SEEN columns:\n%s", code, out)
	}

	// A window of 1 ms: the device is asleep as soon as it has registered.
	srv2 := e2eStartServer(t, bin, "-coap", "127.0.0.1:0", "-queue-window", "1ms")
	d := startRawDevice(t, srv2.coap, "ep=q-sleeper", "lt=600", "lwm2m=1.0", "b=UQ")
	waitListLine(t, bin, srv2.api, "q-sleeper", " asleep ")

	read := exec.Command(bin, "server", "read", "-api", srv2.api, "-ep", "q-sleeper", "-timeout", "2m", "/3/0/0")
	var rout, rerr bytes.Buffer
	read.Stdout, read.Stderr = &rout, &rerr
	if err := read.Start(); err != nil {
		t.Fatal(err)
	}
	waitListLine(t, bin, srv2.api, "q-sleeper", "asleep(1 queued)")
	if c := d.post(t, d.loc, message.TextPlain, nil); c != codes.Changed {
		t.Fatalf("Update: %v", c)
	}
	if err := read.Wait(); err != nil {
		t.Fatalf("queued read: %v: %s", err, rerr.String())
	}
	if !strings.Contains(rout.String(), "/3/0/0 = v") {
		t.Errorf("queued read printed %q", rout.String())
	}
}

// TestServerValuesCLI sends SenML CBOR and SenML JSON from a scripted
// device to the program and shows them with "lwm2m server values".
func TestServerValuesCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the program and runs a server process")
	}
	bin := e2eBuild(t)
	srv := e2eStartServer(t, bin, "-coap", "127.0.0.1:0")
	d := startRawDevice(t, srv.coap, "ep=sender", "lt=600", "lwm2m=1.1")

	cb, err := senml.EncodeCBOR(model.Path{}, []model.Record{
		{Path: model.NewPath(3303, 0, 5700), Value: model.Float(21.5)},
		{Path: model.NewPath(3, 0, 0), Value: model.String("Acme\x1b[2J")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c := d.post(t, "/dp", message.AppSenmlCbor, cb); c != codes.Changed {
		t.Fatalf("SenML CBOR Send: %v, want 2.04", c)
	}
	js, err := senml.EncodeJSON(model.Path{}, []model.Record{{Path: model.NewPath(3, 0, 9), Value: model.Int(87)}})
	if err != nil {
		t.Fatal(err)
	}
	if c := d.post(t, "/dp", message.AppSenmlJSON, js); c != codes.Changed {
		t.Fatalf("SenML JSON Send: %v, want 2.04", c)
	}
	if c := d.post(t, "/dp", message.AppSenmlJSON, []byte("[{")); c != codes.BadRequest {
		t.Errorf("malformed Send: %v, want 4.00", c)
	}

	code, out, errs := binCLI(t, bin, "values", "-api", srv.api, "sender")
	if code != 0 {
		t.Fatalf("values: exit %d: %s", code, errs)
	}
	e2eWant(t, "values", out, "/3/0/9 = 87 (integer)", "/3303/0/5700 = 21.5 (float)", `/3/0/0 = "Acme\x1b[2J" (string)`)
	if strings.ContainsRune(out, 0x1b) {
		t.Errorf("values wrote a control character to the terminal: %q", out)
	}
	if i, j := strings.Index(out, "/3/0/0"), strings.Index(out, "/3303/0/5700"); i < 0 || j < i {
		t.Errorf("values not ordered by path:\n%s", out)
	}
	if code, _, errs := binCLI(t, bin, "values", "-api", srv.api, "-ep", "nobody"); code != 1 || !strings.Contains(errs, "not registered") {
		t.Errorf("values of an unknown endpoint: exit %d, want 1: %s", code, errs)
	}
	if code, _, _ := binCLI(t, bin, "values", "-api", srv.api); code != 2 {
		t.Errorf("values without an endpoint: exit %d, want 2", code)
	}
	if code, out, _ := binCLI(t, bin, "values", "-h"); code != 0 || !strings.Contains(out, "usage: lwm2m server values") {
		t.Errorf("values -h: exit %d: %s", code, out)
	}
}

func TestServerQueueFlagsChecked(t *testing.T) {
	for _, args := range [][]string{{"-queue-max", "0"}, {"-queue-window", "-1s"}, {"-queue-expiry", "-1m"}} {
		var o, e bytes.Buffer
		full := append([]string{"-coap", "127.0.0.1:0", "-api", "127.0.0.1:0"}, args...)
		if code := runServer(context.Background(), full, &o, &e); code != 2 || !strings.Contains(e.String(), "-queue") {
			t.Errorf("lwm2m server %v: exit %d, want 2: %s", args, code, e.String())
		}
	}
}
