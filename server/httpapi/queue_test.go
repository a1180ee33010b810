package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/lwm2m-fota/lwm2m/server"
)

// devicesByEndpoint is GET /api/devices by endpoint.
func devicesByEndpoint(t *testing.T, hs *httptest.Server) map[string]Device {
	t.Helper()
	resp := apiDo(t, ctxT(t), hs, "GET", "/api/devices", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/devices: %s", resp.Status)
	}
	var devs []Device
	if err := json.NewDecoder(resp.Body).Decode(&devs); err != nil {
		t.Fatal(err)
	}
	out := map[string]Device{}
	for _, x := range devs {
		out[x.Endpoint] = x
	}
	return out
}

// TestQueueModeShowsAwakeAndAsleep: /api/devices shows a queue-mode
// device awake within its queue window and asleep after it, and no such
// field for a device not in queue mode.
func TestQueueModeShowsAwakeAndAsleep(t *testing.T) {
	for _, c := range []struct {
		name   string
		window time.Duration
		awake  bool
	}{
		{"awake", time.Hour, true},
		{"asleep", time.Nanosecond, false}, // the window has passed by the time the API is asked
	} {
		t.Run(c.name, func(t *testing.T) {
			s := startServer(t, &server.Server{QueueWindow: c.window})
			newMuteDevice(t, s, "q1", "lt=600", "lwm2m=1.1", "b=U", "Q")
			newMuteDevice(t, s, "plain", "lt=600", "lwm2m=1.1", "b=U")
			devs := devicesByEndpoint(t, apiServer(t, s, Config{}))
			if a := devs["q1"].Awake; a == nil || *a != c.awake {
				t.Errorf("queue-mode device: awake = %v, want %v", a, c.awake)
			}
			if devs["plain"].Awake != nil {
				t.Error("a device not in queue mode shows awake/asleep")
			}
			if devs["q1"].LastSeen.IsZero() {
				t.Error("no last_seen")
			}
		})
	}
}

// TestValues: GET /api/devices/{ep}/values has the last value of each
// resource a device sent, by path, as text with its type.
func TestValues(t *testing.T) {
	s := startServer(t, &server.Server{})
	d := newMuteDevice(t, s, "sender", "lt=600", "lwm2m=1.1")
	if c := d.send(t, `[{"bn":"/3/0/","n":"0","vs":"Acme"},{"n":"9","v":86},{"bn":"/3303/0/","n":"5700","v":21.5}]`); c != codes.Changed {
		t.Fatalf("send: %v, want 2.04", c)
	}
	hs := apiServer(t, s, Config{})
	resp := apiDo(t, ctxT(t), hs, "GET", "/api/devices/sender/values", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET values: %s", resp.Status)
	}
	var av []Value
	if err := json.NewDecoder(resp.Body).Decode(&av); err != nil {
		t.Fatal(err)
	}
	if len(av) != 3 || av[1].Path != "/3/0/9" || av[1].Value != "86" || av[1].Type != "integer" ||
		av[2].Value != "21.5" || av[2].Type != "float" || av[0].Time.IsZero() {
		t.Errorf("API values = %+v", av)
	}
	if resp := apiDo(t, ctxT(t), hs, "GET", "/api/devices/nobody/values", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("values of an unknown endpoint: %s, want 404", resp.Status)
	}
}
