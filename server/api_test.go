package server

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAPI(t *testing.T) {
	s := startServer(t, &Server{})
	d := newFakeDevice(t, s.LocalAddr().String(), "dev1")
	hs := httptest.NewServer(s.APIHandler())
	defer hs.Close()

	do := func(method, path, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	var regs []Registration
	json.NewDecoder(do("GET", "/api/devices", "").Body).Decode(&regs)
	if len(regs) != 1 || regs[0].Endpoint != "dev1" {
		t.Errorf("devices: %+v", regs)
	}
	var c APIContent
	resp := do("GET", "/api/devices/dev1/read?path=/3/0/0&format=text", "")
	json.NewDecoder(resp.Body).Decode(&c)
	if resp.StatusCode != 200 || len(c.Records) != 1 || c.Records[0].Value != "Acme" || c.Records[0].Type != "string" {
		t.Errorf("read: %s %+v", resp.Status, c)
	}
	if resp := do("POST", "/api/devices/dev1/write", `{"path":"/1/0/1","value":"300","replace":true}`); resp.StatusCode != 204 {
		t.Errorf("write: %s", resp.Status)
	}
	if v := d.get("/1/0/1"); v != "300" {
		t.Errorf("after write %q", v)
	}
	if resp := do("POST", "/api/devices/dev1/execute", `{"path":"/3/0/4"}`); resp.StatusCode != 204 {
		t.Errorf("execute: %s", resp.Status)
	}
	resp = do("GET", "/api/devices/dev1/read?path=/3/0/77", "")
	var e map[string]string
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != http.StatusBadGateway || e["coap_code"] != "4.04" {
		t.Errorf("read of missing resource: %s %v", resp.Status, e)
	}
	if resp := do("GET", "/api/devices/nobody/read?path=/3/0/0", ""); resp.StatusCode != 404 {
		t.Errorf("unknown endpoint: %s", resp.Status)
	}
	if resp := do("GET", "/api/devices/dev1/read?path=/x", ""); resp.StatusCode != 400 {
		t.Errorf("bad path: %s", resp.Status)
	}

	f, _ := writeImage(t, 4000)
	resp = do("POST", "/api/update", `{"endpoint":"dev1","package":"`+f+`","method":"push","timeout":"15s"}`)
	sc := bufio.NewScanner(resp.Body)
	var last APIUpdateLine
	lines := 0
	for sc.Scan() {
		lines++
		last = APIUpdateLine{}
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
	}
	if len(last.Results) != 1 || last.Results[0].Result != 1 || last.Results[0].ResultName != "Success" || lines < 3 {
		t.Errorf("update: %d lines, last %+v", lines, last)
	}
}
