package server

import (
	"bytes"
	"context"
	"fmt"
	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	coapudp "github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// fakeDevice is a minimal LwM2M client built on go-coap: it registers,
// serves text resources, supports Observe, and implements just enough of
// Object 5 for push and pull updates.
type fakeDevice struct {
	t      *testing.T
	ep     string
	server string

	mu        sync.Mutex
	cc        *udpclient.Conn
	loc       string
	res       map[string]string
	observers map[string][]message.Token
	seq       uint32
	fw        bytes.Buffer
	blockSZX  blockwise.SZX // largest Block1 size accepted
	maxSize   int           // 4.13 above this, 0 = unlimited
	executed  chan struct{}
	ended     bool // the test is over: a registration cut short is no error
	failWith  int  // Update Result after reboot; 0 means success
	execs     int
	// onBlock, when set, runs with d.mu held before block num of a
	// push is answered.
	onBlock func(cc *udpclient.Conn, num int64)
	// query is added to every Register, e.g. "Q" for queue mode.
	query []string
	// sent is the value last sent to each observation (by token), which
	// is notified again only when the value differs, as the lwm2m client
	// does (RFC 7641 §4.5 lets it skip intermediate states).
	sent map[string]string
	// failLate, when set, makes a push fail as a device that checks the
	// package after the last block: State goes to Downloading without a
	// notification (the observation has not caught up), and the first
	// read or observation of /5/0/3 after the push renders Downloading,
	// after which the device fails: Idle and Integrity check failure.
	failLate  bool
	failArmed bool
}

func newFakeDevice(t *testing.T, serverAddr, ep string, query ...string) *fakeDevice {
	d := &fakeDevice{t: t, ep: ep, server: serverAddr, blockSZX: blockwise.SZX1024, query: query,
		executed: make(chan struct{}, 1),
		res: map[string]string{
			"/3/0/0": "Acme", "/3/0/1": "Model 1", "/3/0/3": "1.0",
			"/1/0/1": "60", "/5/0/3": "0", "/5/0/5": "0", "/5/0/1": "",
		},
		observers: map[string][]message.Token{},
		sent:      map[string]string{},
	}
	d.connect()
	t.Cleanup(func() {
		d.mu.Lock()
		d.ended = true
		d.mu.Unlock()
		d.close()
	})
	return d
}

func (d *fakeDevice) connect() {
	cc, err := coapudp.Dial(d.server,
		options.WithHandlerFunc(d.handle),
		options.WithBlockwise(false, blockwise.SZX1024, time.Minute),
	)
	if err != nil {
		d.t.Fatal(err)
	}
	d.mu.Lock()
	d.cc = cc
	d.mu.Unlock()
	d.register()
}

func (d *fakeDevice) close() {
	d.mu.Lock()
	cc := d.cc
	d.mu.Unlock()
	cc.Close()
}

func (d *fakeDevice) register() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opts := []message.Option{
		{ID: message.URIQuery, Value: []byte("ep=" + d.ep)},
		{ID: message.URIQuery, Value: []byte("lt=300")},
		{ID: message.URIQuery, Value: []byte("lwm2m=1.1")},
		{ID: message.URIQuery, Value: []byte("b=U")}}
	for _, q := range d.query {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte(q)})
	}
	resp, err := d.conn().Post(ctx, "/rd", message.AppLinkFormat,
		bytes.NewReader([]byte("</1/0>,</3/0>,</5/0>")), opts...)
	if err != nil {
		d.mu.Lock()
		ended := d.ended
		d.mu.Unlock()
		if !ended {
			d.t.Errorf("register: %v", err)
		}
		return
	}
	if resp.Code() != codes.Created {
		d.t.Errorf("register: %v", resp.Code())
		return
	}
	loc, _ := resp.Options().LocationPath()
	d.mu.Lock()
	d.loc = loc
	d.mu.Unlock()
}

func (d *fakeDevice) conn() *udpclient.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cc
}

func (d *fakeDevice) get(p string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.res[p]
}

// setLocked changes a resource and notifies its observers.
func (d *fakeDevice) setLocked(p, v string) {
	d.res[p] = v
	for _, tok := range d.observers[p] {
		if d.sent[string(tok)] == v {
			continue
		}
		d.sent[string(tok)] = v
		d.seq++
		m := d.cc.AcquireMessage(context.Background())
		m.SetCode(codes.Content)
		m.SetToken(tok)
		m.SetObserve(d.seq + 2)
		m.SetType(message.NonConfirmable)
		m.SetContentFormat(message.TextPlain)
		m.SetBody(bytes.NewReader([]byte(v)))
		cc := d.cc
		go func() {
			_ = cc.WriteMessage(m)
			cc.ReleaseMessage(m)
		}()
	}
}

func (d *fakeDevice) handle(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message) {
	p, _ := r.Options().Path()
	p = "/" + strings.TrimPrefix(p, "/")
	d.mu.Lock()
	defer d.mu.Unlock()
	switch r.Code() {
	case codes.GET:
		v, ok := d.res[p]
		if !ok {
			_ = w.SetResponse(codes.NotFound, message.TextPlain, nil)
			return
		}
		var opts []message.Option
		if obs, err := r.Observe(); err == nil {
			if obs == 0 {
				d.observers[p] = append(d.observers[p], r.Token())
				d.sent[string(r.Token())] = v
				opts = append(opts, message.Option{ID: message.Observe, Value: []byte{2}})
			} else {
				delete(d.observers, p)
			}
		}
		if p == "/5/0/3" && d.failArmed {
			// Rendered Downloading; the check fails right after.
			d.failArmed = false
			defer func() {
				d.setLocked("/5/0/3", "0")
				d.setLocked("/5/0/5", "5")
			}()
		}
		if acc, err := r.Accept(); err == nil && acc == message.AppLinkFormat {
			_ = w.SetResponse(codes.Content, message.AppLinkFormat, bytes.NewReader([]byte("<"+p+">")), opts...)
			return
		}
		_ = w.SetResponse(codes.Content, message.TextPlain, bytes.NewReader([]byte(v)), opts...)
	case codes.PUT, codes.POST:
		body, _ := r.ReadBody()
		switch p {
		case "/5/0/0":
			d.handlePackage(w, r, body)
		case "/5/0/1":
			if len(body) == 0 {
				d.setLocked("/5/0/1", "")
				d.setLocked("/5/0/3", "0")
				_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
				return
			}
			d.res["/5/0/1"] = string(body)
			d.setLocked("/5/0/5", "0")
			d.setLocked("/5/0/3", "1")
			go d.pull(string(body))
			_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
		case "/5/0/2":
			if d.res["/5/0/3"] != "2" {
				_ = w.SetResponse(codes.MethodNotAllowed, message.TextPlain, nil)
				return
			}
			d.execs++
			d.setLocked("/5/0/3", "3")
			_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
			go d.reboot()
		case "/3/0/4":
			d.execs++
			_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
		default:
			if _, ok := d.res[p]; !ok {
				_ = w.SetResponse(codes.NotFound, message.TextPlain, nil)
				return
			}
			d.setLocked(p, string(body))
			_ = w.SetResponse(codes.Changed, message.TextPlain, nil)
		}
	default:
		_ = w.SetResponse(codes.MethodNotAllowed, message.TextPlain, nil)
	}
}

func (d *fakeDevice) handlePackage(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message, body []byte) {
	v, err := r.Options().GetUint32(message.Block1)
	if err != nil {
		_ = w.SetResponse(codes.BadRequest, message.TextPlain, nil)
		return
	}
	szx, num, more, _ := blockwise.DecodeBlockOption(v)
	if d.maxSize > 0 {
		if s1, err := r.Options().GetUint32(message.Size1); err == nil && int(s1) > d.maxSize {
			_ = w.SetResponse(codes.RequestEntityTooLarge, message.TextPlain, nil,
				coapopt.Uint(message.Size1, uint32(d.maxSize)))
			return
		}
	}
	if num == 0 {
		d.fw.Reset()
		d.setLocked("/5/0/5", "0")
		if d.failLate {
			d.res["/5/0/3"] = "1" // not notified yet
		} else {
			d.setLocked("/5/0/3", "1")
		}
	}
	if d.onBlock != nil {
		d.onBlock(d.cc, num)
	}
	off := num * int64(szx.Size())
	if off != int64(d.fw.Len()) {
		_ = w.SetResponse(codes.RequestEntityIncomplete, message.TextPlain, nil)
		return
	}
	d.fw.Write(body)
	answer := szx
	if answer > d.blockSZX {
		answer = d.blockSZX
	}
	bv, _ := blockwise.EncodeBlockOption(answer, num*int64(szx.Size())/int64(answer.Size()), more)
	opt := coapopt.Uint(message.Block1, bv)
	if more {
		_ = w.SetResponse(codes.Continue, message.TextPlain, nil, opt)
		return
	}
	if d.failLate {
		d.failArmed = true
		_ = w.SetResponse(codes.Changed, message.TextPlain, nil, opt)
		return
	}
	d.setLocked("/5/0/3", "2")
	_ = w.SetResponse(codes.Changed, message.TextPlain, nil, opt)
}

// pull downloads uri with go-coap's own blockwise client, an independent
// Block2 implementation.
func (d *fakeDevice) pull(uri string) {
	var host, path string
	if _, err := fmt.Sscanf(uri, "coap://%s", &host); err != nil {
		d.fail(7)
		return
	}
	for i := range host {
		if host[i] == '/' {
			host, path = host[:i], host[i:]
			break
		}
	}
	cc, err := coapudp.Dial(host, options.WithBlockwise(true, blockwise.SZX512, time.Minute))
	if err != nil {
		d.fail(4)
		return
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cc.Get(ctx, path)
	if err != nil || resp.Code() != codes.Content {
		d.fail(7)
		return
	}
	b, _ := io.ReadAll(resp.Body())
	d.mu.Lock()
	d.fw.Reset()
	d.fw.Write(b)
	d.setLocked("/5/0/3", "2")
	d.mu.Unlock()
}

func (d *fakeDevice) fail(result int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.setLocked("/5/0/3", "0")
	d.setLocked("/5/0/5", strconv.Itoa(result))
}

// reboot imitates a re-exec: a new socket, a new registration, and the
// outcome in State and Update Result.
func (d *fakeDevice) reboot() {
	// Let the 2.04 to Execute leave before the socket closes, as a real
	// device answers before it re-executes.
	time.Sleep(50 * time.Millisecond)
	d.close()
	d.mu.Lock()
	if d.ended {
		d.mu.Unlock()
		return // the test is over: no new socket to leak
	}
	d.observers = map[string][]message.Token{}
	if d.failWith != 0 {
		d.res["/5/0/3"] = "2"
		d.res["/5/0/5"] = strconv.Itoa(d.failWith)
	} else {
		d.res["/5/0/3"] = "0"
		d.res["/5/0/5"] = "1"
	}
	d.mu.Unlock()
	d.connect()
	d.executed <- struct{}{}
}

func (d *fakeDevice) firmware() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.fw.Bytes()...)
}
