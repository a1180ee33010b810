package server

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/lwm2m-fota/lwm2m/fwupdate/fwobj"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

// A registration Update during a firmware update is not a restart (Core
// 6.2.2): the update keeps its observations and reports one
// re-registration, the one after the device rebooted.
func TestUpdateIsNotReregistration(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	f, _ := writeImage(t, 5000)
	ctx := ctxT(t)
	updated := false
	var phases []string
	r, err := s.Update(ctx, "dev1", f, PullCoAP, func(p Progress) {
		phases = append(phases, p.Phase)
		if p.Phase != "uri" || updated {
			return
		}
		updated = true
		// An Update while the server waits for the firmware state.
		d.mu.Lock()
		loc := d.loc
		d.mu.Unlock()
		resp, err := d.conn().Post(ctx, loc, message.TextPlain, nil)
		if err != nil || resp.Code() != codes.Changed {
			t.Errorf("registration update: %v %v", resp, err)
		}
	})
	if err != nil || r != fwobj.ResultSuccess {
		t.Fatalf("update: %v %v", r, err)
	}
	n := 0
	for _, p := range phases {
		if p == "registered" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d re-registrations reported, want 1 (the reboot): %v", n, phases)
	}
}

// register posts a Register for ep from cc with the query options q.
func register(t *testing.T, cc *udpclient.Conn, ep, links string, q ...string) *pool.Message {
	t.Helper()
	opts := []message.Option{{ID: message.URIQuery, Value: []byte("ep=" + ep)}}
	for _, v := range q {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(v)})
	}
	resp, err := cc.Post(ctxT(t), "/rd", message.AppLinkFormat, strings.NewReader(links), opts...)
	if err != nil {
		t.Fatalf("register %s: %v", ep, err)
	}
	return resp
}

// A lifetime above the cap is clamped: the registration expires at the
// cap plus grace, and the device is told through its Server Object's
// Lifetime, since a response cannot change it (Core 6.2.1).
func TestLifetimeClamped(t *testing.T) {
	s := startServer(t, &Server{MaxLifetime: 10 * time.Minute, Grace: time.Second})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	if resp := register(t, d.conn(), "dev1", "</1/0>,</3/0>,</5/0>", "lt=4294967295"); resp.Code() != codes.Created {
		t.Fatalf("register: %v", resp.Code())
	}
	reg, _ := s.Registration("dev1")
	if reg.Lifetime != 600 {
		t.Errorf("lifetime %d, want the cap 600", reg.Lifetime)
	}
	waitfor.Until(t, 10*time.Second, func() error {
		if v := d.get("/1/0/1"); v != "600" {
			return fmt.Errorf("/1/0/1 = %q, want the cap written to it", v)
		}
		return nil
	})
	s.expire(reg.Updated.Add(600*time.Second + 2*time.Second))
	if _, ok := s.Registration("dev1"); ok {
		t.Error("not expired after the capped lifetime and grace")
	}
	// Update asks for more again: clamped too.
	d.register()
	reg, _ = s.Registration("dev1")
	resp, err := d.conn().Post(ctxT(t), "/rd/"+reg.ID, message.TextPlain, nil,
		message.Option{ID: message.URIQuery, Value: []byte("lt=99999999")})
	if err != nil || resp.Code() != codes.Changed {
		t.Fatalf("update: %v %v", resp, err)
	}
	if reg, _ := s.Registration("dev1"); reg.Lifetime != 600 {
		t.Errorf("lifetime after update %d, want 600", reg.Lifetime)
	}
}

// New endpoints beyond MaxRegistrations get 5.03 with Max-Age; known
// ones still register again.
func TestRegistrationLimit(t *testing.T) {
	s := startServer(t, &Server{MaxRegistrations: 2})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	if resp := register(t, d.conn(), "dev2", "</3/0>"); resp.Code() != codes.Created {
		t.Fatalf("second endpoint: %v", resp.Code())
	}
	resp := register(t, d.conn(), "dev3", "</3/0>")
	if resp.Code() != codes.ServiceUnavailable {
		t.Fatalf("third endpoint: %v, want 5.03", resp.Code())
	}
	if age, err := resp.Options().GetUint32(message.MaxAge); err != nil || age == 0 {
		t.Errorf("5.03 without Max-Age: %v %v", age, err)
	}
	if resp := register(t, d.conn(), "dev2", "</3/0>"); resp.Code() != codes.Created {
		t.Errorf("known endpoint again: %v", resp.Code())
	}
	if n := len(s.Registrations()); n != 2 {
		t.Errorf("%d registrations", n)
	}
}

// Registrations reloaded from the store get today's cap and expire.
func TestStoredRegistrationsExpire(t *testing.T) {
	st := &MemoryStore{}
	old := time.Now().Add(-48 * time.Hour)
	st.Put(Registration{ID: "a", Endpoint: "forever", Lifetime: 1<<32 - 1, Addr: "127.0.0.1:9", Registered: old, Updated: old})
	st.Put(Registration{ID: "b", Endpoint: "fresh", Lifetime: 1<<32 - 1, Addr: "127.0.0.1:9", Registered: time.Now(), Updated: time.Now()})
	s := &Server{Store: st, Addr: "127.0.0.1:0", Logger: testLogger(t)}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r, ok := s.Registration("fresh"); !ok || r.Lifetime != int64(DefaultMaxLifetime/time.Second) {
		t.Errorf("reloaded lifetime: %+v", r)
	}
	s.expire(time.Now())
	if _, ok := s.Registration("forever"); ok {
		t.Error("a registration updated two days ago with lifetime 2^32-1 did not expire")
	}
	if _, ok := s.Registration("fresh"); !ok {
		t.Error("a fresh registration expired")
	}
}

// Re-registering from another address over plain CoAP is allowed, and
// logged: at Warn when the host changed (TestMoveLevel).
func TestReregisterFromAnotherAddressLogged(t *testing.T) {
	var logs syncbuf.Buffer
	s := startServer(t, &Server{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	newFakeDevice(t, s.LocalAddr().String(), "dev1")
	other, err := coapudp.Dial(s.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if resp := register(t, other, "dev1", "</3/0>"); resp.Code() != codes.Created {
		t.Fatalf("register from another address: %v", resp.Code())
	}
	// Same host, another port: a restart, logged at Info.
	if !strings.Contains(logs.String(), `level=INFO msg="endpoint registered again from another address"`) {
		t.Errorf("not logged at Info:\n%s", logs.String())
	}
	// An Update from yet another address moves the registration, logged.
	reg, _ := s.Registration("dev1")
	third, err := coapudp.Dial(s.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if resp, err := third.Post(ctxT(t), "/rd/"+reg.ID, message.TextPlain, nil); err != nil || resp.Code() != codes.Changed {
		t.Fatalf("update from a third address: %v %v", resp, err)
	}
	if !strings.Contains(logs.String(), "registration updated from another address") {
		t.Errorf("move not logged:\n%s", logs.String())
	}
	// The ID is all that an Update needs: 64 random bits.
	if len(reg.ID) != 16 {
		t.Errorf("registration ID %q: want 16 hex digits", reg.ID)
	}
}

// A peer that repeats a refused Register does not flood the log: one
// Warn, the rest at Debug.
func TestRefusalsDoNotFloodLog(t *testing.T) {
	var logs syncbuf.Buffer
	s := startServer(t, &Server{MaxRegistrations: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	for i := range 5 {
		if resp := register(t, d.conn(), "other"+strconv.Itoa(i), "</3/0>"); resp.Code() != codes.ServiceUnavailable {
			t.Fatalf("register %d: %v", i, resp.Code())
		}
	}
	if n := strings.Count(logs.String(), "registration limit reached"); n != 1 {
		t.Errorf("%d warnings for 5 refusals, want 1", n)
	}
}

func TestMoveLevel(t *testing.T) {
	for _, tc := range []struct {
		old, addr string
		want      slog.Level
	}{
		{"127.0.0.1:1000", "127.0.0.1:2000", slog.LevelInfo},
		{"[::ffff:127.0.0.1]:1000", "127.0.0.1:2000", slog.LevelInfo},
		{"127.0.0.1:1000", "127.0.0.2:1000", slog.LevelWarn},
		{"[::1]:1000", "127.0.0.1:1000", slog.LevelWarn},
		{"garbage", "127.0.0.1:1000", slog.LevelWarn},
	} {
		if got := moveLevel(tc.old, tc.addr); got != tc.want {
			t.Errorf("moveLevel(%s, %s) = %v, want %v", tc.old, tc.addr, got, tc.want)
		}
	}
}
