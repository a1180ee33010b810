package campaign_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/servertest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/objects"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/campaign"
)

// fleet is in-process devices and what their handlers saw.
type fleet struct {
	mu     sync.Mutex
	seq    int            // orders starts and ends across devices
	starts map[string]int // first StreamOpen's seq per endpoint
	ends   map[string]int // the outcome's seq per endpoint
	opens  map[string]int // StreamOpen calls per endpoint
	upgr   map[string]int // PerformUpgrade calls per endpoint: updates applied
	active int            // updates between StreamOpen and their outcome
	most   int            // the most active at once
	// fail chooses the devices whose package fails verification.
	fail func(ep string) bool
	// hold, when set, makes PerformUpgrade of an endpoint wait for the
	// channel it returns (nil: no wait): the device stays Updating.
	hold func(ep string) <-chan struct{}
	// holdFinish, when set, makes StreamFinish wait the same way: the
	// device stays Downloading with the whole package.
	holdFinish func(ep string) <-chan struct{}
	finishing  map[string]int // StreamFinish calls per endpoint
	// initial, when set, is a device's /5 state at its start, as if
	// kept from before a reboot.
	initial map[string]*fwupdate.Persisted

	devs map[string]*device
}

func newFleet() *fleet {
	return &fleet{starts: map[string]int{}, ends: map[string]int{}, opens: map[string]int{}, upgr: map[string]int{}, finishing: map[string]int{},
		fail: func(string) bool { return false }, devs: map[string]*device{}}
}

// device is one in-process LwM2M client with a Firmware Update object.
type device struct {
	*servertest.Device
	f    *fleet
	ep   string
	obj  *fwupdate.Object
	open bool // within an update, as the fleet counts it
}

func (d *device) StreamOpen(context.Context, string, []byte) error {
	f := d.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	if _, ok := f.starts[d.ep]; !ok {
		f.starts[d.ep] = f.seq
	}
	f.opens[d.ep]++
	if !d.open {
		d.open = true
		f.active++
		f.most = max(f.most, f.active)
	}
	return nil
}

func (d *device) StreamWrite([]byte) error { return nil }

func (d *device) end() {
	f := d.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	f.ends[d.ep] = f.seq
	if d.open {
		d.open = false
		f.active--
	}
}

func (d *device) StreamFinish() error {
	d.f.mu.Lock()
	d.f.finishing[d.ep]++
	hold := d.f.holdFinish
	d.f.mu.Unlock()
	if hold != nil {
		if ch := hold(d.ep); ch != nil {
			<-ch
		}
	}
	if d.f.fail(d.ep) {
		d.end()
		return fwupdate.ErrIntegrity // Update Result 5
	}
	return nil
}

func (d *device) Reset() error { return nil }

func (d *device) PerformUpgrade(context.Context) error {
	d.f.mu.Lock()
	d.f.upgr[d.ep]++
	hold := d.f.hold
	d.f.mu.Unlock()
	d.end()
	go func() {
		if hold != nil {
			if ch := hold(d.ep); ch != nil {
				<-ch
			}
		}
		d.obj.SetResult(fwupdate.ResultSuccess) // applied at once, no reboot
	}()
	return nil
}

// start runs a device with endpoint ep against s and waits until it is
// registered.
func (f *fleet) start(t testing.TB, s *server.Server, ep, firmware string) *device {
	t.Helper()
	d, err := f.run(t, s, ep, firmware)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// startAll starts devices dev-000 ... a few at a time.
func (f *fleet) startAll(t testing.TB, s *server.Server, n int, firmware string) {
	t.Helper()
	sem := make(chan struct{}, 8)
	errs := make(chan error, n)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			_, err := f.run(t, s, fmt.Sprintf("dev-%03d", i), firmware)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fleet) run(t testing.TB, s *server.Server, ep, firmware string) (*device, error) {
	d := &device{f: f, ep: ep}
	f.mu.Lock()
	initial := f.initial[ep]
	f.mu.Unlock()
	var err error
	d.Device, err = servertest.RunDevice(t, s, servertest.DeviceConfig{
		Endpoint:  ep,
		Info:      objects.DeviceInfo{Manufacturer: "Acme", FirmwareVersion: firmware},
		Firmware:  d,
		Initial:   initial,
		Installed: func(o *fwupdate.Object) { d.obj = o },
	})
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.devs[ep] = d
	f.mu.Unlock()
	return d, nil
}

// stopAll stops every device at once.
func (f *fleet) stopAll() {
	f.mu.Lock()
	devs := make([]*device, 0, len(f.devs))
	for _, d := range f.devs {
		devs = append(devs, d)
	}
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func() { defer wg.Done(); d.Stop() }()
	}
	wg.Wait()
}

func (f *fleet) finishes(ep string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.finishing[ep]
}

func (f *fleet) upgrades(ep string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.upgr[ep]
}

// testServer is a server with a campaign engine, both running until
// stop or the end of the test.
type testServer struct {
	srv    *server.Server
	eng    *campaign.Engine
	store  server.Store
	cancel context.CancelFunc
	done   chan struct{}
}

// startServer starts a server on addr (":0" ports for free ones) with
// its store and an engine keeping packages in dir.
func startServer(t testing.TB, addr, imageAddr string, store server.Store, dir string, cfg campaign.Config) *testServer {
	t.Helper()
	s := servertest.Start(t, &server.Server{Addr: addr, ImageAddr: imageAddr, Store: store, RequestTimeout: 10 * time.Second})
	cfg.Server, cfg.Dir = s, dir
	if cfg.Logger == nil {
		cfg.Logger = lwm2mtest.Logger(t)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	e, err := campaign.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{srv: s, eng: e, store: store, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(ts.done); _ = e.Run(ctx) }()
	t.Cleanup(ts.stop)
	return ts
}

// stop stops the engine (its updates return), then the server.
func (ts *testServer) stop() {
	ts.cancel()
	<-ts.done
	ts.srv.Close()
}

func (ts *testServer) imgAddr() string { return ts.srv.ImageLocalAddr().String() }

// addPackage stores a small raw package.
func addPackage(t testing.TB, e *campaign.Engine) campaign.Package {
	t.Helper()
	p, err := e.AddPackage("fw", bytes.NewReader(bytes.Repeat([]byte("firmware"), 64)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ptr[T any](v T) *T { return &v }

// waitState waits until the campaign is in one of states.
func waitState(t testing.TB, e *campaign.Engine, id string, timeout time.Duration, states ...string) campaign.Campaign {
	t.Helper()
	var c campaign.Campaign
	waitfor.Until(t, timeout, func() error {
		var err error
		if c, err = e.Campaign(id); err != nil {
			return err
		}
		for _, s := range states {
			if c.State == s && c.Counts.Running == 0 {
				return nil
			}
		}
		return fmt.Errorf("campaign %s, want %s: %+v", c.State, strings.Join(states, " or "), c.Counts)
	})
	return c
}

// freeUDP returns a free loopback UDP address.
func freeUDP(t testing.TB) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}
