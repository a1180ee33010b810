package lwm2m_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// A preferred format other than TLV is announced with ct= on the root link.
func TestRegisterAnnouncesPreferredFormat(t *testing.T) {
	h := start(t, lwm2m.Config{PreferredFormat: content.SenMLJSON})
	if want := `</>;rt="oma.lwm2m";ct=110,`; !strings.HasPrefix(h.reg.Links, want) {
		t.Errorf("register payload %q, want it to start with %q", h.reg.Links, want)
	}
}

// A refused Register is logged at Error with the server's diagnostic
// payload and what the client sent, not only as "BadRequest".
func TestRegisterRefusedIsExplained(t *testing.T) {
	srv := lwm2mtest.StartRaw(t)
	srv.RefuseRegister(func(lwm2mtest.RawRegister) (codes.Code, string) { return codes.BadRequest, "bad link\x1b[31m" })
	var logs syncbuf.Buffer
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "refused", Server: srv.URI(), Tx: fastTx,
		RetryMin: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if _, err := srv.WaitRegister(ctx); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(logs.String(), "retry_in") && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	out := logs.String()
	for _, want := range []string{"level=ERROR", "refused Register", "code=BadRequest", `bad link\x1b[31m`, "ep=refused", "lwm2m=1.1", `rt=\"oma.lwm2m\"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("log carries the server's escape sequence raw:\n%q", out)
	}
}

// Under LwM2M 1.0 the client registers as 1.0 and refuses what only 1.1
// defines: SenML formats, composite operations, epmin/epmax.
func TestVersion10(t *testing.T) {
	h := start(t, lwm2m.Config{Version: lwm2m.Version10})
	for _, want := range []string{"lwm2m=1.0", "b=U"} {
		if !slices.Contains(h.reg.Query, want) {
			t.Errorf("register query %v lacks %q", h.reg.Query, want)
		}
	}
	if want := `</>;rt="oma.lwm2m",</1/0>,</3>;ver=1.1,</3/0>`; h.reg.Links != want {
		t.Errorf("register payload %q, want %q", h.reg.Links, want)
	}
	for _, tc := range []struct {
		name    string
		code    codes.Code
		path    string
		format  int
		payload []byte
		opts    []message.Option
		want    codes.Code
	}{
		{"read TLV", codes.GET, "/3/0", -1, nil, []message.Option{accept(content.TLV)}, codes.Content},
		{"read text", codes.GET, "/3/0/0", -1, nil, []message.Option{accept(content.TextPlain)}, codes.Content},
		{"read SenML JSON", codes.GET, "/3/0", -1, nil, []message.Option{accept(content.SenMLJSON)}, codes.NotAcceptable},
		{"read SenML CBOR", codes.GET, "/3/0", -1, nil, []message.Option{accept(content.SenMLCBOR)}, codes.NotAcceptable},
		{"write SenML JSON", codes.PUT, "/1/0/1", int(content.SenMLJSON), []byte(`[{"bn":"/1/0/1","v":60}]`), nil, codes.UnsupportedMediaType},
		{"write text", codes.PUT, "/1/0/1", int(content.TextPlain), []byte("60"), nil, codes.Changed},
		{"fetch", codes.FETCH, "/", int(content.SenMLJSON), []byte(`[{"n":"/3/0/0"}]`), nil, codes.MethodNotAllowed},
		{"epmin", codes.PUT, "/3/0/0", -1, nil, []message.Option{query("epmin=5")}, codes.BadRequest},
		{"pmin", codes.PUT, "/3/0/0", -1, nil, []message.Option{query("pmin=5")}, codes.Changed},
	} {
		if r := h.do(tc.code, tc.path, tc.format, tc.payload, tc.opts...); r.Code != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, r.Code, tc.want)
		}
	}
}

func TestVersionConfig(t *testing.T) {
	for _, cfg := range []lwm2m.Config{
		{Version: "1.2"},
		{Version: "1"},
		{Version: lwm2m.Version10, PreferredFormat: content.SenMLCBOR},
	} {
		cfg.Endpoint, cfg.Server = "v", "coap://127.0.0.1:5683"
		if _, err := lwm2m.New(cfg); !errors.Is(err, lwm2m.ErrConfig) {
			t.Errorf("version %q preferred %d: err %v, want ErrConfig", cfg.Version, cfg.PreferredFormat, err)
		}
	}
}

// Cancelling Run's context ends the client within a second whatever it
// is doing: waiting for the answer to Register from a silent server, or
// de-registering from a server that has gone.
func TestCancelEndsRunPromptly(t *testing.T) {
	t.Run("register unanswered", func(t *testing.T) {
		l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		c, err := lwm2m.New(lwm2m.Config{Endpoint: "silent", Server: "coap://" + l.LocalAddr().String(), Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		_ = l.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := l.ReadFrom(make([]byte, 2048)); err != nil {
			t.Fatalf("no Register: %v", err)
		}
		cancelWithin(t, cancel, done, time.Second)
	})
	t.Run("server gone", func(t *testing.T) {
		srv := lwm2mtest.StartRaw(t)
		// Default transmission parameters: De-register alone would wait
		// up to MAX_TRANSMIT_WAIT, 93 s.
		c, err := lwm2m.New(lwm2m.Config{Endpoint: "gone", Server: srv.URI(), Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		if _, err := srv.WaitRegister(wctx); err != nil {
			t.Fatal(err)
		}
		for !c.Registered() && wctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		srv.Close()
		cancelWithin(t, cancel, done, time.Second)
	})
}

// cancelWithin cancels Run's context and fails unless Run returns within d
// (with some slack for a loaded machine).
func cancelWithin(t *testing.T, cancel context.CancelFunc, done <-chan error, d time.Duration) {
	t.Helper()
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if took := time.Since(start); took > d+d/2 {
			t.Errorf("Run returned %v after the cancel, want about %v at most", took, d)
		}
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run still running 20 s after its context was cancelled")
	}
}

// A client whose server's port is closed says so at once, and when it
// gives up on a Register says when it retries; it does not stay silent
// for MAX_TRANSMIT_WAIT.
func TestUnreachableServerSaysSo(t *testing.T) {
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := l.LocalAddr().String()
	l.Close() // nothing listens: the kernel answers with port unreachable
	var logs syncbuf.Buffer
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "nowhere", Server: "coap://" + addr, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitfor.Until(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "server unreachable") {
			return fmt.Errorf("nothing said 10 s into registering with a closed port:\n%s", logs.String())
		}
		return nil
	})
	if out := logs.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "connection refused") {
		t.Errorf("want a warning with the reason:\n%s", out)
	}
}
