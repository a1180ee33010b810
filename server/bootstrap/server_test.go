package bootstrap

import (
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

const testKeyHex = "000102030405060708090a0b0c0d0e0f"

const testConfig = `{"endpoints": {
  "dev-1": {
    "servers": [{"uri": "coaps://127.0.0.1:5684", "short_server_id": 101, "lifetime": 300,
                 "security": {"mode": "psk", "identity": "dev-1-id", "key": "` + testKeyHex + `"}}],
    "acl": [{"object": 5, "instance": 0, "rights": {"101": "RWE", "0": 1}, "owner": 101}]
  },
  "plain": {
    "delete": ["/"],
    "servers": [{"uri": "coap://127.0.0.1:5683", "short_server_id": 1, "binding": "UQ",
                 "notification_storing": false, "security": {"mode": "nosec"}}]
  }
}}`

func mustConfig(t *testing.T, s string) *Config {
	t.Helper()
	c, err := ParseConfig(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantRecords is what dev-1 must receive, written out by hand.
func wantRecords(t *testing.T) map[string][]model.Record {
	key, _ := hex.DecodeString(testKeyHex)
	sec, srv, acl := model.NewPath(0, 1), model.NewPath(1, 0), model.NewPath(2, 0)
	return map[string][]model.Record{
		"/0/1": {
			{Path: sec.Append(0), Value: model.String("coaps://127.0.0.1:5684")},
			{Path: sec.Append(1), Value: model.Bool(false)},
			{Path: sec.Append(2), Value: model.Int(0)},
			{Path: sec.Append(3), Value: model.Opaque([]byte("dev-1-id"))},
			{Path: sec.Append(4), Value: model.Opaque([]byte{})},
			{Path: sec.Append(5), Value: model.Opaque(key)},
			{Path: sec.Append(10), Value: model.Int(101)},
		},
		"/1/0": {
			{Path: srv.Append(0), Value: model.Int(101)},
			{Path: srv.Append(1), Value: model.Int(300)},
			{Path: srv.Append(6), Value: model.Bool(true)},
			{Path: srv.Append(7), Value: model.String("U")},
		},
		"/2/0": {
			{Path: acl.Append(0), Value: model.Int(5)},
			{Path: acl.Append(1), Value: model.Int(0)},
			{Path: acl.Append(2).Append(0), Value: model.Int(1)},
			{Path: acl.Append(2).Append(101), Value: model.Int(7)},
			{Path: acl.Append(3), Value: model.Int(101)},
		},
	}
}

func sortRecs(rs []model.Record) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Path.String() < rs[j].Path.String() })
}

// checkWrites decodes each PUT in format f and compares it with want.
func checkWrites(t *testing.T, got []seen, f content.Format, want map[string][]model.Record) {
	t.Helper()
	for _, s := range got {
		if s.Method.String() != "PUT" {
			continue
		}
		if s.Format != int(f) {
			t.Errorf("%v: content format %d, want %d", s, s.Format, f)
			continue
		}
		p, _ := model.ParsePath(s.Path)
		recs, err := content.Decode(f, p, s.Payload, model.CoreTypes)
		if err != nil {
			t.Errorf("%v: %v", s, err)
			continue
		}
		w := want[s.Path]
		sortRecs(recs)
		sortRecs(w)
		if len(recs) != len(w) {
			t.Errorf("%v: got %v, want %v", s, recs, w)
			continue
		}
		for i := range w {
			if !recs[i].Equal(w[i]) {
				t.Errorf("%v: record %d is %v, want %v", s, i, recs[i], w[i])
			}
		}
	}
}

func sequence(got []seen) string {
	var out []string
	for _, s := range got {
		out = append(out, s.String())
	}
	return strings.Join(out, ", ")
}

func TestBootstrapSequenceAndPayloadsPerFormat(t *testing.T) {
	for _, tc := range []struct {
		pct    string
		format content.Format
	}{
		{"", content.TLV},
		{"11542", content.TLV},
		{"110", content.SenMLJSON},
		{"112", content.SenMLCBOR},
		{"11544", content.TLV}, // LwM2M CBOR: we cannot encode it
	} {
		t.Run("pct="+tc.pct, func(t *testing.T) {
			s := start(t, &Server{Addr: "127.0.0.1:0", Config: mustConfig(t, testConfig)})
			d := newDevice(t, nil).dial(s.LocalAddr().String())
			q := []string{"ep=dev-1"}
			if tc.pct != "" {
				q = append(q, "pct="+tc.pct)
			}
			if code, _ := d.request(q...); code != codes.Changed {
				t.Fatalf("Bootstrap-Request: %v, want 2.04", code)
			}
			d.waitFinish()
			got := d.requests()
			want := "DELETE /0, DELETE /1, DELETE /2, PUT /0/1, PUT /1/0, PUT /2/0, POST /bs"
			if seq := sequence(got); seq != want {
				t.Fatalf("sequence:\n got %s\nwant %s", seq, want)
			}
			checkWrites(t, got, tc.format, wantRecords(t))
			if p := got[len(got)-1].Payload; len(p) != 0 {
				t.Errorf("Bootstrap-Finish carries %q", p)
			}
			var as []Attempt
			waitfor.Until(t, 5*time.Second, func() error {
				if as = s.Attempts("dev-1"); len(as) != 1 {
					return fmt.Errorf("%d attempts recorded", len(as))
				}
				return nil
			})
			a := as[0]
			if a.Outcome != Finished || a.Transport != "coap" || a.Format != tc.format.String() || a.Error != "" {
				t.Errorf("attempt %+v", a)
			}
			if a.Peer != d.cc.LocalAddr().String() {
				t.Errorf("peer %s, want %s", a.Peer, d.cc.LocalAddr())
			}
			if len(a.Steps) != 7 || a.Steps[3].Code != "2.04" || a.Steps[0].Code != "2.02" || a.Steps[6].Op != "finish" {
				t.Errorf("steps %+v", a.Steps)
			}
			if !strings.Contains(a.Steps[3].What, `identity="dev-1-id"`) {
				t.Errorf("write of /0/1 recorded as %q", a.Steps[3].What)
			}
		})
	}
}

func TestBootstrapDeleteRootNoSecAccount(t *testing.T) {
	s := start(t, &Server{Addr: "127.0.0.1:0", Config: mustConfig(t, testConfig)})
	d := newDevice(t, nil).dial(s.LocalAddr().String())
	if code, _ := d.request("ep=plain", "pct=110"); code != codes.Changed {
		t.Fatalf("Bootstrap-Request: %v", code)
	}
	d.waitFinish()
	got := d.requests()
	if seq := sequence(got); seq != "DELETE /, PUT /0/1, PUT /1/0, POST /bs" {
		t.Fatalf("sequence %s", seq)
	}
	sec, srv := model.NewPath(0, 1), model.NewPath(1, 0)
	checkWrites(t, got, content.SenMLJSON, map[string][]model.Record{
		"/0/1": {
			{Path: sec.Append(0), Value: model.String("coap://127.0.0.1:5683")},
			{Path: sec.Append(1), Value: model.Bool(false)},
			{Path: sec.Append(2), Value: model.Int(3)},
			{Path: sec.Append(3), Value: model.Opaque([]byte{})},
			{Path: sec.Append(4), Value: model.Opaque([]byte{})},
			{Path: sec.Append(5), Value: model.Opaque([]byte{})},
			{Path: sec.Append(10), Value: model.Int(1)},
		},
		"/1/0": {
			{Path: srv.Append(0), Value: model.Int(1)},
			{Path: srv.Append(1), Value: model.Int(86400)},
			{Path: srv.Append(6), Value: model.Bool(false)},
			{Path: srv.Append(7), Value: model.String("UQ")},
		},
	})
}

func TestUnknownEndpointRefusedAndRecorded(t *testing.T) {
	s := start(t, &Server{Addr: "127.0.0.1:0", Config: mustConfig(t, testConfig)})
	d := newDevice(t, nil).dial(s.LocalAddr().String())
	// LwM2M 1.1 Core Table 8.2.2-1: 4.00 for an unknown endpoint name.
	if code, _ := d.request("ep=stranger"); code != codes.BadRequest {
		t.Fatalf("Bootstrap-Request of an unknown endpoint: %v, want 4.00", code)
	}
	as := s.Attempts("stranger")
	if len(as) != 1 || as[0].Outcome != Refused || as[0].Code != "4.00" || !strings.Contains(as[0].Error, "unknown endpoint") {
		t.Fatalf("history %+v", as)
	}
	if got := d.requests(); len(got) != 0 {
		t.Errorf("the server sent %v to an unknown endpoint", got)
	}
	if code, _ := d.request(); code != codes.BadRequest {
		t.Errorf("Bootstrap-Request without ep: %v, want 4.00", code)
	}
	if code, _ := d.request("ep=dev-1", "pct=tlv"); code != codes.BadRequest {
		t.Errorf("Bootstrap-Request with pct=tlv: %v, want 4.00", code)
	}
	for _, ep := range []string{"evil\nname", "\xff"} {
		if code, _ := d.request("ep=" + ep); code != codes.BadRequest {
			t.Errorf("Bootstrap-Request of %q: %v, want 4.00", ep, code)
		}
		if len(s.Attempts(ep)) != 0 {
			t.Errorf("%q recorded", ep)
		}
	}
	if code, _ := d.request("ep=dev-1", "ep=other"); code != codes.BadRequest {
		t.Errorf("two ep: %v, want 4.00", code)
	}
}

func TestDefaultEntryServesEveryEndpoint(t *testing.T) {
	cfg := mustConfig(t, `{"endpoints": {"*": {"servers": [{"uri": "coap://127.0.0.1:5683", "short_server_id": 7, "security": {"mode": "nosec"}}]}}}`)
	s := start(t, &Server{Addr: "127.0.0.1:0", Config: cfg})
	d := newDevice(t, nil).dial(s.LocalAddr().String())
	if code, _ := d.request("ep=anyone"); code != codes.Changed {
		t.Fatalf("Bootstrap-Request: %v", code)
	}
	d.waitFinish()
	if seq := sequence(d.requests()); seq != "DELETE /0, DELETE /1, PUT /0/1, PUT /1/0, POST /bs" {
		t.Fatalf("sequence %s", seq)
	}
}

func TestFinishRefusedIsFailure(t *testing.T) {
	s := start(t, &Server{Addr: "127.0.0.1:0", Config: mustConfig(t, testConfig)})
	d := newDevice(t, func(r seen) (codes.Code, string) {
		switch {
		case r.Path == "/bs":
			return codes.NotAcceptable, "no Security instance for ssid 101"
		case r.Method == codes.DELETE:
			return codes.Deleted, ""
		}
		return codes.Changed, ""
	}).dial(s.LocalAddr().String())
	d.request("ep=dev-1")
	d.waitFinish()
	var as []Attempt
	waitfor.Until(t, 5*time.Second, func() error {
		if as = s.Attempts("dev-1"); len(as) != 1 {
			return fmt.Errorf("%d attempts", len(as))
		}
		return nil
	})
	if as[0].Outcome != Failed || !strings.Contains(as[0].Error, "4.06") || !strings.Contains(as[0].Error, "no Security instance for ssid 101") {
		t.Fatalf("attempt %+v", as[0])
	}
}

func TestWriteRefusedStopsTheBootstrap(t *testing.T) {
	s := start(t, &Server{Addr: "127.0.0.1:0", Config: mustConfig(t, testConfig)})
	d := newDevice(t, func(r seen) (codes.Code, string) {
		switch {
		case r.Path == "/1/0":
			return codes.BadRequest, ""
		case r.Method == codes.DELETE:
			return codes.Deleted, ""
		}
		return codes.Changed, ""
	}).dial(s.LocalAddr().String())
	d.request("ep=dev-1")
	var as []Attempt
	waitfor.Until(t, 5*time.Second, func() error {
		if as = s.Attempts("dev-1"); len(as) != 1 {
			return fmt.Errorf("%d attempts", len(as))
		}
		return nil
	})
	if as[0].Outcome != Failed || len(as[0].Steps) != 5 || as[0].Steps[4].Code != "4.00" {
		t.Fatalf("attempt %+v", as[0])
	}
	if seq := sequence(d.requests()); strings.Contains(seq, "/bs") || strings.Contains(seq, "/2/0") {
		t.Errorf("the server went on after a refused write: %s", seq)
	}
}

func TestSilentDeviceIsAbandoned(t *testing.T) {
	s := start(t, &Server{Addr: "127.0.0.1:0", Config: mustConfig(t, testConfig),
		RequestTimeout: 300 * time.Millisecond, Timeout: 5 * time.Second})
	var mu sync.Mutex
	silent := true
	d := newDevice(t, func(r seen) (codes.Code, string) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method == codes.PUT && silent {
			return 0, "" // stops answering mid-bootstrap
		}
		if r.Method == codes.DELETE {
			return codes.Deleted, ""
		}
		return codes.Changed, ""
	}).dial(s.LocalAddr().String())
	d.request("ep=dev-1")
	var as []Attempt
	waitfor.Until(t, 10*time.Second, func() error {
		if as = s.Attempts("dev-1"); len(as) != 1 {
			return fmt.Errorf("%d attempts", len(as))
		}
		return nil
	})
	if as[0].Outcome != Abandoned || !strings.Contains(as[0].Error, "did not answer") {
		t.Fatalf("attempt %+v", as[0])
	}
	// The endpoint is free again.
	mu.Lock()
	silent = false
	mu.Unlock()
	if code, _ := d.request("ep=dev-1"); code != codes.Changed {
		t.Fatalf("Bootstrap-Request after the abandoned one: %v", code)
	}
	d.waitFinish()
}

func TestOneBootstrapPerEndpointAndAtMostN(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hold := func(r seen) (codes.Code, string) {
		if r.Method == codes.DELETE {
			<-release
			return codes.Deleted, ""
		}
		return codes.Changed, ""
	}
	cfg := mustConfig(t, `{"endpoints": {"*": {"servers": [{"uri": "coap://127.0.0.1:5683", "short_server_id": 7, "security": {"mode": "nosec"}}]}}}`)
	s := start(t, &Server{Addr: "127.0.0.1:0", Config: cfg, MaxConcurrent: 2, Timeout: time.Minute})
	addr := s.LocalAddr().String()
	if code, _ := newDevice(t, hold).dial(addr).request("ep=a"); code != codes.Changed {
		t.Fatalf("first request: %v", code)
	}
	// Another peer under the same name waits its turn.
	code, age := newDevice(t, hold).dial(addr).request("ep=a")
	if code != codes.ServiceUnavailable || age != 60 {
		t.Fatalf("second bootstrap of one endpoint: %v Max-Age %d, want 5.03 Max-Age 60", code, age)
	}
	if code, _ := newDevice(t, hold).dial(addr).request("ep=b"); code != codes.Changed {
		t.Fatalf("request of b: %v", code)
	}
	if code, _ := newDevice(t, hold).dial(addr).request("ep=c"); code != codes.ServiceUnavailable {
		t.Fatalf("a third bootstrap beyond MaxConcurrent 2: %v, want 5.03", code)
	}
	as := s.Attempts("c")
	if len(as) != 1 || as[0].Outcome != Refused || as[0].Code != "5.03" {
		t.Fatalf("history of c: %+v", as)
	}
}

// With discover, Security instances go around the bootstrap account the
// device keeps, wherever it keeps it.
func TestDiscoverFindsTheBootstrapAccount(t *testing.T) {
	cfg := mustConfig(t, `{"endpoints": {"*": {"discover": true, "servers": [
		{"uri": "coap://a", "short_server_id": 1, "security": {"mode": "nosec"}},
		{"uri": "coap://b", "short_server_id": 2, "security": {"mode": "nosec"}}]}}}`)
	s := start(t, &Server{Addr: "127.0.0.1:0", Config: cfg})
	for _, tc := range []struct {
		ep       string
		discover func() (codes.Code, string)
		want     string
	}{
		{"bs-at-1", func() (codes.Code, string) { return codes.Content, `lwm2m="1.1",</0/1>;uri="coap://bs"` },
			"DELETE /0, DELETE /1, GET /0, PUT /0/0, PUT /0/2, PUT /1/0, PUT /1/1, POST /bs"},
		{"lwm2m-1.0", func() (codes.Code, string) { return codes.MethodNotAllowed, "" },
			"DELETE /0, DELETE /1, GET /0, PUT /0/1, PUT /0/2, PUT /1/0, PUT /1/1, POST /bs"},
	} {
		d := newDevice(t, func(r seen) (codes.Code, string) {
			switch r.Method {
			case codes.GET:
				return tc.discover()
			case codes.DELETE:
				return codes.Deleted, ""
			}
			return codes.Changed, ""
		}).dial(s.LocalAddr().String())
		d.request("ep=" + tc.ep)
		d.waitFinish()
		if seq := sequence(d.requests()); seq != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.ep, seq, tc.want)
		}
		var as []Attempt
		waitfor.Until(t, 5*time.Second, func() error {
			if as = s.Attempts(tc.ep); len(as) != 1 {
				return fmt.Errorf("%d attempts", len(as))
			}
			return nil
		})
		if as[0].Outcome != Finished || as[0].Steps[2].Op != "discover" {
			t.Errorf("%s: attempt %+v", tc.ep, as[0])
		}
		if tc.ep == "bs-at-1" && as[0].Steps[2].What != "kept /0/1" {
			t.Errorf("discover recorded as %q", as[0].Steps[2].What)
		}
	}
}

// A flood of requests from a device that never answers holds at most
// MaxConcurrent places; the rest are refused at once, and recorded.
func TestFloodIsBounded(t *testing.T) {
	cfg := mustConfig(t, `{"endpoints": {"*": {"servers": [{"uri": "coap://127.0.0.1:5683", "short_server_id": 7, "security": {"mode": "nosec"}}]}}}`)
	s := start(t, &Server{Addr: "127.0.0.1:0", Config: cfg, MaxConcurrent: 4, Timeout: time.Minute, RequestTimeout: time.Minute})
	d := newDevice(t, func(seen) (codes.Code, string) { return 0, "" }).dial(s.LocalAddr().String())
	admitted, refused := 0, 0
	for i := range 50 {
		switch code, _ := d.request(fmt.Sprintf("ep=flood-%d", i)); code {
		case codes.Changed:
			admitted++
		case codes.ServiceUnavailable:
			refused++
		default:
			t.Fatalf("request %d: %v", i, code)
		}
	}
	if admitted != 4 || refused != 46 {
		t.Fatalf("%d admitted, %d refused; want 4 and 46", admitted, refused)
	}
	s.mu.Lock()
	running := len(s.running)
	s.mu.Unlock()
	if running != 4 {
		t.Fatalf("%d bootstraps running", running)
	}
	if as := s.Attempts("flood-49"); len(as) != 1 || as[0].Outcome != Refused {
		t.Fatalf("flood-49: %+v", as)
	}
}
