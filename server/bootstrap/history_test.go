package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	bolt "go.etcd.io/bbolt"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

func TestHistoryIsBounded(t *testing.T) {
	h := NewHistory()
	h.perEP, h.maxEPs = 3, 4
	t0 := time.Unix(1e9, 0)
	for i := range 5 {
		h.Add(Attempt{Endpoint: "dev", Started: t0.Add(time.Duration(i) * time.Second), Outcome: Finished, Error: fmt.Sprint(i)})
	}
	as := h.Endpoint("dev")
	if len(as) != 3 || as[0].Error != "2" || as[2].Error != "4" {
		t.Fatalf("attempts of dev: %+v", as)
	}
	// A flood under made-up names drops the endpoint seen longest ago,
	// never more than maxEPs.
	for i := range 10 {
		h.Add(Attempt{Endpoint: fmt.Sprint("x", i), Started: t0.Add(time.Duration(10+i) * time.Second), Outcome: Refused})
	}
	sums := h.Summaries()
	if len(sums) != 4 || sums[0].Latest.Endpoint != "x6" {
		t.Fatalf("summaries %+v", sums)
	}
	if len(h.Endpoint("dev")) != 0 {
		t.Fatal("dev kept beyond the bound")
	}
}

// A write of the history that fails leaves its endpoints to be written
// again, rather than forgotten until they bootstrap once more.
func TestHistoryFailedWriteKeepsDirty(t *testing.T) {
	st, err := server.OpenBoltStore(filepath.Join(t.TempDir(), "server.db"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := OpenHistory(st.DB())
	if err != nil {
		t.Fatal(err)
	}
	st.Close() // every write fails from now on
	h.Add(Attempt{Endpoint: "dev", Started: time.Unix(1e9, 0), Outcome: Finished})
	waitfor.Until(t, 10*time.Second, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.err == nil {
			return errors.New("no write has failed yet")
		}
		if !h.dirty["dev"] {
			return errors.New("the failed write forgot dev")
		}
		return nil
	})
	if err := h.Close(); err == nil {
		t.Error("Close reports no error with the database closed")
	}
}

func TestHistoryPersistsInBolt(t *testing.T) {
	name := filepath.Join(t.TempDir(), "server.db")
	st, err := server.OpenBoltStore(name)
	if err != nil {
		t.Fatal(err)
	}
	h, err := OpenHistory(st.DB())
	if err != nil {
		t.Fatal(err)
	}
	h.maxEPs = 2
	t0 := time.Unix(1e9, 0)
	h.Add(Attempt{Endpoint: "a", Started: t0, Outcome: Finished, Steps: []Step{{Op: "write", Path: "/0/1", Code: "2.04"}}})
	h.Add(Attempt{Endpoint: "b", Started: t0.Add(time.Second), Outcome: Refused})
	h.Add(Attempt{Endpoint: "c", Started: t0.Add(2 * time.Second), Outcome: Failed}) // evicts a
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h.Add(Attempt{Endpoint: "late"}) // after Close: dropped
	st.Close()

	st, err = server.OpenBoltStore(name)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h, err = OpenHistory(st.DB())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var eps []string
	for _, s := range h.Summaries() {
		eps = append(eps, s.Latest.Endpoint+":"+s.Latest.Outcome)
	}
	if strings.Join(eps, " ") != "b:refused c:failed" {
		t.Fatalf("after reopening: %v", eps)
	}
	// The registrations' buckets are untouched.
	if err := st.DB().View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("registrations")) == nil {
			return fmt.Errorf("registrations bucket gone")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// The history through the server's API, with its token.
func TestHistoryInTheAPI(t *testing.T) {
	s := start(t, &Server{Addr: "127.0.0.1:0", Config: mustConfig(t, testConfig)})
	d := newDevice(t, nil).dial(s.LocalAddr().String())
	d.request("ep=stranger")
	if code, _ := d.request("ep=dev-1"); code != codes.Changed {
		t.Fatal(code)
	}
	d.waitFinish()
	waitfor.Until(t, 5*time.Second, func() error {
		if len(s.Attempts("dev-1")) != 1 {
			return fmt.Errorf("not recorded yet")
		}
		return nil
	})
	srv := &server.Server{Addr: "127.0.0.1:0"}
	hs := httptest.NewServer(httpapi.Handler(srv, httpapi.Config{Token: "tok", Bootstrap: s.HistoryHandler()}))
	defer hs.Close()
	get := func(path, token string, out any) int {
		req, _ := http.NewRequest("GET", hs.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	if code := get("/api/bootstrap", "wrong", nil); code != http.StatusUnauthorized {
		t.Fatalf("without the token: %d", code)
	}
	var sums []Summary
	if code := get("/api/bootstrap", "tok", &sums); code != 200 || len(sums) != 2 || sums[0].Latest.Endpoint != "dev-1" || sums[1].Latest.Outcome != Refused {
		t.Fatalf("GET /api/bootstrap: %d %+v", code, sums)
	}
	var as []Attempt
	if code := get("/api/bootstrap/dev-1", "tok", &as); code != 200 || len(as) != 1 || as[0].Outcome != Finished || len(as[0].Steps) != 7 {
		t.Fatalf("GET /api/bootstrap/dev-1: %d %+v", code, as)
	}
	var e map[string]string
	if code := get("/api/bootstrap/nobody", "tok", &e); code != 404 || !strings.Contains(e["error"], "nobody") {
		t.Fatalf("GET /api/bootstrap/nobody: %d %v", code, e)
	}
	raw, _ := json.Marshal(as)
	if strings.Contains(string(raw), testKeyHex) {
		t.Fatal("the API shows a key")
	}
	// A server without a bootstrap server says so.
	hs2 := httptest.NewServer(httpapi.Handler(srv, httpapi.Config{Token: "tok"}))
	defer hs2.Close()
	req, _ := http.NewRequest("GET", hs2.URL+"/api/bootstrap", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("without a bootstrap server: %d", resp.StatusCode)
	}
}
