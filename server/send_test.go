package server

import (
	"bytes"
	"os/exec"
	"strconv"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"

	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/internal/libcoaptest"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/lwm2m/senml"
)

var sendRecs = []model.Record{
	{Path: mustPath("/3/0/0"), Value: model.String("Acme")},
	{Path: mustPath("/3/0/9"), Value: model.Int(87)},
	{Path: mustPath("/3303/0/5700"), Value: model.Float(21.5)},
}

func (d *qdev) send(t *testing.T, cf message.MediaType, payload []byte) codes.Code {
	t.Helper()
	resp, err := d.cc.Post(ctxT(t), "/dp", cf, bytes.NewReader(payload))
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return resp.Code()
}

func TestSendSenMLCBORAndJSON(t *testing.T) {
	got := make(chan []SentValue, 4)
	s := startServer(t, &Server{OnSend: func(ep string, vals []SentValue) {
		if ep == "sender" {
			got <- vals
		}
	}})
	d := newQdev(t, s, "ep=sender", "lt=600", "lwm2m=1.1")

	cb, err := senml.EncodeCBOR(model.Path{}, sendRecs[:2])
	if err != nil {
		t.Fatal(err)
	}
	if c := d.send(t, message.AppSenmlCbor, cb); c != codes.Changed {
		t.Fatalf("SenML CBOR send: %v, want 2.04", c)
	}
	if vals := <-got; len(vals) != 2 {
		t.Errorf("OnSend got %d values, want 2", len(vals))
	}
	js, err := senml.EncodeJSON(model.Path{}, []model.Record{sendRecs[2], {Path: mustPath("/3/0/9"), Value: model.Int(86)}})
	if err != nil {
		t.Fatal(err)
	}
	if c := d.send(t, message.AppSenmlJSON, js); c != codes.Changed {
		t.Fatalf("SenML JSON send: %v, want 2.04", c)
	}
	<-got
	vals, err := s.Values("sender")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"/3/0/0": "Acme", "/3/0/9": "86", "/3303/0/5700": "21.5"}
	if len(vals) != len(want) {
		t.Fatalf("values = %+v, want %v", vals, want)
	}
	for _, v := range vals {
		if want[v.Path.String()] != v.Value.String() {
			t.Errorf("%s = %s, want %s", v.Path, v.Value, want[v.Path.String()])
		}
		if v.Time.IsZero() {
			t.Errorf("%s has no time", v.Path)
		}
	}
	if vals[0].Path.String() != "/3/0/0" || vals[2].Path.String() != "/3303/0/5700" {
		t.Errorf("values not ordered by path: %+v", vals)
	}
}

func TestSendRefused(t *testing.T) {
	s := startServer(t, &Server{})
	d := newQdev(t, s, "ep=sender", "lt=600", "lwm2m=1.1")
	cb, _ := senml.EncodeCBOR(model.Path{}, sendRecs[:1])

	for _, c := range []struct {
		name    string
		cf      message.MediaType
		payload []byte
		want    codes.Code
	}{
		{"malformed CBOR", message.AppSenmlCbor, []byte{0x81, 0xa1, 0x00}, codes.BadRequest},
		{"malformed JSON", message.AppSenmlJSON, []byte(`[{"n":"/3/0/0","v":`), codes.BadRequest},
		{"not a resource", message.AppSenmlJSON, []byte(`[{"n":"/3/0","v":1}]`), codes.BadRequest},
		{"plain text", message.TextPlain, []byte("1"), codes.UnsupportedMediaType},
	} {
		if got := d.send(t, c.cf, c.payload); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	resp, err := d.cc.Post(ctxT(t), "/dp", message.AppSenmlCbor, bytes.NewReader(cb),
		coapopt.Block(message.Block1, blockwise.SZX16, 0, true))
	if err != nil || resp.Code() != codes.BadOption {
		t.Errorf("send in blocks: %v %v, want 4.02", resp, err)
	}
	if vals, _ := s.Values("sender"); len(vals) != 0 {
		t.Errorf("refused sends kept values: %+v", vals)
	}

	// A peer that has not registered.
	cc, err := coapudp.Dial(s.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err = cc.Post(ctxT(t), "/dp", message.AppSenmlCbor, bytes.NewReader(cb))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.NotFound {
		t.Errorf("send from an unregistered peer: %v, want 4.04", resp.Code())
	}
	if vals, _ := s.Values("sender"); len(vals) != 0 {
		t.Errorf("an unregistered peer's send was kept as the device's: %+v", vals)
	}
}

func TestSendValuesBounded(t *testing.T) {
	s := startServer(t, &Server{MaxSentValues: 2})
	d := newQdev(t, s, "ep=sender", "lt=600", "lwm2m=1.1")
	for _, r := range sendRecs {
		cb, _ := senml.EncodeCBOR(model.Path{}, []model.Record{r})
		if c := d.send(t, message.AppSenmlCbor, cb); c != codes.Changed {
			t.Fatalf("send: %v", c)
		}
	}
	vals, _ := s.Values("sender")
	if len(vals) != 2 {
		t.Fatalf("kept %d values, want 2: %+v", len(vals), vals)
	}
	for _, v := range vals {
		if v.Path == sendRecs[0].Path {
			t.Errorf("kept %s, which was heard from longest ago", v.Path)
		}
	}
}

func TestSendWakesQueueModeDevice(t *testing.T) {
	s, d, _ := startQueueServer(t, &Server{})
	res := goRead(ctxT(t), s, "q1")
	waitQueued(t, s, "q1", 1)
	cb, _ := senml.EncodeCBOR(model.Path{}, sendRecs[:1])
	d.mu.Lock()
	d.woke = true
	d.mu.Unlock()
	if c := d.send(t, message.AppSenmlCbor, cb); c != codes.Changed {
		t.Fatalf("send: %v", c)
	}
	if r := <-res; r.err != nil {
		t.Fatalf("read queued before a Send: %v", r.err)
	}
}

func TestSendValuesBoundedOverAllDevices(t *testing.T) {
	s := startServer(t, &Server{maxSentTotal: 2})
	a := newQdev(t, s, "ep=a", "lt=600", "lwm2m=1.1")
	b := newQdev(t, s, "ep=b", "lt=600", "lwm2m=1.1")
	cb, _ := senml.EncodeCBOR(model.Path{}, sendRecs[:2])
	if c := a.send(t, message.AppSenmlCbor, cb); c != codes.Changed {
		t.Fatalf("first device's send: %v", c)
	}
	if c := b.send(t, message.AppSenmlCbor, cb); c != codes.ServiceUnavailable {
		t.Fatalf("send beyond the server's bound: %v, want 5.03", c)
	}
	if vals, _ := s.Values("b"); len(vals) != 0 {
		t.Errorf("refused send kept values: %+v", vals)
	}
	// New values of resources already kept still come in.
	if c := a.send(t, message.AppSenmlCbor, cb); c != codes.Changed {
		t.Fatalf("update of kept values: %v", c)
	}
	// A device that leaves frees its share.
	if resp, err := a.cc.Delete(ctxT(t), a.loc); err != nil || resp.Code() != codes.Deleted {
		t.Fatalf("deregister: %v %v", resp, err)
	}
	if c := b.send(t, message.AppSenmlCbor, cb); c != codes.Changed {
		t.Fatalf("send after the other device left: %v", c)
	}
}

// TestSendFromLibcoap: libcoap's coap-client, an independent CoAP
// implementation, registers in queue mode and sends SenML JSON from the
// same port.
func TestSendFromLibcoap(t *testing.T) {
	bin := libcoaptest.NeedBinary(t, "coap-client-notls")
	s := startServer(t, &Server{})
	port := strconv.Itoa(libcoaptest.FreePort(t))
	uri := "coap://" + s.LocalAddr().String()
	run := func(args ...string) {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"-p", port, "-B", "10"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("coap-client %v: %v\n%s", args, err, out)
		}
	}
	run("-m", "post", "-t", "40", "-e", "</3/0>", uri+"/rd?ep=libcoap&lt=600&lwm2m=1.1&Q")
	if reg, ok := s.Registration("libcoap"); !ok || !reg.Queue {
		t.Fatalf("libcoap's Register with Q: %+v %v", reg, ok)
	}
	run("-m", "post", "-t", "110", "-e", `[{"bn":"/3/0/","n":"9","v":55},{"n":"0","vs":"libcoap"}]`, uri+"/dp")
	vals, err := s.Values("libcoap")
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != 2 || vals[0].Value.String() != "libcoap" || vals[1].Value.String() != "55" {
		t.Errorf("values = %+v", vals)
	}
}

// TestSendOverDTLS: a device registered over DTLS sends in its session;
// another DTLS identity, which has no registration, is refused.
func TestSendOverDTLS(t *testing.T) {
	s := startDTLSServer(t)
	cc := dtlsDevice(t, s.DTLSLocalAddr().String(), "psk-dev", testPSK, "secure1")
	cb, _ := senml.EncodeCBOR(model.Path{}, sendRecs[:1])
	resp, err := cc.Post(ctxT(t), "/dp", message.AppSenmlCbor, bytes.NewReader(cb))
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("send over DTLS: %v %v", resp, err)
	}
	if vals, _ := s.Values("secure1"); len(vals) != 1 || vals[0].Path != sendRecs[0].Path {
		t.Errorf("values = %+v", vals)
	}
	other, err := dialDTLS(t, s.DTLSLocalAddr().String(), "other", []byte("another key 1234"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	resp, err = other.Post(ctxT(t), "/dp", message.AppSenmlCbor, bytes.NewReader(cb))
	if err != nil || resp.Code() != codes.NotFound {
		t.Fatalf("send from an unregistered DTLS peer: %v %v, want 4.04", resp, err)
	}
}
