package console_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
)

// A refused event stream (503: the server holds its limit of streams) is
// opened again a little later: EventSource gives up on a refusal by
// itself, and the page stayed "reconnecting" for good (found by the red
// team).
func TestConsoleReopensARefusedEventStream(t *testing.T) {
	f := newFleet(t)
	ctx := browser(t)
	signIn(t, ctx, f)
	waitJS(t, ctx, "the page is live", `document.querySelector("#live").textContent === "live"`)

	// Take every place but the page's (the server's limit is 256).
	sctx, closeStreams := context.WithCancel(context.Background())
	defer closeStreams()
	open := func() bool {
		req, _ := http.NewRequestWithContext(sctx, "GET", f.api.URL+"/api/events", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return false
		}
		t.Cleanup(func() { resp.Body.Close() })
		return true
	}
	for i := 0; open(); i++ {
		if i > 1000 {
			t.Fatal("no limit on event streams")
		}
	}
	// The page's stream drops; its place is taken before it reconnects,
	// so that its reconnection is refused.
	waitJS(t, ctx, "the page drops its stream", `(events.close(), true)`)
	waitfor.Until(t, 20*time.Second, func() error {
		if !open() {
			return errors.New("the page's place is not free yet")
		}
		return nil
	})
	waitJS(t, ctx, "the page reconnects", `(listen(), true)`)
	waitJS(t, ctx, "refused, the page says so", `events.readyState === EventSource.CLOSED && document.querySelector("#live").textContent === "reconnecting"`)
	closeStreams()
	waitJS(t, ctx, "the page is live again", `document.querySelector("#live").textContent === "live"`)
}
