package lwm2m_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/lwm2m/senml"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// startRealServer runs our server package on a free port until the test
// ends.
func startRealServer(t *testing.T, s *server.Server) *server.Server {
	t.Helper()
	s.Addr = "127.0.0.1:0"
	if s.Logger == nil {
		s.Logger = testLogger(t)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// runReal runs a client with cfg (Server set to s) and objs until the
// test ends, once it has registered.
func runReal(t *testing.T, s *server.Server, cfg lwm2m.Config, objs ...lwm2m.Object) *lwm2m.Client {
	t.Helper()
	cfg.Server = "coap://" + s.LocalAddr().String()
	if cfg.Endpoint == "" {
		cfg.Endpoint = "ep"
	}
	if cfg.Tx == (lwm2m.TxParams{}) {
		cfg.Tx = fastTx
	}
	cfg.RetryMin, cfg.RetryMax = 50*time.Millisecond, 200*time.Millisecond
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := lwm2m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := c.AddObject(o); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitfor.Until(t, 10*time.Second, func() error {
		if _, ok := s.Registration(cfg.Endpoint); !ok || !c.Registered() {
			return errors.New("not registered")
		}
		return nil
	})
	return c
}

func temperature(v float64) *lwm2m.Static {
	o := lwm2m.NewStatic(3303, "", lwm2m.Resource{ID: 5700, Type: model.TypeFloat, Ops: lwm2m.OpRead})
	o.Set(0, 5700, model.Float(v))
	return o
}

// Send reaches our server, which decodes it, in SenML CBOR and JSON.
func TestSendToServer(t *testing.T) {
	for _, f := range []content.Format{0, content.SenMLCBOR, content.SenMLJSON} {
		t.Run(fmt.Sprint(f), func(t *testing.T) {
			s := startRealServer(t, &server.Server{})
			c := runReal(t, s, lwm2m.Config{SendFormat: f}, temperature(21.5), lwm2m.NewStatic(3, "", lwm2m.Resource{ID: 0, Type: model.TypeString, Ops: lwm2m.OpRead}))
			if err := c.Send(t.Context(), model.NewPath(3303, 0, 5700)); err != nil {
				t.Fatal(err)
			}
			vals, err := s.Values("ep")
			if err != nil {
				t.Fatal(err)
			}
			if len(vals) != 1 || vals[0].Path != model.NewPath(3303, 0, 5700) || !vals[0].Value.Equal(model.Float(21.5)) {
				t.Fatalf("server has %+v, want /3303/0/5700 = 21.5", vals)
			}
		})
	}
}

// The format on the wire is the one Config.SendFormat asks for, and the
// payload holds exactly the values asked for.
func TestSendFormatOnTheWire(t *testing.T) {
	for _, tc := range []struct {
		cfg  content.Format
		want message.MediaType
	}{{0, message.AppSenmlCbor}, {content.SenMLJSON, message.AppSenmlJSON}} {
		h := start(t, lwm2m.Config{SendFormat: tc.cfg}, temperature(20))
		if err := h.client.Send(h.ctx(), model.NewPath(3303, 0), model.NewPath(3, 0, 0)); err != nil {
			t.Fatal(err)
		}
		sends := h.srv.Sends()
		if len(sends) != 1 || sends[0].Format != tc.want {
			t.Fatalf("sends %+v, want one in %v", sends, tc.want)
		}
		var recs []model.Record
		var err error
		if tc.want == message.AppSenmlJSON {
			recs, err = senml.DecodeJSON(model.Path{}, sends[0].Payload, types)
		} else {
			recs, err = senml.DecodeCBOR(model.Path{}, sends[0].Payload, types)
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 || recs[0].Path != model.NewPath(3303, 0, 5700) || recs[1].Path != model.NewPath(3, 0, 0) {
			t.Errorf("sent %+v", recs)
		}
	}
}

// A server that refuses gives a SendError with its code.
func TestSendErrorCarriesCode(t *testing.T) {
	h := start(t, lwm2m.Config{}, temperature(20))
	h.srv.SetSendCode(codes.BadRequest)
	err := h.client.Send(h.ctx(), model.NewPath(3303, 0, 5700))
	var se *lwm2m.SendError
	if !errors.As(err, &se) || se.Code != codes.BadRequest {
		t.Fatalf("Send = %v, want a SendError with 4.00", err)
	}
}

// Mute Send (/1/x/23) true: nothing is sent.
func TestSendMuted(t *testing.T) {
	s := startRealServer(t, &server.Server{})
	c := runReal(t, s, lwm2m.Config{}, temperature(21.5))
	if err := s.Write(t.Context(), "ep", model.NewPath(1, 0, 23), content.TextPlain, []byte("1"), true); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(t.Context(), model.NewPath(3303, 0, 5700)); !errors.Is(err, lwm2m.ErrSendMuted) {
		t.Fatalf("Send with Mute Send true = %v, want ErrSendMuted", err)
	}
	if vals, _ := s.Values("ep"); len(vals) != 0 {
		t.Fatalf("the server received %+v", vals)
	}
	if err := s.Write(t.Context(), "ep", model.NewPath(1, 0, 23), content.TextPlain, []byte("0"), true); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(t.Context(), model.NewPath(3303, 0, 5700)); err != nil {
		t.Fatalf("Send with Mute Send false: %v", err)
	}
}

// LwM2M 1.0 has no Send.
func TestSendRefusedUnder10(t *testing.T) {
	h := start(t, lwm2m.Config{Version: lwm2m.Version10}, temperature(20))
	if err := h.client.Send(h.ctx(), model.NewPath(3303, 0, 5700)); !errors.Is(err, lwm2m.ErrConfig) {
		t.Fatalf("Send under 1.0 = %v, want ErrConfig", err)
	}
	if n := len(h.srv.Sends()); n != 0 {
		t.Fatalf("%d Sends reached the server", n)
	}
}

// Send goes through the Access Control layer: a server without Read on
// an instance does not get its values.
func TestSendRespectsAccessControl(t *testing.T) {
	a, b := lwm2mtest.Start(t, ""), lwm2mtest.Start(t, "")
	acl := aclInstance(0, 3303, 0, 1, map[uint16]int64{1: lwm2m.RightRead}) // server 1 only
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "acl-send", Provisioning: provision([]account{{1, a.URI()}, {2, b.URI()}}, acl...),
		Tx: fastTx, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddObject(temperature(20)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitfor.Until(t, 10*time.Second, func() error {
		if n := len(c.Servers()); n != 2 {
			return fmt.Errorf("%d sessions", n)
		}
		for _, s := range c.Servers() {
			if !s.Registered() {
				return fmt.Errorf("ssid %d not registered", s.ShortServerID)
			}
		}
		return nil
	})
	if err := c.SendTo(t.Context(), 2, model.NewPath(3303, 0, 5700)); !errors.Is(err, lwm2m.ErrNothingToSend) {
		t.Fatalf("SendTo a server without Read = %v, want ErrNothingToSend", err)
	}
	if n := len(b.Sends()); n != 0 {
		t.Fatalf("server 2 received %d Sends", n)
	}
	if err := c.SendTo(t.Context(), 1, model.NewPath(3303, 0, 5700)); err != nil {
		t.Fatalf("SendTo the owner: %v", err)
	}
	if err := c.SendTo(t.Context(), 7, model.NewPath(3303, 0, 5700)); !errors.Is(err, lwm2m.ErrNoServer) {
		t.Fatalf("SendTo an unknown server = %v, want ErrNoServer", err)
	}
}

// In queue mode Send wakes the client, which sends its Update first;
// offline, Send fails at once with ErrOffline.
func TestSendWakesQueueModeAndFailsOffline(t *testing.T) {
	h := start(t, queueCfg(), temperature(20))
	waitPhase(t, h.client, "sleeping")
	h.srv.Pending()
	if err := h.client.Send(h.ctx(), model.NewPath(3303, 0, 5700)); err != nil {
		t.Fatalf("Send from a sleeping client: %v", err)
	}
	if ev := h.srv.Pending(); len(ev) == 0 || !ev[0].Update {
		t.Fatalf("no Registration Update before the Send: %+v", ev)
	}
	if n := len(h.srv.Sends()); n != 1 {
		t.Fatalf("%d Sends reached the server, want 1", n)
	}
	h.client.EnterOffline()
	waitPhase(t, h.client, "offline")
	if err := h.client.Send(h.ctx(), model.NewPath(3303, 0, 5700)); !errors.Is(err, lwm2m.ErrOffline) {
		t.Fatalf("Send offline = %v, want ErrOffline", err)
	}
	h.client.ExitOffline()
	if err := h.client.Send(h.ctx(), model.NewPath(3303, 0, 5700)); err != nil {
		t.Fatalf("Send after ExitOffline: %v", err)
	}
}
