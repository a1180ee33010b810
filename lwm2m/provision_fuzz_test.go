package lwm2m

import (
	"encoding/json"
	"testing"

	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// FuzzDecodeProvisioning feeds the provisioning file's decoder what a
// damaged or hostile file could hold: it must return an error or a
// configuration that encodes back to the same records, never panic.
func FuzzDecodeProvisioning(f *testing.F) {
	p := Provisioning{Records: []model.Record{
		{Path: model.NewPath(0, 0, secServerURI), Value: model.String("coap://127.0.0.1:5683")},
		{Path: model.NewPath(0, 0, secMode), Value: model.Int(int64(SecurityNoSec))},
		{Path: model.NewPath(0, 0, secSecretKey), Value: model.Opaque([]byte{1, 2, 3})},
		{Path: model.NewPath(1, 0, serverShortID), Value: model.Int(1)},
		{Path: model.NewPath(2, 0, 2, 1), Value: model.Int(3)},
	}}
	good, err := encodeProvisioning(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"format":"lwm2m-provisioning","version":1,"sha256":"","records":[]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodeProvisioning(data)
		if err != nil {
			return
		}
		_ = p.Validate()
		again, err := encodeProvisioning(p)
		if err != nil {
			t.Fatalf("decoded configuration does not encode: %v", err)
		}
		q, err := decodeProvisioning(again)
		if err != nil {
			t.Fatalf("re-encoded configuration does not decode: %v", err)
		}
		if len(q.Records) != len(p.Records) {
			t.Fatalf("round trip: %d records, then %d", len(p.Records), len(q.Records))
		}
		for i := range p.Records {
			if !p.Records[i].Equal(q.Records[i]) {
				t.Fatalf("round trip changed %v: %v then %v", p.Records[i].Path, p.Records[i].Value, q.Records[i].Value)
			}
		}
	})
}

// FuzzFactoryConfig decodes a factory file's JSON and turns it into a
// configuration: an error or a Provisioning, never a panic.
func FuzzFactoryConfig(f *testing.F) {
	f.Add([]byte(`{"security":[{"uri":"coap://127.0.0.1:5683","bootstrap":true,"mode":"nosec"}]}`))
	f.Add([]byte(`{"security":[{"uri":"coaps://h:5684","mode":"psk","psk_identity":"dev","psk_key":"0102"}],"server":[{"short_server_id":1,"lifetime":60}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fc FactoryConfig
		if json.Unmarshal(data, &fc) != nil {
			return
		}
		// Files named by the input are not the fuzzer's to read.
		for i := range fc.Security {
			s := &fc.Security[i]
			s.CertificateFile, s.PrivateKeyFile, s.ServerCertificateFile = "", "", ""
		}
		if p, err := fc.Provisioning(""); err == nil {
			_ = p.Validate()
		}
	})
}
