package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

// TestClientQueueFlags: the program's -queue and -queue-window register
// in queue mode, "lwm2m server list" shows the device asleep once the
// window has passed, and a read of it completes once it wakes for its
// lifetime's Update.
func TestClientQueueFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the program and runs server and client processes")
	}
	bin := e2eBuild(t)
	srv := e2eStartServer(t, bin, "-coap", "127.0.0.1:0", "-queue-window", "500ms")
	// A lifetime of 4 s: the device wakes for an Update every 2 s.
	e2eDevice(t, bin, t.TempDir(), srv.coap, "qdev", "-queue", "-queue-window", "1s", "-lifetime", "4")
	waitfor.Until(t, 30*time.Second, func() error {
		regs, err := e2eRegistrations(srv.api)
		if err != nil {
			return err
		}
		r, ok := regs["qdev"]
		if !ok {
			return fmt.Errorf("qdev not registered")
		}
		if !r.Queue {
			return fmt.Errorf("qdev registered without queue mode: %+v", r)
		}
		return nil
	})
	waitListLine(t, bin, srv.api, "qdev", " asleep ")
	// A read of the sleeping device waits for its next Update, and then
	// gets its answer.
	code, out, errs := binCLI(t, bin, "read", "-api", srv.api, "-ep", "qdev", "-timeout", "1m", "/3/0/0")
	if code != 0 || !strings.Contains(out, "/3/0/0 = ") {
		t.Fatalf("read of the sleeping device: exit %d\n%s%s", code, out, errs)
	}
}

// -queue-window needs -queue and a positive duration.
func TestClientQueueFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-queue-window", "5s"},
		{"-queue", "-queue-window", "-1s"},
		{"-queue", "-queue-window", "five"},
	} {
		full := append([]string{"-endpoint", "e", "-server", "coap://127.0.0.1:1", "-state-dir", t.TempDir()}, args...)
		var out, errb bytes.Buffer
		if got := runClient(context.Background(), full, &out, &errb); got != 2 {
			t.Errorf("lwm2m client %q exited %d, want 2\n%s", args, got, errb.String())
		}
		if !strings.Contains(errb.String(), "queue-window") {
			t.Errorf("lwm2m client %q: the message does not name -queue-window: %q", args, errb.String())
		}
	}
	var out, errb bytes.Buffer
	runClient(context.Background(), []string{"-h"}, &out, &errb)
	if !strings.Contains(out.String(), "-queue-window") || !strings.Contains(out.String(), "-queue") {
		t.Errorf("-h does not list -queue and -queue-window:\n%s", out.String())
	}
}
