package lwm2m_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// account is one LwM2M server account of a test Provisioning.
type account struct {
	ssid uint16
	uri  string
}

// provision makes the Security and Server instances of accounts (instance
// i for the i-th), plus the extra records (Access Control, say).
func provision(accounts []account, extra ...model.Record) *lwm2m.Provisioning {
	var p lwm2m.Provisioning
	rec := func(obj, inst, res uint16, v model.Value) {
		p.Records = append(p.Records, model.Record{Path: model.NewPath(obj, inst, res), Value: v})
	}
	for i, a := range accounts {
		inst := uint16(i)
		rec(0, inst, 0, model.String(a.uri))
		rec(0, inst, 1, model.Bool(false))
		rec(0, inst, 2, model.Int(3))
		rec(0, inst, 10, model.Int(int64(a.ssid)))
		rec(1, inst, 0, model.Int(int64(a.ssid)))
		rec(1, inst, 1, model.Int(300))
		rec(1, inst, 7, model.String("U"))
	}
	p.Records = append(p.Records, extra...)
	return &p
}

// aclInstance is an Access Control instance /2/inst for /obj/target with
// owner and ACL entries (resource instance: bits).
func aclInstance(inst, obj, target, owner uint16, acl map[uint16]int64) []model.Record {
	recs := []model.Record{
		{Path: model.NewPath(2, inst, 0), Value: model.Int(int64(obj))},
		{Path: model.NewPath(2, inst, 1), Value: model.Int(int64(target))},
		{Path: model.NewPath(2, inst, 3), Value: model.Int(int64(owner))},
	}
	for ri, bits := range acl {
		recs = append(recs, model.Record{Path: model.NewPath(2, inst, 2, ri), Value: model.Int(bits)})
	}
	return recs
}

// fakeFirmware is a /5 made of a Static, counting the writes and executes
// that reach it: the Access Control layer must stop refused ones before.
type fakeFirmware struct {
	*lwm2m.Static
	mu       sync.Mutex
	writes   []uint16 // Short Server ID of each write that reached the object
	executes []uint16
}

func newFakeFirmware() *fakeFirmware {
	f := &fakeFirmware{Static: lwm2m.NewStatic(5, "",
		lwm2m.Resource{ID: 0, Type: model.TypeOpaque, Ops: lwm2m.OpWrite},
		lwm2m.Resource{ID: 1, Type: model.TypeString, Ops: lwm2m.OpRW},
		lwm2m.Resource{ID: 2, Type: model.TypeNone, Ops: lwm2m.OpExecute},
		lwm2m.Resource{ID: 3, Type: model.TypeInteger, Ops: lwm2m.OpRead},
	)}
	f.Set(0, 1, model.String(""))
	f.Set(0, 3, model.Int(0))
	f.OnWrite(func(ctx context.Context, _ model.Path, _ []model.Record) error {
		id, _ := lwm2m.ShortServerID(ctx)
		f.mu.Lock()
		f.writes = append(f.writes, id)
		f.mu.Unlock()
		return nil
	})
	f.OnExecute(2, func(ctx context.Context, _ uint16, _ string) error {
		id, _ := lwm2m.ShortServerID(ctx)
		f.mu.Lock()
		f.executes = append(f.executes, id)
		f.mu.Unlock()
		return nil
	})
	return f
}

func (f *fakeFirmware) seen() (writes, executes []uint16) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint16(nil), f.writes...), append([]uint16(nil), f.executes...)
}

// runMulti runs c until the test ends.
func runMulti(t *testing.T, c *lwm2m.Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// startMulti runs a client with the provisioned servers, and fw as /5
// when not nil, until the test ends.
func startMulti(t *testing.T, ep string, p *lwm2m.Provisioning, fw *fakeFirmware) (*lwm2m.Client, *fakeFirmware) {
	t.Helper()
	c, err := lwm2m.New(multiConfig(t, ep, p))
	if err != nil {
		t.Fatal(err)
	}
	if fw != nil {
		if err := c.AddObject(fw); err != nil {
			t.Fatal(err)
		}
	}
	runMulti(t, c)
	return c, fw
}

func multiConfig(t *testing.T, ep string, p *lwm2m.Provisioning) lwm2m.Config {
	return lwm2m.Config{Endpoint: ep, Provisioning: p, Logger: lwm2mtest.Logger(t), Tx: fastTx,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond}
}

// deadAddr is a loopback UDP port where no server listens.
func deadAddr(t *testing.T) string {
	s := lwm2mtest.Start(t, "")
	addr := s.Addr()
	s.Close()
	return addr
}

// A server that is down keeps retrying in its own session while the
// other registers and serves; once it comes up, it gets its registration
// too (LwM2M 1.1 Core §6.2: one registration per server).
func TestTwoServersOneDown(t *testing.T) {
	a := lwm2mtest.Start(t, "")
	down := deadAddr(t)
	p := provision([]account{{1, a.URI()}, {2, "coap://" + down}},
		aclInstance(0, 5, 0, 1, map[uint16]int64{2: lwm2m.RightRead})...)
	c, _ := startMulti(t, "two", p, newFakeFirmware())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	connA := a.WaitConn(ctx, "two")
	waitfor.Until(t, 5*time.Second, func() error {
		if !c.Registered() {
			return errors.New("Registered() false while registered with server 1")
		}
		return nil
	})
	rsp, err := lwm2mtest.Do(ctx, connA, codes.GET, "/5/0/3", -1, nil)
	if err != nil || rsp.Code != codes.Content {
		t.Fatalf("server 1 reads /5/0/3 while server 2 is down: %v %v", rsp.Code, err)
	}
	st := c.Servers()
	if len(st) != 2 || !st[0].Registered() || st[1].Registered() || st[0].ShortServerID != 1 || st[1].ShortServerID != 2 {
		t.Fatalf("Servers() = %+v, want 1 registered and 2 not", st)
	}

	// Server 2 comes up where it was configured: its session registers on
	// its own retry, server 1's registration is untouched.
	b := lwm2mtest.Start(t, down)
	connB := b.WaitConn(ctx, "two")
	rsp, err = lwm2mtest.Do(ctx, connB, codes.GET, "/5/0/3", -1, nil)
	if err != nil || rsp.Code != codes.Content {
		t.Fatalf("server 2 reads /5/0/3 with R: %v %v", rsp.Code, err)
	}
	if n, _ := a.Registers(); n != 1 {
		t.Errorf("server 1 saw %d Registers, want 1", n)
	}
	waitfor.Until(t, 5*time.Second, func() error {
		for _, s := range c.Servers() {
			if !s.Registered() {
				return fmt.Errorf("server %d not registered", s.ShortServerID)
			}
		}
		return nil
	})
}

// Each server's observations are its own: a change notifies every
// server that observes the resource, each on its own connection, and
// the data model sees who asked (ShortServerID).
func TestObservationsPerServer(t *testing.T) {
	a, b := lwm2mtest.Start(t, ""), lwm2mtest.Start(t, "")
	full := map[uint16]int64{0: lwm2m.RightRead | lwm2m.RightWrite | lwm2m.RightExecute}
	p := provision([]account{{1, a.URI()}, {2, b.URI()}}, aclInstance(0, 5, 0, 1, full)...)
	c, fw := startMulti(t, "obs2", p, newFakeFirmware())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	connA, connB := a.WaitConn(ctx, "obs2"), b.WaitConn(ctx, "obs2")
	obsA, stopA, err := lwm2mtest.Observe(ctx, connA, "/5/0/3")
	if err != nil {
		t.Fatal(err)
	}
	defer stopA()
	obsB, stopB, err := lwm2mtest.Observe(ctx, connB, "/5/0/1")
	if err != nil {
		t.Fatal(err)
	}
	defer stopB()
	for name, ch := range map[string]<-chan lwm2mtest.Response{"1": obsA, "2": obsB} {
		if r := next(ctx, t, ch); r.Code != codes.Content {
			t.Fatalf("server %s: observe answered %v", name, r.Code)
		}
	}
	if n := c.Observations(); n != 2 {
		t.Errorf("Observations() = %d, want 2", n)
	}
	fw.Set(0, 3, model.Int(1))
	if r := next(ctx, t, obsA); string(r.Payload) != "1" {
		t.Errorf("server 1's notification of /5/0/3 = %q, want 1", r.Payload)
	}
	// Server 2 writes the URI it observes: it is notified of its own
	// change, and the object saw Short Server ID 2.
	if rsp, err := lwm2mtest.Do(ctx, connB, codes.PUT, "/5/0/1", 0, []byte("coap://x")); err != nil || rsp.Code != codes.Changed {
		t.Fatalf("server 2 writes /5/0/1: %v %v", rsp.Code, err)
	}
	if r := next(ctx, t, obsB); string(r.Payload) != "coap://x" {
		t.Errorf("server 2's notification of /5/0/1 = %q", r.Payload)
	}
	if w, _ := fw.seen(); len(w) != 1 || w[0] != 2 {
		t.Errorf("writes seen by /5 from servers %v, want [2]", w)
	}
	// A second change of /5/0/3 reaches server 1 again; server 2, which
	// does not observe it, has nothing more than its own notification.
	fw.Set(0, 3, model.Int(2))
	if r := next(ctx, t, obsA); string(r.Payload) != "2" {
		t.Errorf("server 1's second notification = %q, want 2", r.Payload)
	}
	if err := c.WaitNotified(ctx, model.NewPath(5, 0, 3)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-obsB:
		t.Errorf("server 2 notified of /5/0/3, which it does not observe: %q", r.Payload)
	default:
	}
}

func next(ctx context.Context, t *testing.T, ch <-chan lwm2mtest.Response) lwm2mtest.Response {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-ctx.Done():
		t.Fatal("no notification")
	}
	return lwm2mtest.Response{}
}

// op is one LwM2M operation on /5 as a test sends it.
type op struct {
	name   string
	method codes.Code
	path   string
	format int
	body   []byte
	opts   []message.Option
	ok     codes.Code // the answer with the right
}

var firmwareOps = []op{
	{"read resource", codes.GET, "/5/0/3", -1, nil, nil, codes.Content},
	{"read instance", codes.GET, "/5/0", -1, nil, nil, codes.Content},
	{"write /5/0/1", codes.PUT, "/5/0/1", 0, []byte("coap://fw"), nil, codes.Changed},
	{"write /5/0/0", codes.PUT, "/5/0/0", 42, []byte{1, 2, 3}, nil, codes.Changed},
	{"partial write /5/0", codes.POST, "/5/0", 11542, tlvString(1, "coap://fw2"), nil, codes.Changed},
	{"execute /5/0/2", codes.POST, "/5/0/2", -1, nil, nil, codes.Changed},
	{"observe", codes.GET, "/5/0/3", -1, nil, []message.Option{coapopt.Uint(message.Observe, 0)}, codes.Content},
	{"discover instance", codes.GET, "/5/0", -1, nil, []message.Option{coapopt.Uint(message.Accept, 40)}, codes.Content},
	{"discover resource", codes.GET, "/5/0/3", -1, nil, []message.Option{coapopt.Uint(message.Accept, 40)}, codes.Content},
	{"write-attributes", codes.PUT, "/5/0/3", -1, nil, []message.Option{{ID: message.URIQuery, Value: []byte("pmin=1")}}, codes.Changed},
}

// tlvString is the TLV of one single resource holding a short string.
func tlvString(id byte, s string) []byte {
	return append([]byte{0xC8, id, byte(len(s))}, s...)
}

func do(ctx context.Context, t *testing.T, conn *udpclient.Conn, o op) lwm2mtest.Response {
	t.Helper()
	rsp, err := lwm2mtest.Do(ctx, conn, o.method, o.path, o.format, o.body, o.opts...)
	if err != nil {
		t.Fatalf("%s: %v", o.name, err)
	}
	return rsp
}

// twoServerClient runs a client with servers 1 and 2 and the given Access
// Control instances, with a fake /5, and returns the connections of the
// two servers to it.
func twoServerClient(t *testing.T, ep string, acl ...model.Record) (*lwm2m.Client, *fakeFirmware, *udpclient.Conn, *udpclient.Conn) {
	t.Helper()
	a, b := lwm2mtest.Start(t, ""), lwm2mtest.Start(t, "")
	c, fw := startMulti(t, ep, provision([]account{{1, a.URI()}, {2, b.URI()}}, acl...), newFakeFirmware())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c, fw, a.WaitConn(ctx, ep), b.WaitConn(ctx, ep)
}

// With two servers, the Access Control instance of /5/0 decides: server 1
// owns it (every right), server 2 has no ACL and there is no default, so
// every operation of server 2 on /5/0 gets 4.01 and never reaches the
// object, while the same operation of server 1 succeeds (LwM2M 1.1 Core
// §7.3.2).
func TestACLRefusesFirmwareOperations(t *testing.T) {
	c, fw, connA, connB := twoServerClient(t, "acl", aclInstance(0, 5, 0, 1, nil)...)
	_ = c
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, o := range firmwareOps {
		if rsp := do(ctx, t, connB, o); rsp.Code != codes.Unauthorized {
			t.Errorf("server 2 without rights, %s %s: %v, want 4.01", o.name, o.path, rsp.Code)
		}
		if rsp := do(ctx, t, connA, o); rsp.Code != o.ok {
			t.Errorf("server 1 (owner), %s %s: %v, want %v", o.name, o.path, rsp.Code, o.ok)
		}
	}
	w, x := fw.seen()
	for _, id := range append(w, x...) {
		if id != 1 {
			t.Errorf("/5 saw a request from server %d, which has no right", id)
		}
	}
	if len(w) != 3 || len(x) != 1 {
		t.Errorf("/5 saw %d writes and %d executes from server 1, want 3 and 1", len(w), len(x))
	}
	// A read of the whole object leaves out what server 2 may not read
	// (§7.3.2.4), and Discover of an object needs no right.
	rsp := do(ctx, t, connB, op{name: "read object", method: codes.GET, path: "/5", format: -1})
	if rsp.Code != codes.Content || len(rsp.Payload) != 0 {
		t.Errorf("server 2 reads /5: %v %x, want 2.05 and no instance", rsp.Code, rsp.Payload)
	}
	rsp = do(ctx, t, connB, op{name: "discover object", method: codes.GET, path: "/5", format: -1, opts: []message.Option{coapopt.Uint(message.Accept, 40)}})
	if rsp.Code != codes.Content {
		t.Errorf("server 2 discovers /5: %v, want 2.05", rsp.Code)
	}
}

// The ACL of the requesting server wins over the default ACL (resource
// instance 0), which applies to the servers without one, and the owner's
// own ACL limits it too (LwM2M 1.1 Core §7.3.2.1).
func TestACLDefaultAndOwnEntries(t *testing.T) {
	// Owner 1 limited to R by its own entry; server 2 gets W|E from its
	// entry; the default R would apply to any other server.
	acl := aclInstance(0, 5, 0, 1, map[uint16]int64{0: lwm2m.RightRead, 1: lwm2m.RightRead, 2: lwm2m.RightWrite | lwm2m.RightExecute})
	_, _, connA, connB := twoServerClient(t, "acldef", acl...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	read, write, exec := firmwareOps[0], firmwareOps[2], firmwareOps[5]
	for _, tc := range []struct {
		server string
		conn   *udpclient.Conn
		o      op
		want   codes.Code
	}{
		{"1", connA, read, codes.Content},
		{"1", connA, write, codes.Unauthorized},
		{"1", connA, exec, codes.Unauthorized},
		{"2", connB, read, codes.Unauthorized},
		{"2", connB, write, codes.Changed},
		{"2", connB, exec, codes.Changed},
	} {
		if rsp := do(ctx, t, tc.conn, tc.o); rsp.Code != tc.want {
			t.Errorf("server %s %s: %v, want %v", tc.server, tc.o.name, rsp.Code, tc.want)
		}
	}
	// Default ACL alone: server 2 has no entry of its own.
	_, _, _, connB2 := twoServerClient(t, "acldef2", aclInstance(0, 5, 0, 1, map[uint16]int64{0: lwm2m.RightRead})...)
	if rsp := do(ctx, t, connB2, read); rsp.Code != codes.Content {
		t.Errorf("server 2 reads with the default ACL R: %v", rsp.Code)
	}
	if rsp := do(ctx, t, connB2, write); rsp.Code != codes.Unauthorized {
		t.Errorf("server 2 writes with the default ACL R: %v, want 4.01", rsp.Code)
	}
}

// Security is never served to LwM2M servers, Access Control instances are
// read by all and written by their owner only, and servers never create
// Access Control instances (LwM2M 1.1 Core §E.1, §7.3.1.2.2).
func TestACLOnSecurityAndAccessControl(t *testing.T) {
	_, _, connA, connB := twoServerClient(t, "aclsec", aclInstance(0, 5, 0, 1, nil)...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, conn := range []*udpclient.Conn{connA, connB} {
		if rsp := do(ctx, t, conn, op{name: "read /0", method: codes.GET, path: "/0/0", format: -1}); rsp.Code != codes.Unauthorized {
			t.Errorf("read /0/0: %v, want 4.01", rsp.Code)
		}
		if rsp := do(ctx, t, conn, op{name: "read /2/0", method: codes.GET, path: "/2/0", format: -1}); rsp.Code != codes.Content {
			t.Errorf("read /2/0: %v, want 2.05", rsp.Code)
		}
		if rsp := do(ctx, t, conn, op{name: "create /2", method: codes.POST, path: "/2", format: 11542, body: []byte{}}); rsp.Code != codes.Unauthorized {
			t.Errorf("create /2: %v, want 4.01", rsp.Code)
		}
	}
	grant := op{name: "grant W to 2", method: codes.PUT, path: "/2/0/2/2", format: 0, body: []byte("2")}
	if rsp := do(ctx, t, connB, grant); rsp.Code != codes.Unauthorized {
		t.Errorf("server 2 (not owner) writes the ACL: %v, want 4.01", rsp.Code)
	}
	if rsp := do(ctx, t, connA, grant); rsp.Code != codes.Changed {
		t.Fatalf("server 1 (owner) writes the ACL: %v, want 2.04", rsp.Code)
	}
	// The grant takes effect at once.
	if rsp := do(ctx, t, connB, firmwareOps[2]); rsp.Code != codes.Changed {
		t.Errorf("server 2 writes /5/0/1 after the owner granted W: %v", rsp.Code)
	}
	if rsp := do(ctx, t, connB, firmwareOps[0]); rsp.Code != codes.Unauthorized {
		t.Errorf("server 2 reads /5/0/3 with W only: %v, want 4.01", rsp.Code)
	}
}

// creatable is a minimal object whose instances servers create and delete.
type creatable struct {
	mu    sync.Mutex
	insts map[uint16]string
}

func (o *creatable) ID() uint16 { return 3303 }
func (o *creatable) Instances() []uint16 {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ids []uint16
	for i := range uint16(16) {
		if _, ok := o.insts[i]; ok {
			ids = append(ids, i)
		}
	}
	return ids
}
func (o *creatable) Resources(uint16) []lwm2m.Resource {
	return []lwm2m.Resource{{ID: 5750, Type: model.TypeString, Ops: lwm2m.OpRW}}
}
func (o *creatable) Read(_ context.Context, p model.Path) ([]model.Record, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	v, ok := o.insts[p.Instance()]
	if !ok || p.Resource() != 5750 {
		return nil, lwm2m.ErrNotFound
	}
	return []model.Record{{Path: p, Value: model.String(v)}}, nil
}
func (o *creatable) Create(_ context.Context, inst uint16, _ []model.Record) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if inst >= 16 {
		return lwm2m.ErrBadRequest
	}
	o.insts[inst] = "new"
	return nil
}
func (o *creatable) Delete(_ context.Context, inst uint16) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.insts, inst)
	return nil
}

// Create needs C in the object's Access Control instance (Object Instance
// ID 65535); the instance created gets an Access Control instance owned
// by its creator, which a Delete by the owner removes (LwM2M 1.1 Core
// §7.3.1.2, §5.4.6).
func TestACLCreateDelete(t *testing.T) {
	acl := aclInstance(1, 3303, 65535, 65535, map[uint16]int64{1: lwm2m.RightCreate})
	c, _, connA, connB := twoServerClient(t, "aclcreate", acl...)
	if err := c.AddObject(&creatable{insts: map[uint16]string{}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	create := op{name: "create", method: codes.POST, path: "/3303", format: 11542, body: []byte{}}
	if rsp := do(ctx, t, connB, create); rsp.Code != codes.Unauthorized {
		t.Errorf("server 2 without C creates: %v, want 4.01", rsp.Code)
	}
	if rsp := do(ctx, t, connA, create); rsp.Code != codes.Created {
		t.Fatalf("server 1 with C creates: %v, want 2.01", rsp.Code)
	}
	if owner, ok := aclOwnerOf(c.Provisioning(), 3303, 0); !ok || owner != 1 {
		t.Fatalf("Access Control of /3303/0: owner %d (found %v), want 1", owner, ok)
	}
	read := op{name: "read", method: codes.GET, path: "/3303/0/5750", format: -1}
	if rsp := do(ctx, t, connA, read); rsp.Code != codes.Content {
		t.Errorf("owner reads its instance: %v", rsp.Code)
	}
	if rsp := do(ctx, t, connB, read); rsp.Code != codes.Unauthorized {
		t.Errorf("server 2 reads server 1's instance: %v, want 4.01", rsp.Code)
	}
	del := op{name: "delete", method: codes.DELETE, path: "/3303/0", format: -1}
	if rsp := do(ctx, t, connB, del); rsp.Code != codes.Unauthorized {
		t.Errorf("server 2 deletes server 1's instance: %v, want 4.01", rsp.Code)
	}
	if rsp := do(ctx, t, connA, del); rsp.Code != codes.Deleted {
		t.Fatalf("owner deletes: %v, want 2.02", rsp.Code)
	}
	if _, ok := aclOwnerOf(c.Provisioning(), 3303, 0); ok {
		t.Error("Access Control instance of the deleted /3303/0 is still there")
	}
	// Delete and Execute of an object are not operations (§7.3.2.4).
	if rsp := do(ctx, t, connA, op{name: "delete object", method: codes.DELETE, path: "/3303", format: -1}); rsp.Code != codes.MethodNotAllowed {
		t.Errorf("delete /3303: %v, want 4.05", rsp.Code)
	}
}

// aclOwnerOf finds the owner in the Access Control instance of /obj/inst.
func aclOwnerOf(p lwm2m.Provisioning, obj, inst uint16) (uint16, bool) {
	vals := map[uint16]map[uint16]int64{}
	for _, r := range p.Records {
		if r.Path.Object() != 2 || r.Path.Len() != 3 {
			continue
		}
		if vals[r.Path.Instance()] == nil {
			vals[r.Path.Instance()] = map[uint16]int64{}
		}
		vals[r.Path.Instance()][r.Path.Resource()] = r.Value.Int
	}
	for _, v := range vals {
		if v[0] == int64(obj) && v[1] == int64(inst) {
			return uint16(v[3]), true
		}
	}
	return 0, false
}

// With one server, no Access Control is needed: Create works without an
// Access Control instance and makes none (LwM2M 1.1 Core §7).
func TestSingleServerNeedsNoACL(t *testing.T) {
	srv := lwm2mtest.Start(t, "")
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "single", Server: srv.URI(), Logger: lwm2mtest.Logger(t), Tx: fastTx})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddObject(&creatable{insts: map[uint16]string{}}); err != nil {
		t.Fatal(err)
	}
	r := lwm2mtest.RunClient(t, srv, c, "single")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if rsp := do(ctx, t, r.Conn(), op{name: "create", method: codes.POST, path: "/3303", format: 11542, body: []byte{}}); rsp.Code != codes.Created {
		t.Fatalf("create: %v", rsp.Code)
	}
	if _, ok := aclOwnerOf(c.Provisioning(), 3303, 0); ok {
		t.Error("an Access Control instance was made with a single server")
	}
	if strings.Contains(r.Reg.Links, "</2>") {
		t.Errorf("registration lists an empty /2: %s", r.Reg.Links)
	}
}

// Config.Server is the account /0/0 + /1/0, and Provisioning returns it;
// Server and Provisioning together are refused.
func TestProvisioningFromServer(t *testing.T) {
	c, err := lwm2m.New(lwm2m.Config{Endpoint: "p", Server: "coap://127.0.0.1:5683", ShortServerID: 7, Lifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]model.Value{}
	for _, r := range c.Provisioning().Records {
		got[r.Path.String()] = r.Value
	}
	for path, want := range map[string]model.Value{
		"/0/0/0": model.String("coap://127.0.0.1:5683"), "/0/0/1": model.Bool(false), "/0/0/10": model.Int(7),
		"/1/0/0": model.Int(7), "/1/0/1": model.Int(60), "/1/0/7": model.String("U"),
	} {
		if !got[path].Equal(want) {
			t.Errorf("%s = %v, want %v", path, got[path], want)
		}
	}
	p := c.Provisioning()
	if _, err := lwm2m.New(lwm2m.Config{Endpoint: "p", Server: "coap://127.0.0.1:5683", Provisioning: &p}); !errors.Is(err, lwm2m.ErrConfig) {
		t.Errorf("Server and Provisioning together: %v, want ErrConfig", err)
	}
	bad := lwm2m.Provisioning{Records: []model.Record{{Path: model.NewPath(3, 0, 0), Value: model.String("x")}}}
	if _, err := lwm2m.New(lwm2m.Config{Endpoint: "p", Provisioning: &bad}); !errors.Is(err, lwm2m.ErrConfig) {
		t.Errorf("a record of /3 in a Provisioning: %v, want ErrConfig", err)
	}
}

// A new provisioning applied while Run runs (as bootstrap does) moves the
// client from one server to the other: it de-registers from the old one
// and registers with the new.
func TestApplyProvisioningRestartsSessions(t *testing.T) {
	a, b := lwm2mtest.Start(t, ""), lwm2mtest.Start(t, "")
	c, _ := startMulti(t, "apply", provision([]account{{1, a.URI()}}), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.WaitConn(ctx, "apply")
	waitfor.Until(t, 5*time.Second, func() error {
		if !c.Registered() {
			return errors.New("not registered")
		}
		return nil
	})
	if err := lwm2m.ApplyProvisioning(ctx, c, *provision([]account{{2, b.URI()}})); err != nil {
		t.Fatal(err)
	}
	b.WaitConn(ctx, "apply")
	a.WaitFor(ctx, "de-register from the old server", func() bool { return a.Conn("apply") == nil })
	if st := c.Servers(); len(st) != 1 || st[0].ShortServerID != 2 {
		t.Errorf("Servers() = %+v, want server 2 alone", st)
	}
}

// Registration Update Trigger and Disable act on the session of the
// Server instance executed: server 2 triggers its own Update and disables
// its own registration while server 1 stays registered; it may not
// execute server 1's instance (no Access Control instance for /1/0).
func TestServerInstanceActsOnItsSession(t *testing.T) {
	a, b := lwm2mtest.Start(t, ""), lwm2mtest.Start(t, "")
	c, _ := startMulti(t, "own1", provision([]account{{1, a.URI()}, {2, b.URI()}}), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.WaitConn(ctx, "own1")
	connB := b.WaitConn(ctx, "own1")
	waitfor.Until(t, 5*time.Second, func() error {
		if st := c.Servers(); !st[0].Registered() || !st[1].Registered() {
			return fmt.Errorf("not registered with both: %+v", st)
		}
		return nil
	})
	exec := func(path string) codes.Code {
		return do(ctx, t, connB, op{name: "execute " + path, method: codes.POST, path: path, format: -1}).Code
	}
	if code := exec("/1/0/8"); code != codes.Unauthorized {
		t.Errorf("server 2 executes server 1's Update Trigger: %v, want 4.01", code)
	}
	if code := exec("/1/1/8"); code != codes.Changed {
		t.Fatalf("server 2 executes its Update Trigger: %v", code)
	}
	for {
		r, err := b.Next(ctx)
		if err != nil {
			t.Fatal("server 2 got no Update after its trigger")
		}
		if r.Update {
			break
		}
	}
	if code := exec("/1/1/4"); code != codes.Changed {
		t.Fatalf("server 2 executes its Disable: %v", code)
	}
	b.WaitFor(ctx, "server 2's de-registration", func() bool { return b.Conn("own1") == nil })
	waitfor.Until(t, 5*time.Second, func() error {
		if st := c.Servers(); !st[0].Registered() || st[1].Registered() || st[1].Phase != "disabled" {
			return fmt.Errorf("after server 2's Disable: %+v, want 1 registered and 2 disabled", st)
		}
		return nil
	})
	if a.Conn("own1") == nil {
		t.Error("server 1 lost its registration when server 2 disabled its own")
	}
}

// A server that loses R on what it observes is not notified until it
// gets R back (LwM2M 1.1 Core §7.3.2.5).
func TestNotifyNeedsReadRight(t *testing.T) {
	c, fw, connA, connB := twoServerClient(t, "aclnotify", aclInstance(0, 5, 0, 1, map[uint16]int64{2: lwm2m.RightRead})...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obsB, stop, err := lwm2mtest.Observe(ctx, connB, "/5/0/3")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if r := next(ctx, t, obsB); r.Code != codes.Content {
		t.Fatalf("server 2 observes with R: %v", r.Code)
	}
	setACL := func(bits string) {
		t.Helper()
		if rsp := do(ctx, t, connA, op{name: "ACL", method: codes.PUT, path: "/2/0/2/2", format: 0, body: []byte(bits)}); rsp.Code != codes.Changed {
			t.Fatalf("owner sets server 2's ACL to %s: %v", bits, rsp.Code)
		}
	}
	setACL("0")
	fw.Set(0, 3, model.Int(5))
	if err := c.WaitNotified(ctx, model.NewPath(5, 0, 3)); err != nil {
		t.Fatal(err)
	}
	setACL("1")
	fw.Set(0, 3, model.Int(6))
	if r := next(ctx, t, obsB); string(r.Payload) != "6" {
		t.Errorf("server 2's next notification = %q, want 6 (5 changed while it had no R)", r.Payload)
	}
}

// When ctx ends, Run de-registers from every server, in parallel, and
// returns.
func TestRunDeregistersFromAll(t *testing.T) {
	a, b := lwm2mtest.Start(t, ""), lwm2mtest.Start(t, "")
	c, err := lwm2m.New(multiConfig(t, "bye", provision([]account{{1, a.URI()}, {2, b.URI()}})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	a.WaitConn(wctx, "bye")
	b.WaitConn(wctx, "bye")
	waitfor.Until(t, 5*time.Second, func() error {
		for _, s := range c.Servers() {
			if !s.Registered() {
				return fmt.Errorf("server %d not registered", s.ShortServerID)
			}
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-wctx.Done():
		t.Fatal("Run did not return")
	}
	if a.Conn("bye") != nil || b.Conn("bye") != nil {
		t.Error("a server still holds the registration after Run returned")
	}
	if c.Registered() {
		t.Error("Registered() after Run returned")
	}
}
