package main

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/lwm2mtest"
)

// -lwm2m-version chooses the version registered with; anything but 1.0
// or 1.1 is a usage error.
func TestClientLwM2MVersion(t *testing.T) {
	for _, v := range []string{"2.0", "1", ""} {
		var errb bytes.Buffer
		args := []string{"-endpoint", "e", "-server", "coap://127.0.0.1:1", "-state-dir", t.TempDir(), "-lwm2m-version", v}
		if got := runClient(context.Background(), args, &bytes.Buffer{}, &errb); got != 2 {
			t.Errorf("-lwm2m-version %q exited %d, want 2\n%s", v, got, errb.String())
		}
	}
	// runClient is the supervisor; its child is this test binary acting
	// as the program (TestMain).
	t.Setenv("LWM2M_TEST_AS_PROGRAM", "1")
	srv := lwm2mtest.Start(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- runClient(ctx, []string{"-endpoint", "v10", "-server", srv.URI(), "-state-dir", t.TempDir(), "-lwm2m-version", "1.0"}, &bytes.Buffer{}, &bytes.Buffer{})
	}()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	reg, err := srv.WaitRegister(wctx, "v10")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(reg.Query, "lwm2m=1.0") {
		t.Errorf("register query %v, want lwm2m=1.0", reg.Query)
	}
}
