package lwm2m_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// bsWrite sends Bootstrap-Write of recs to path in format f and fails the
// script unless the client answers 2.04.
func bsWrite(ctx context.Context, t *testing.T, conn *udpclient.Conn, f content.Format, path model.Path, recs []model.Record) {
	t.Helper()
	body, err := content.Encode(f, path, recs)
	if err != nil {
		t.Errorf("encode %s: %v", path, err)
		return
	}
	resp, err := lwm2mtest.Do(ctx, conn, codes.PUT, path.String(), int(f), body)
	if err != nil || resp.Code != codes.Changed {
		t.Errorf("Bootstrap-Write %s: %v %v, want 2.04", path, resp.Code, err)
	}
}

// securityRecords are the resources of Security instance /0/inst for an
// LwM2M server at uri (NoSec, or PSK with id and key).
func securityRecords(inst uint16, uri string, ssid int64, id, key []byte) []model.Record {
	mode := int64(lwm2m.SecurityNoSec)
	if key != nil {
		mode = int64(lwm2m.SecurityPSK)
	}
	return []model.Record{
		{Path: model.NewPath(0, inst, 0), Value: model.String(uri)},
		{Path: model.NewPath(0, inst, 1), Value: model.Bool(false)},
		{Path: model.NewPath(0, inst, 2), Value: model.Int(mode)},
		{Path: model.NewPath(0, inst, 3), Value: model.Opaque(id)},
		{Path: model.NewPath(0, inst, 5), Value: model.Opaque(key)},
		{Path: model.NewPath(0, inst, 10), Value: model.Int(ssid)},
	}
}

func serverRecords(inst uint16, ssid, lifetime int64) []model.Record {
	return []model.Record{
		{Path: model.NewPath(1, inst, 0), Value: model.Int(ssid)},
		{Path: model.NewPath(1, inst, 1), Value: model.Int(lifetime)},
		{Path: model.NewPath(1, inst, 6), Value: model.Bool(false)},
		{Path: model.NewPath(1, inst, 7), Value: model.String("U")},
	}
}

// provisionServer is the usual script: delete everything, write one
// LwM2M server account, finish.
func provisionServer(t *testing.T, uri string, id, key []byte) func(context.Context, lwm2mtest.BootstrapRequest) {
	return func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		if resp, err := lwm2mtest.Do(ctx, r.Conn, codes.DELETE, "/", -1, nil); err != nil || resp.Code != codes.Deleted {
			t.Errorf("Bootstrap-Delete /: %v %v", resp.Code, err)
		}
		bsWrite(ctx, t, r.Conn, content.TLV, model.NewPath(0, 1), securityRecords(1, uri, 101, id, key))
		bsWrite(ctx, t, r.Conn, content.SenMLJSON, model.NewPath(1, 0), serverRecords(0, 101, 60))
		if resp, err := r.Finish(ctx); err != nil || resp.Code != codes.Changed {
			t.Errorf("Bootstrap-Finish: %v %v (%s)", resp.Code, err, resp.Payload)
		}
	}
}

// runBootstrapClient runs a client with cfg until the test ends.
func runBootstrapClient(t *testing.T, cfg lwm2m.Config) (stop func()) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = lwm2mtest.Logger(t)
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin, cfg.RetryMax = 10*time.Millisecond, 50*time.Millisecond
	}
	c, err := lwm2m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitFinished waits until the bootstrap server has the answer to its
// Bootstrap-Finish, so that it is not closed with the answer in flight.
func waitFinished(t *testing.T, bs *lwm2mtest.BootstrapServer) {
	t.Helper()
	select {
	case code := <-bs.Finished:
		if code != codes.Changed {
			t.Errorf("Bootstrap-Finish answered %v", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to Bootstrap-Finish")
	}
}

func waitRegister(t *testing.T, s *lwm2mtest.Server, ep string) lwm2mtest.Registration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	reg, err := s.WaitRegister(ctx, ep)
	if err != nil {
		t.Fatalf("%s did not register: %v", ep, err)
	}
	return reg
}

// A client with only a bootstrap server bootstraps, then registers with
// the server the bootstrap configured, and the configuration is stored.
func TestBootstrapThenRegister(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		provisionServer(t, srv.URI(), nil, nil)(ctx, r)
	})
	store := lwm2m.NewFileProvisioningStore(filepath.Join(t.TempDir(), "provisioning.json"))
	runBootstrapClient(t, lwm2m.Config{Endpoint: "bs-1", Bootstrap: bs.URI(), ProvisioningStore: store})
	reg := waitRegister(t, srv, "bs-1")
	waitFinished(t, bs)
	if !strings.Contains(strings.Join(reg.Query, "&"), "lt=60") {
		t.Errorf("registered with %v, want the bootstrapped lifetime 60", reg.Query)
	}
	req := <-bs.Requests
	if got := strings.Join(req.Query, "&"); got != "ep=bs-1&pct=11542" {
		t.Errorf("Bootstrap-Request query %q, want ep=bs-1&pct=11542", got)
	}
	p, err := store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := valueAt(p, model.NewPath(0, 1, 0)); !ok || v.Str != srv.URI() {
		t.Errorf("stored /0/1/0 = %v, want %s", v, srv.URI())
	}
	if v, ok := valueAt(p, model.NewPath(0, 0, 1)); !ok || !v.Bool {
		t.Errorf("the bootstrap server's account is not stored: /0/0/1 = %v", v)
	}
}

// Bootstrap-Read reaches /1 and /2 only; Bootstrap-Discover lists the
// accounts with ssid and uri; Bootstrap-Delete / keeps the bootstrap
// server's own Security instance, which cannot be deleted alone either.
func TestBootstrapReadDiscoverDelete(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	results := make(chan error, 1)
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		results <- func() error {
			conn := r.Conn
			if resp, err := lwm2mtest.Do(ctx, conn, codes.DELETE, "/", -1, nil); err != nil || resp.Code != codes.Deleted {
				return fmt.Errorf("Delete /: %v %v", resp.Code, err)
			}
			disc, err := lwm2mtest.Do(ctx, conn, codes.GET, "/", -1, nil, message.Option{ID: message.Accept, Value: []byte{40}})
			if err != nil || disc.Code != codes.Content {
				return fmt.Errorf("Discover /: %v %v", disc.Code, err)
			}
			want := `</>;lwm2m=1.1,</0/0>;uri="` + r.ServerURI() + `",</1>,</2>`
			if !strings.HasPrefix(string(disc.Payload), want) {
				return fmt.Errorf("Discover / after Delete / = %s, want it to start %s", disc.Payload, want)
			}
			if resp, _ := lwm2mtest.Do(ctx, conn, codes.DELETE, "/0/0", -1, nil); resp.Code != codes.BadRequest {
				return fmt.Errorf("Delete /0/0 (the bootstrap server's account): %v, want 4.00", resp.Code)
			}
			bsWrite(ctx, t, conn, content.TLV, model.NewPath(0, 1), securityRecords(1, srv.URI(), 101, nil, nil))
			bsWrite(ctx, t, conn, content.TLV, model.NewPath(1, 0), serverRecords(0, 101, 60))
			bsWrite(ctx, t, conn, content.TextPlain, model.NewPath(1, 0, 1), []model.Record{{Path: model.NewPath(1, 0, 1), Value: model.Int(90)}})
			disc, _ = lwm2mtest.Do(ctx, conn, codes.GET, "/", -1, nil, message.Option{ID: message.Accept, Value: []byte{40}})
			for _, link := range []string{`</0/1>;ssid=101;uri="` + srv.URI() + `"`, `</1/0>;ssid=101`} {
				if !strings.Contains(string(disc.Payload), link) {
					return fmt.Errorf("Discover / = %s, want %s", disc.Payload, link)
				}
			}
			read, err := lwm2mtest.Do(ctx, conn, codes.GET, "/1/0/1", -1, nil)
			if err != nil || read.Code != codes.Content || string(read.Payload) != "90" {
				return fmt.Errorf("Read /1/0/1: %v %q %v, want 2.05 90", read.Code, read.Payload, err)
			}
			read, _ = lwm2mtest.Do(ctx, conn, codes.GET, "/1/0", -1, nil)
			recs, err := content.Decode(content.Format(read.Format), model.NewPath(1, 0), read.Payload, model.CoreTypes)
			if read.Code != codes.Content || err != nil || len(recs) != 4 {
				return fmt.Errorf("Read /1/0: %v, %d records, %v", read.Code, len(recs), err)
			}
			for _, path := range []string{"/0", "/0/1", "/3"} {
				if resp, _ := lwm2mtest.Do(ctx, conn, codes.GET, path, -1, nil); resp.Code != codes.Unauthorized {
					return fmt.Errorf("Read %s: %v, want 4.01 Unauthorized", path, resp.Code)
				}
			}
			if resp, _ := lwm2mtest.Do(ctx, conn, codes.GET, "/1/7", -1, nil); resp.Code != codes.NotFound {
				return fmt.Errorf("Read /1/7: %v, want 4.04", resp.Code)
			}
			if resp, err := r.Finish(ctx); err != nil || resp.Code != codes.Changed {
				return fmt.Errorf("Finish: %v %v %s", resp.Code, err, resp.Payload)
			}
			return nil
		}()
	})
	store := lwm2m.NewFileProvisioningStore(filepath.Join(t.TempDir(), "provisioning.json"))
	runBootstrapClient(t, lwm2m.Config{Endpoint: "bs-2", Bootstrap: bs.URI(), ProvisioningStore: store})
	if err := <-results; err != nil {
		t.Fatal(err)
	}
	reg := waitRegister(t, srv, "bs-2")
	if !strings.Contains(strings.Join(reg.Query, "&"), "lt=90") {
		t.Errorf("registered with %v, want lifetime 90 as written to /1/0/1", reg.Query)
	}
	// The LwM2M server never reaches /0.
	resp, err := lwm2mtest.Do(context.Background(), reg.Conn, codes.GET, "/0/0", -1, nil)
	if err != nil || resp.Code != codes.Unauthorized {
		t.Errorf("the LwM2M server read /0/0: %v %v, want 4.01", resp.Code, err)
	}
}

// An inconsistent configuration is refused at Finish with 4.06 and a
// diagnostic; the bootstrap server may fix it and finish again. Nothing
// is stored until then.
func TestBootstrapFinishInconsistent(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	store := lwm2m.NewFileProvisioningStore(filepath.Join(t.TempDir(), "provisioning.json"))
	results := make(chan error, 1)
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		results <- func() error {
			bsWrite(ctx, t, r.Conn, content.TLV, model.NewPath(1, 0), serverRecords(0, 7, 60))
			resp, err := r.Finish(ctx)
			if err != nil || resp.Code != codes.NotAcceptable {
				return fmt.Errorf("Finish with a Server instance and no Security instance: %v %v, want 4.06", resp.Code, err)
			}
			if want := "/1/0: no Security instance has Short Server ID 7"; !strings.Contains(string(resp.Payload), want) {
				return fmt.Errorf("4.06 diagnostic %q, want %q", resp.Payload, want)
			}
			if _, err := store.Load(ctx); !errors.Is(err, lwm2m.ErrNotProvisioned) {
				return fmt.Errorf("the refused configuration was stored: %v", err)
			}
			bsWrite(ctx, t, r.Conn, content.TLV, model.NewPath(0, 1), securityRecords(1, srv.URI(), 7, nil, nil))
			if resp, err := r.Finish(ctx); err != nil || resp.Code != codes.Changed {
				return fmt.Errorf("Finish after the fix: %v %v %s", resp.Code, err, resp.Payload)
			}
			return nil
		}()
	})
	runBootstrapClient(t, lwm2m.Config{Endpoint: "bs-3", Bootstrap: bs.URI(), ProvisioningStore: store})
	if err := <-results; err != nil {
		t.Fatal(err)
	}
	waitRegister(t, srv, "bs-3")
}

// A bootstrap server that goes quiet is given up on after
// BootstrapTimeout, and the client bootstraps again.
func TestBootstrapTimeoutRetries(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	attempts := make(chan struct{}, 10)
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		attempts <- struct{}{}
		if len(attempts) == 1 {
			return // the first time: silence after the 2.04
		}
		provisionServer(t, srv.URI(), nil, nil)(ctx, r)
	})
	runBootstrapClient(t, lwm2m.Config{Endpoint: "bs-4", Bootstrap: bs.URI(), BootstrapTimeout: 200 * time.Millisecond})
	waitRegister(t, srv, "bs-4")
	waitFinished(t, bs)
	if n := len(bs.Requests); n != 2 {
		t.Errorf("%d Bootstrap-Requests, want 2 (one abandoned, one finished)", n)
	}
}

// BootstrapTimeout bounds the whole bootstrap, not the silence between
// requests: a bootstrap server that keeps writing and never sends Finish
// is given up on, and the client asks again.
func TestBootstrapTimeoutBoundsABusyServer(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	attempts := make(chan struct{}, 10)
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		attempts <- struct{}{}
		if len(attempts) > 1 {
			provisionServer(t, srv.URI(), nil, nil)(ctx, r)
			return
		}
		// The first time: a write every 20 ms, each well within the
		// timeout, and never a Finish.
		for ctx.Err() == nil {
			if _, err := lwm2mtest.Do(ctx, r.Conn, codes.DELETE, "/1", -1, nil); err != nil {
				return // the client gave up and closed the exchange
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	runBootstrapClient(t, lwm2m.Config{Endpoint: "bs-busy", Bootstrap: bs.URI(), BootstrapTimeout: 300 * time.Millisecond})
	waitRegister(t, srv, "bs-busy")
	waitFinished(t, bs)
	if n := len(bs.Requests); n != 2 {
		t.Errorf("%d Bootstrap-Requests, want 2 (one abandoned while busy, one finished)", n)
	}
}

// Once bootstrapped, a restart registers at once with the stored
// configuration: a device bootstraps once in its life.
func TestBootstrapPersistsAcrossRestart(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		provisionServer(t, srv.URI(), nil, nil)(ctx, r)
	})
	path := filepath.Join(t.TempDir(), "provisioning.json")
	cfg := lwm2m.Config{Endpoint: "bs-5", Bootstrap: bs.URI(), ProvisioningStore: lwm2m.NewFileProvisioningStore(path)}
	stop := runBootstrapClient(t, cfg)
	waitRegister(t, srv, "bs-5")
	waitFinished(t, bs)
	stop()
	if n := len(bs.Requests); n != 1 {
		t.Fatalf("%d Bootstrap-Requests, want 1", n)
	}
	<-bs.Requests
	cfg.ProvisioningStore = lwm2m.NewFileProvisioningStore(path)
	runBootstrapClient(t, cfg)
	waitRegister(t, srv, "bs-5")
	if n := len(bs.Requests); n != 0 {
		t.Errorf("the restarted client bootstrapped again (%d requests)", n)
	}
}

// A refused Bootstrap-Request is retried with backoff.
func TestBootstrapRequestRefusedRetries(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		provisionServer(t, srv.URI(), nil, nil)(ctx, r)
	})
	bs.Refuse(codes.BadRequest)
	runBootstrapClient(t, lwm2m.Config{Endpoint: "bs-6", Bootstrap: bs.URI()})
	for range 2 {
		select {
		case <-bs.Refused:
		case <-time.After(10 * time.Second):
			t.Fatal("the client did not ask again after a refusal")
		}
	}
	bs.Refuse(0)
	waitRegister(t, srv, "bs-6")
	waitFinished(t, bs)
}

// memObject is an application object with one string resource per
// instance that may be written, created and deleted (by the bootstrap
// server, or a server's Create and Delete).
type memObject struct {
	id   uint16
	mu   sync.Mutex
	vals map[uint16]string
}

func (o *memObject) ID() uint16 { return o.id }
func (o *memObject) Instances() []uint16 {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ids []uint16
	for i := range o.vals {
		ids = append(ids, i)
	}
	slices.Sort(ids)
	return ids
}
func (o *memObject) Resources(uint16) []lwm2m.Resource {
	return []lwm2m.Resource{{ID: 0, Type: model.TypeString, Ops: lwm2m.OpRW}}
}
func (o *memObject) Read(_ context.Context, p model.Path) ([]model.Record, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	v, ok := o.vals[p.Instance()]
	if !ok {
		return nil, lwm2m.ErrNotFound
	}
	return []model.Record{{Path: p, Value: model.String(v)}}, nil
}
func (o *memObject) Write(_ context.Context, p model.Path, recs []model.Record) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.vals[p.Instance()] = recs[0].Value.Str
	return nil
}
func (o *memObject) Create(_ context.Context, inst uint16, recs []model.Record) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.vals[inst] = ""
	for _, r := range recs {
		o.vals[inst] = r.Value.Str
	}
	return nil
}
func (o *memObject) Delete(_ context.Context, inst uint16) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.vals, inst)
	return nil
}
func (o *memObject) get(inst uint16) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	v, ok := o.vals[inst]
	return v, ok
}

// The bootstrap server may write, create and delete instances of the
// application objects in Config.BootstrapObjects, and of no other; what
// it writes reaches the object only at Bootstrap-Finish.
func TestBootstrapApplicationObjects(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	app := &memObject{id: 33, vals: map[uint16]string{0: "old", 2: "doomed"}}
	other := &memObject{id: 34, vals: map[uint16]string{0: "kept"}}
	results := make(chan error, 1)
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		results <- func() error {
			str := func(p model.Path, s string) []model.Record { return []model.Record{{Path: p, Value: model.String(s)}} }
			bsWrite(ctx, t, r.Conn, content.TextPlain, model.NewPath(33, 0, 0), str(model.NewPath(33, 0, 0), "new"))
			bsWrite(ctx, t, r.Conn, content.TLV, model.NewPath(33, 1), str(model.NewPath(33, 1, 0), "created"))
			if resp, err := lwm2mtest.Do(ctx, r.Conn, codes.DELETE, "/33/2", -1, nil); err != nil || resp.Code != codes.Deleted {
				return fmt.Errorf("Bootstrap-Delete /33/2: %v %v", resp.Code, err)
			}
			if resp, _ := lwm2mtest.Do(ctx, r.Conn, codes.PUT, "/34/0/0", 0, []byte("x")); resp.Code != codes.BadRequest {
				return fmt.Errorf("Bootstrap-Write of /34, not in BootstrapObjects: %v, want 4.00", resp.Code)
			}
			if resp, _ := lwm2mtest.Do(ctx, r.Conn, codes.DELETE, "/34/0", -1, nil); resp.Code != codes.BadRequest {
				return fmt.Errorf("Bootstrap-Delete of /34/0: %v, want 4.00", resp.Code)
			}
			if v, _ := app.get(0); v != "old" {
				return fmt.Errorf("/33/0/0 = %q before Finish, want the old value", v)
			}
			if _, ok := app.get(2); !ok {
				return errors.New("/33/2 deleted before Finish")
			}
			bsWrite(ctx, t, r.Conn, content.TLV, model.NewPath(0, 1), securityRecords(1, srv.URI(), 1, nil, nil))
			bsWrite(ctx, t, r.Conn, content.TLV, model.NewPath(1, 0), serverRecords(0, 1, 60))
			if resp, err := r.Finish(ctx); err != nil || resp.Code != codes.Changed {
				return fmt.Errorf("Finish: %v %v %s", resp.Code, err, resp.Payload)
			}
			return nil
		}()
	})
	cfg := lwm2m.Config{Endpoint: "bs-app", Bootstrap: bs.URI(), BootstrapObjects: []uint16{33}, Logger: lwm2mtest.Logger(t),
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond}
	c, err := lwm2m.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []lwm2m.Object{app, other} {
		if err := c.AddObject(o); err != nil {
			t.Fatal(err)
		}
	}
	lwm2mtest.RunClient(t, srv, c, "bs-app")
	if err := <-results; err != nil {
		t.Fatal(err)
	}
	for inst, want := range map[uint16]string{0: "new", 1: "created"} {
		if v, _ := app.get(inst); v != want {
			t.Errorf("/33/%d/0 = %q after Finish, want %q", inst, v, want)
		}
	}
	if _, ok := app.get(2); ok {
		t.Error("/33/2 survived its Bootstrap-Delete")
	}
	if v, _ := other.get(0); v != "kept" {
		t.Errorf("/34/0/0 = %q, want it untouched", v)
	}
}

// A bootstrap server's garbage gets an error code, never a panic, and what
// one bootstrap may stage is bounded.
func TestBootstrapHostile(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	results := make(chan error, 1)
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		results <- func() error {
			for _, tc := range []struct {
				code    codes.Code
				path    string
				format  int
				payload []byte
				want    codes.Code
			}{
				{codes.PUT, "/0/1", int(content.TLV), []byte{0xff, 0xff, 0xff}, codes.BadRequest},
				{codes.PUT, "/1/0", int(content.SenMLJSON), []byte(`[{"n":"1","vs":"not a number"}]`), codes.BadRequest},
				{codes.PUT, "/1/0", int(content.SenMLJSON), []byte(`[{"bn":"/3/0/","n":"1","vs":"x"}]`), codes.BadRequest},
				{codes.PUT, "/1/0", 9999, []byte("x"), codes.UnsupportedMediaType},
				{codes.PUT, "/", int(content.TLV), nil, codes.BadRequest},
				{codes.PUT, "/1/0", -1, []byte("x"), codes.BadRequest},
				{codes.DELETE, "/1/0/1", -1, nil, codes.BadRequest},
				{codes.GET, "/1/0/1/2/3", -1, nil, codes.NotFound},
				{codes.POST, "/1/0/8", -1, nil, codes.MethodNotAllowed},
				{codes.FETCH, "/1", -1, nil, codes.MethodNotAllowed},
			} {
				resp, err := lwm2mtest.Do(ctx, r.Conn, tc.code, tc.path, tc.format, tc.payload)
				if err != nil || resp.Code != tc.want {
					return fmt.Errorf("%v %s: %v %v, want %v", tc.code, tc.path, resp.Code, err, tc.want)
				}
			}
			// Writes of many instances hit the bound with 4.13.
			var last codes.Code
			for i := 0; i < 3000 && last != codes.RequestEntityTooLarge; i++ {
				p := model.NewPath(1, uint16(i))
				body, _ := content.Encode(content.TLV, p, serverRecords(uint16(i), int64(i%60000+1), 60))
				resp, err := lwm2mtest.Do(ctx, r.Conn, codes.PUT, p.String(), int(content.TLV), body)
				if err != nil {
					return err
				}
				last = resp.Code
			}
			if last != codes.RequestEntityTooLarge {
				return fmt.Errorf("3000 instance writes ended %v, want 4.13 at the bound", last)
			}
			// A bootstrap that starts over is fine again.
			if resp, _ := lwm2mtest.Do(ctx, r.Conn, codes.DELETE, "/", -1, nil); resp.Code != codes.Deleted {
				return fmt.Errorf("Delete /: %v", resp.Code)
			}
			bsWrite(ctx, t, r.Conn, content.TLV, model.NewPath(0, 1), securityRecords(1, srv.URI(), 1, nil, nil))
			return nil
		}()
	})
	runBootstrapClient(t, lwm2m.Config{Endpoint: "bs-hostile", Bootstrap: bs.URI()})
	if err := <-results; err != nil {
		t.Fatal(err)
	}
}

// provisionAt is provisionServer with the server's Security instance at
// /0/sec, clear of the bootstrap account wherever the client keeps it.
func provisionAt(t *testing.T, uri string, sec uint16) func(context.Context, lwm2mtest.BootstrapRequest) {
	return func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		if resp, err := lwm2mtest.Do(ctx, r.Conn, codes.DELETE, "/", -1, nil); err != nil || resp.Code != codes.Deleted {
			t.Errorf("Bootstrap-Delete /: %v %v", resp.Code, err)
		}
		bsWrite(ctx, t, r.Conn, content.TLV, model.NewPath(0, sec), securityRecords(sec, uri, 101, nil, nil))
		bsWrite(ctx, t, r.Conn, content.TLV, model.NewPath(1, 0), serverRecords(0, 101, 60))
		if resp, err := r.Finish(ctx); err != nil || resp.Code != codes.Changed {
			t.Errorf("Bootstrap-Finish: %v %v (%s)", resp.Code, err, resp.Payload)
		}
	}
}

// accountsWith is a configuration with the bootstrap server's account at
// /0/0 and one LwM2M server at uri (/0/1, /1/0), whose Bootstrap on
// Registration Failure is onFailure.
func accountsWith(bsURI, uri string, onFailure bool) *lwm2m.Provisioning {
	recs := []model.Record{
		{Path: model.NewPath(0, 0, 0), Value: model.String(bsURI)},
		{Path: model.NewPath(0, 0, 1), Value: model.Bool(true)},
		{Path: model.NewPath(0, 0, 2), Value: model.Int(int64(lwm2m.SecurityNoSec))},
	}
	recs = append(recs, securityRecords(1, uri, 7, nil, nil)...)
	recs = append(recs, serverRecords(0, 7, 60)...)
	recs = append(recs, model.Record{Path: model.NewPath(1, 0, 16), Value: model.Bool(onFailure)})
	return &lwm2m.Provisioning{Records: recs}
}

// When registration fails with every server, the client falls back to
// bootstrap (Bootstrap on Registration Failure, /1/x/16, LwM2M 1.1 Core
// §6.2.1) and registers with what the bootstrap server gives.
func TestBootstrapFallback(t *testing.T) {
	down := lwm2mtest.Start(t, "")
	down.SetRefuse(codes.Forbidden)
	up := lwm2mtest.Start(t, "")
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		provisionAt(t, up.URI(), 1)(ctx, r)
	})
	runBootstrapClient(t, lwm2m.Config{Endpoint: "bs-fall", Provisioning: accountsWith(bs.URI(), down.URI(), true)})
	waitRegister(t, up, "bs-fall")
	waitFinished(t, bs)
	if _, attempts := down.Registers(); len(attempts) < 5 {
		t.Errorf("fell back after %d refused Registers, want 5 (Communication Retry Count)", len(attempts))
	}
}

// With /1/x/16 false, failures do not send the client to bootstrap.
func TestBootstrapFallbackDisabled(t *testing.T) {
	down := lwm2mtest.Start(t, "")
	down.SetRefuse(codes.Forbidden)
	bs := lwm2mtest.StartBootstrap(t, nil)
	runBootstrapClient(t, lwm2m.Config{Endpoint: "bs-nofall", Provisioning: accountsWith(bs.URI(), down.URI(), false)})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	down.WaitFor(ctx, "12 refused Registers", func() bool { _, a := down.Registers(); return len(a) >= 12 })
	if n := len(bs.Requests); n != 0 {
		t.Errorf("%d Bootstrap-Requests with Bootstrap on Registration Failure false", n)
	}
}

// A server that executes Bootstrap-Request Trigger (/1/x/9) sends the
// client to bootstrap again; it then registers with the new server.
func TestBootstrapTrigger(t *testing.T) {
	first := lwm2mtest.Start(t, "")
	second := lwm2mtest.Start(t, "")
	var bs *lwm2mtest.BootstrapServer
	var n atomic.Int32
	bs = lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		uri := first.URI()
		if n.Add(1) > 1 {
			uri = second.URI()
		}
		provisionAt(t, uri, 1)(ctx, r)
	})
	store := lwm2m.NewFileProvisioningStore(filepath.Join(t.TempDir(), "provisioning.json"))
	runBootstrapClient(t, lwm2m.Config{Endpoint: "bs-trig", Bootstrap: bs.URI(), ProvisioningStore: store})
	reg := waitRegister(t, first, "bs-trig")
	waitFinished(t, bs)
	resp, err := lwm2mtest.Do(context.Background(), reg.Conn, codes.POST, "/1/0/9", -1, nil)
	if err != nil || resp.Code != codes.Changed {
		t.Fatalf("Execute /1/0/9: %v %v, want 2.04", resp.Code, err)
	}
	waitRegister(t, second, "bs-trig")
	waitFinished(t, bs)
	p, err := store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := valueAt(p, model.NewPath(0, 1, 0)); v.Str != second.URI() {
		t.Errorf("stored server %q after the second bootstrap, want %s", v.Str, second.URI())
	}
}

// A damaged stored configuration is never taken for "not provisioned" in
// silence: with a bootstrap server known, the client says so and
// bootstraps again; without one, Run fails with ErrCorruptProvisioning.
func TestBootstrapDamagedStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "provisioning.json")
	if err := os.WriteFile(path, []byte(`{"format":"lwm2m-provisioning","version":1,"sha256":"00","records":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bare, err := lwm2m.New(lwm2m.Config{Endpoint: "bs-damaged", ProvisioningStore: lwm2m.NewFileProvisioningStore(path), Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := bare.Run(context.Background()); !errors.Is(err, lwm2m.ErrCorruptProvisioning) {
		t.Errorf("Run with a damaged store and no bootstrap server: %v, want ErrCorruptProvisioning", err)
	}

	srv := lwm2mtest.Start(t, "")
	bs := lwm2mtest.StartBootstrap(t, func(ctx context.Context, r lwm2mtest.BootstrapRequest) {
		provisionAt(t, srv.URI(), 1)(ctx, r)
	})
	var logs syncbuf.Buffer
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "bs-damaged", Bootstrap: bs.URI(),
		ProvisioningStore: lwm2m.NewFileProvisioningStore(path), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	lwm2mtest.RunClient(t, srv, c, "bs-damaged")
	waitFinished(t, bs)
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "damaged") {
		t.Errorf("no error about the damaged file in the log:\n%s", logs.String())
	}
	if _, err := lwm2m.NewFileProvisioningStore(path).Load(context.Background()); err != nil {
		t.Errorf("the new configuration replaced the damaged one: %v", err)
	}
}

// Without a bootstrap account, Bootstrap-Request Trigger has nothing to do.
func TestBootstrapTriggerWithoutBootstrapServer(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "bs-none", Server: srv.URI(), Logger: lwm2mtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	run := lwm2mtest.RunClient(t, srv, c, "bs-none")
	resp, err := lwm2mtest.Do(context.Background(), run.Conn(), codes.POST, "/1/0/9", -1, nil)
	if err != nil || resp.Code != codes.MethodNotAllowed {
		t.Errorf("Execute /1/0/9 without a bootstrap server: %v %v, want 4.05", resp.Code, err)
	}
}
