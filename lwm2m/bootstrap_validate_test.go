package lwm2m_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

func TestValidateAcceptsConsistent(t *testing.T) {
	if err := sampleProvisioning().Validate(); err != nil {
		t.Fatal(err)
	}
}

// Each inconsistency of LwM2M 1.1 Core §6.1 (Bootstrap-Finish) is refused with a problem
// that names the instance or resource at fault.
func TestValidateRefusesInconsistent(t *testing.T) {
	edit := func(f func(recs []model.Record) []model.Record) lwm2m.Provisioning {
		p := sampleProvisioning()
		p.Records = f(append([]model.Record(nil), p.Records...))
		return p
	}
	set := func(path model.Path, v model.Value) func([]model.Record) []model.Record {
		return func(recs []model.Record) []model.Record {
			for i := range recs {
				if recs[i].Path == path {
					recs[i].Value = v
					return recs
				}
			}
			return append(recs, model.Record{Path: path, Value: v})
		}
	}
	drop := func(path model.Path) func([]model.Record) []model.Record {
		return func(recs []model.Record) []model.Record {
			out := recs[:0]
			for _, r := range recs {
				if !r.Path.Within(path) {
					out = append(out, r)
				}
			}
			return out
		}
	}
	for _, tc := range []struct {
		name string
		p    lwm2m.Provisioning
		want string
	}{
		{"server without security", edit(set(model.NewPath(1, 0, 0), model.Int(7))), "/1/0: no Security instance has Short Server ID 7"},
		{"security without URI", edit(drop(model.NewPath(0, 1, 0))), "/0/1/0: Server URI is missing"},
		{"coaps with NoSec", edit(set(model.NewPath(0, 1, 2), model.Int(3))), "/0/1/2: Security Mode NoSec with a coaps:// URI"},
		{"coap with PSK", edit(set(model.NewPath(0, 0, 2), model.Int(0))), "/0/0/2: Security Mode PSK with a coap:// URI"},
		{"PSK without key", edit(drop(model.NewPath(0, 1, 5))), "/0/1/5: PSK mode needs a key"},
		{"PSK without identity", edit(set(model.NewPath(0, 1, 3), model.Opaque(nil))), "/0/1/3: PSK mode needs a PSK identity"},
		{"unsupported scheme", edit(set(model.NewPath(0, 1, 0), model.String("coap+tcp://h:1"))), `scheme "coap+tcp" is not supported`},
		{"two bootstrap accounts", edit(set(model.NewPath(0, 1, 1), model.Bool(true))), "a second Bootstrap-Server account"},
		{"no server", edit(drop(model.NewPath(1))), "no Server instance"},
		{"no lifetime", edit(drop(model.NewPath(1, 0, 1))), "/1/0/1: Lifetime is missing"},
		{"TCP binding", edit(set(model.NewPath(1, 0, 7), model.String("T"))), "this client speaks UDP only"},
		{"SSID out of range", edit(set(model.NewPath(0, 1, 10), model.Int(65535))), "/0/1/10: Short Server ID 65535 is out of range"},
		{"wrong type", edit(set(model.NewPath(1, 0, 1), model.String("300"))), "/1/0/1: a string value, want integer"},
		{"ACL bits", edit(set(model.NewPath(2, 0, 2, 101), model.Int(64))), "/2/0/2/101: access rights 64"},
		{"ACL without owner", edit(drop(model.NewPath(2, 0, 3))), "/2/0/3: Access Control Owner is missing"},
		{"foreign object", edit(set(model.NewPath(3, 0, 0), model.String("x"))), "/3/0/0: only resources of /0, /1 and /2"},
	} {
		err := tc.p.Validate()
		var pe *lwm2m.ProvisioningError
		if !errors.As(err, &pe) || !errors.Is(err, lwm2m.ErrInconsistent) {
			t.Errorf("%s: Validate: %v, want a ProvisioningError", tc.name, err)
			continue
		}
		if !strings.Contains(pe.Diagnostic(), tc.want) {
			t.Errorf("%s: diagnostic %q does not say %q", tc.name, pe.Diagnostic(), tc.want)
		}
	}
}

// The diagnostic never quotes a key and fits a datagram.
func TestValidateDiagnosticBounded(t *testing.T) {
	var p lwm2m.Provisioning
	for i := range uint16(200) {
		p.Records = append(p.Records, model.Record{Path: model.NewPath(1, i, 0), Value: model.Int(int64(1000 + i))})
	}
	p.Records = append(p.Records, model.Record{Path: model.NewPath(0, 0, 5), Value: model.Opaque([]byte("topsecretkey"))})
	var pe *lwm2m.ProvisioningError
	if err := p.Validate(); !errors.As(err, &pe) {
		t.Fatal(err)
	}
	if d := pe.Diagnostic(); len(d) > 512 || strings.Contains(d, "topsecret") {
		t.Errorf("diagnostic of %d bytes: %q", len(d), d)
	}
}
