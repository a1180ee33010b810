package bootstrap

import (
	"bytes"
	"testing"
)

// FuzzParseConfig feeds the configuration parser what a damaged file
// could hold: an error naming the problem, or a configuration whose every
// entry plans a bootstrap, never a panic.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"endpoints":{"*":{"servers":[{"uri":"coap://127.0.0.1:5683","short_server_id":1,"security":{"mode":"nosec"}}]}}}`))
	f.Add([]byte(`{"endpoints":{"dev":{"delete":["/"],"servers":[{"uri":"coaps://127.0.0.1:5684","short_server_id":2,"lifetime":60,` +
		`"security":{"mode":"psk","identity":"dev","key":"0102"}}],"acl":[{"object":5,"instance":0,"rights":{"1":"RWE"},"owner":1}]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(bytes.NewReader(data))
		if err != nil {
			return
		}
		for ep := range c.Endpoints {
			e, ok := c.entry(ep)
			if !ok {
				t.Fatalf("entry %q listed but not found", ep)
			}
			if _, err := e.plan(ep, map[int]bool{}); err != nil {
				t.Fatalf("Validate accepted %q but it plans no bootstrap: %v", ep, err)
			}
		}
	})
}
