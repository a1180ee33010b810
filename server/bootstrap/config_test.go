package bootstrap

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const secretHex = "5ec7e75ec7e75ec7e75ec7e75ec7e7aa"

func TestConfigErrorsNameTheField(t *testing.T) {
	acct := func(extra string) string {
		return `{"endpoints": {"dev": {"servers": [{"uri": "coaps://h:5684", "short_server_id": 1, "security": {"mode": "psk", "identity": "i", "key": "` + secretHex + `"}` + extra + `}]}}}`
	}
	for _, tc := range []struct{ name, json, want string }{
		{"empty", `{}`, "endpoints: no entry"},
		{"not json", `{"endpoints": `, "unexpected EOF"},
		{"unknown field", `{"endpoints": {"dev": {"server": []}}}`, `unknown field "server"`},
		{"wrong type", "{\"endpoints\": {\"dev\":\n {\"servers\": [{\"short_server_id\": \"1\"}]}}}", "line 2: endpoints.servers.short_server_id: want int"},
		{"no servers", `{"endpoints": {"dev": {}}}`, `endpoints["dev"].servers: no LwM2M server account`},
		{"no uri", `{"endpoints": {"dev": {"servers": [{"short_server_id": 1, "security": {"mode": "nosec"}}]}}}`, `endpoints["dev"].servers[0].uri: missing`},
		{"http uri", strings.Replace(acct(""), "coaps://h:5684", "http://h", 1), `servers[0].uri: "http://h": want a coap:// or coaps:// URI`},
		{"ssid 0", strings.Replace(acct(""), `"short_server_id": 1`, `"short_server_id": 0`, 1), `servers[0].short_server_id: 0: want 1 to 65534`},
		{"ssid 65535", strings.Replace(acct(""), `"short_server_id": 1`, `"short_server_id": 65535`, 1), `short_server_id: 65535`},
		{"bad key", strings.Replace(acct(""), secretHex, "zz"+secretHex, 1), `servers[0].security.key: missing or not hex`},
		{"no identity", strings.Replace(acct(""), `"identity": "i", `, "", 1), `servers[0].security.identity: missing`},
		{"psk on coap", strings.Replace(acct(""), "coaps://", "coap://", 1), `servers[0].security.mode: psk with the coap:// URI`},
		{"nosec on coaps", `{"endpoints": {"dev": {"servers": [{"uri": "coaps://h", "short_server_id": 1, "security": {"mode": "nosec"}}]}}}`, `security.mode: nosec with the coaps:// URI`},
		{"rpk", strings.Replace(acct(""), `"mode": "psk"`, `"mode": "rpk"`, 1), `security.mode: "rpk" is not supported`},
		{"bad binding", acct(`, "binding": "X"`), `servers[0].binding: "X"`},
		{"negative lifetime", acct(`, "lifetime": -5`), `servers[0].lifetime: -5`},
		{"same instance", strings.Replace(acct(`, "security_instance": 3}, {"uri": "coap://h", "short_server_id": 2, "security": {"mode": "nosec"}, "security_instance": 3`), "", "", 1),
			`servers[1].security_instance: instance 3 is used twice`},
		{"same ssid", strings.Replace(acct(`}, {"uri": "coap://h", "short_server_id": 1, "security": {"mode": "nosec"}`), "", "", 1), `servers[1].short_server_id: 1 is given to two accounts`},
		{"bad delete", `{"endpoints": {"dev": {"delete": ["/5"], "servers": [{"uri": "coap://h", "short_server_id": 1, "security": {"mode": "nosec"}}]}}}`, `endpoints["dev"].delete[0]: "/5"`},
		{"acl rights letters", `{"endpoints": {"dev": {"servers": [{"uri": "coap://h", "short_server_id": 1, "security": {"mode": "nosec"}}], "acl": [{"object": 5, "instance": 0, "owner": 1, "rights": {"1": "RWX"}}]}}}`, `letter 'X'`},
		{"acl rights key", `{"endpoints": {"dev": {"servers": [{"uri": "coap://h", "short_server_id": 1, "security": {"mode": "nosec"}}], "acl": [{"object": 5, "instance": 0, "owner": 1, "rights": {"one": 1}}]}}}`, `acl[0].rights: key "one"`},
		{"acl no owner", `{"endpoints": {"dev": {"servers": [{"uri": "coap://h", "short_server_id": 1, "security": {"mode": "nosec"}}], "acl": [{"object": 5, "instance": 0, "rights": {"1": 1}}]}}}`, `acl[0].owner: 0`},
		{"acl object 0", `{"endpoints": {"dev": {"servers": [{"uri": "coap://h", "short_server_id": 1, "security": {"mode": "nosec"}}], "acl": [{"object": 0, "owner": 1, "rights": {"1": 1}}]}}}`, `acl[0].object: 0`},
		{"empty name", `{"endpoints": {"": {}}}`, `endpoints[""]: an endpoint name cannot be empty`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(strings.NewReader(tc.json))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secretHex) {
				t.Fatalf("the error shows the key: %q", err)
			}
		})
	}
}

func TestLoadConfigNamesTheFile(t *testing.T) {
	name := filepath.Join(t.TempDir(), "bs.json")
	if err := os.WriteFile(name, []byte(`{"endpoints": {"dev": {}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(name)
	if err == nil || !strings.HasPrefix(err.Error(), name+": ") {
		t.Fatalf("error %v, want one that starts with the file name", err)
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Fatal("no error for a missing file")
	}
}

func TestInstanceIDsKeepClearOfExplicitOnes(t *testing.T) {
	c := mustConfig(t, `{"endpoints": {"dev": {"servers": [
		{"uri": "coap://a", "short_server_id": 1, "security": {"mode": "nosec"}},
		{"uri": "coap://b", "short_server_id": 2, "security": {"mode": "nosec"}, "security_instance": 2, "server_instance": 0},
		{"uri": "coap://c", "short_server_id": 3, "security": {"mode": "nosec"}}]}}}`)
	steps, err := c.Endpoints["dev"].plan("dev", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range steps {
		if !s.delete {
			got = append(got, fmt.Sprintf("%s(%s)", s.path, strings.Fields(s.what)[0]))
		}
	}
	// Security from /0/1 on, around the explicit /0/2; Server from /1/0
	// on, around the explicit /1/0.
	want := "/0/1(uri=coap://a) /0/2(uri=coap://b) /0/3(uri=coap://c) /1/0(ssid=2) /1/1(ssid=1) /1/2(ssid=3)"
	if strings.Join(got, " ") != want {
		t.Fatalf("writes\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

func TestSecurityNeverPrintsTheKey(t *testing.T) {
	c := mustConfig(t, testConfig)
	acct := c.Endpoints["dev-1"].Servers[0]
	var b strings.Builder
	log := slog.New(slog.NewTextHandler(&b, nil))
	log.Info("x", "security", acct.Security, "account", acct)
	for _, s := range []string{fmt.Sprint(acct), fmt.Sprintf("%+v", acct), fmt.Sprintf("%#v", acct.Security), fmt.Sprintf("%v", c), b.String()} {
		if strings.Contains(s, testKeyHex) {
			t.Fatalf("key printed: %s", s)
		}
	}
	steps, _ := c.Endpoints["dev-1"].plan("dev-1", nil)
	for _, s := range steps {
		if strings.Contains(s.what, testKeyHex) || strings.Contains(s.what, "key") {
			t.Fatalf("the history would show the key: %q", s.what)
		}
	}
}
