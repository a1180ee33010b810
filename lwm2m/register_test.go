package lwm2m_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
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
