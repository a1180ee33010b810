package httpapi

import (
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m/content"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
	"github.com/lwm2m-fota/lwm2m/lwm2m/senml"
	"github.com/lwm2m-fota/lwm2m/lwm2m/tlv"
	"github.com/lwm2m-fota/lwm2m/server"
)

// TestDecodeByRegistryTypes: a whole-instance TLV read of Anjay's /3/0,
// whose /3/0/22 is an Objlnk (Device 1.1 and 1.2), decodes; floats print
// as floats, times in RFC 3339, and a resource the server does not know
// by the content format.
func TestDecodeByRegistryTypes(t *testing.T) {
	at := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	dev := []model.Record{
		{Path: mustPath("/3/0/0"), Value: model.String("AVSystem")},
		{Path: mustPath("/3/0/13"), Value: model.Time(at)},
		{Path: mustPath("/3/0/22"), Value: model.Objlnk(20, 0)},
		{Path: mustPath("/3/0/99"), Value: model.Opaque([]byte{0xde, 0xad})},
	}
	b, err := tlv.Encode(mustPath("/3/0"), dev)
	if err != nil {
		t.Fatal(err)
	}
	loc, err := tlv.Encode(mustPath("/6/0"), []model.Record{
		{Path: mustPath("/6/0/0"), Value: model.Float(52)},
		{Path: mustPath("/6/0/1"), Value: model.Float(21.25)},
	})
	if err != nil {
		t.Fatal(err)
	}
	sj, err := senml.EncodeJSON(mustPath("/42/0"), []model.Record{
		{Path: mustPath("/42/0/1"), Value: model.Float(1.5)},
		{Path: mustPath("/42/0/2"), Value: model.String("x")},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := tlv.Encode(mustPath("/1/0"), []model.Record{
		{Path: mustPath("/1/0/12"), Value: model.Time(at)},
		{Path: mustPath("/1/0/22"), Value: model.String("U")},
		{Path: mustPath("/1/0/23"), Value: model.Bool(true)},
	})
	for _, c := range []struct {
		name string
		c    server.Content
		base string
		want []Record
	}{
		{"device TLV", server.Content{Format: content.TLV, Payload: b}, "/3/0", []Record{
			{"/3/0/0", "string", "AVSystem"}, {"/3/0/13", "time", "2026-12-02T08:00:00Z"},
			{"/3/0/22", "objlnk", "20:0"}, {"/3/0/99", "opaque", "dead"}}},
		{"server TLV", server.Content{Format: content.TLV, Payload: srv}, "/1/0", []Record{
			{"/1/0/12", "time", "2026-12-02T08:00:00Z"}, {"/1/0/22", "string", "U"}, {"/1/0/23", "boolean", "1"}}},
		{"location floats", server.Content{Format: content.TLV, Payload: loc}, "/6/0", []Record{
			{"/6/0/0", "float", "52.0"}, {"/6/0/1", "float", "21.25"}}},
		{"unknown in text", server.Content{Format: content.TextPlain, Payload: []byte("hello")}, "/42/0/7", []Record{
			{"/42/0/7", "string", "hello"}}},
		{"unknown in SenML", server.Content{Format: content.SenMLJSON, Payload: sj}, "/42/0", []Record{
			{"/42/0/1", "float", "1.5"}, {"/42/0/2", "string", "x"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := toContent(c.c, mustPath(c.base))
			if got.Error != "" {
				t.Fatalf("decode error: %s", got.Error)
			}
			if len(got.Records) != len(c.want) {
				t.Fatalf("records %+v, want %+v", got.Records, c.want)
			}
			for i, r := range got.Records {
				if r != c.want[i] {
					t.Errorf("record %+v, want %+v", r, c.want[i])
				}
			}
		})
	}
	if got := toContent(server.Content{Format: content.TLV, Payload: []byte{0xc8, 0x00, 0x05, 'a'}}, mustPath("/3/0")); got.Error == "" || len(got.Records) != 0 {
		t.Errorf("truncated TLV: %+v, want a decode error", got)
	}
}

func mustPath(s string) model.Path {
	p, err := model.ParsePath(s)
	if err != nil {
		panic(err)
	}
	return p
}
