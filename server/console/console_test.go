package console_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/lwm2m-fota/lwm2m/fwupdate"
	"github.com/lwm2m-fota/lwm2m/internal/servertest"
	"github.com/lwm2m-fota/lwm2m/internal/waitfor"
	"github.com/lwm2m-fota/lwm2m/objects"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/campaign"
	"github.com/lwm2m-fota/lwm2m/server/console"
	"github.com/lwm2m-fota/lwm2m/server/httpapi"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// screenshotsEnv makes the browser test write its screenshots into
// docs/console, for docs/CONSOLE.md.
const screenshotsEnv = "LWM2M_UPDATE_SCREENSHOTS"

// browserCtx is the one browser the package's tests share: a tab each,
// in a browser context each (cookies of one test are not another's).
var (
	browserOnce sync.Once
	browserCtx  context.Context
	browserErr  error
	browserStop = func() {}
)

func TestMain(m *testing.M) {
	code := m.Run()
	browserStop()
	os.Exit(code)
}

// browser returns a new tab in a fresh browser context, or skips the test
// when chromium is not installed.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := exec.LookPath(chromiumPath); err != nil {
		t.Skipf("browser test skipped: %s is not installed (apt-get install chromium; CI installs it through .ci/run)", chromiumPath)
	}
	browserOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lwm2m-console-chromium-")
		if err != nil {
			browserErr = err
			return
		}
		// chromedp's defaults (headless, no first run, no background
		// networking or throttling of background tabs, ...), and what
		// running as root in a container and offline needs.
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(chromiumPath), chromedp.NoSandbox, chromedp.DisableGPU,
			chromedp.UserDataDir(dir), chromedp.WindowSize(1280, 860),
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("hide-scrollbars", true),
		)
		actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
		bctx, cancelB := chromedp.NewContext(actx)
		// The first Run starts the browser, for as long as bctx lives.
		if err := chromedp.Do(bctx); err != nil {
			cancelB()
			cancelA()
			os.RemoveAll(dir)
			browserErr = fmt.Errorf("starting %s: %w", chromiumPath, err)
			return
		}
		browserCtx = bctx
		browserStop = func() { cancelB(); cancelA(); os.RemoveAll(dir) }
	})
	if browserErr != nil {
		t.Fatal(browserErr)
	}
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	// The first Run opens the tab for as long as ctx lives: not under
	// the timeout of a later action's context.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// run runs browser actions with a bound, failing the test on error.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(actx, actions...); err != nil {
		t.Fatalf("%s: %v\npage:\n%s", what, err, pageText(ctx))
	}
}

// waitJS waits until the JavaScript expression is true in the page.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	err := waitfor.Poll(20*time.Second, func() error {
		ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool](`!!(`+expr+`)`))
		if err == nil && !ok {
			err = errors.New("not yet")
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v\npage:\n%s", what, err, pageText(ctx))
	}
}

// pageText is the page's text, for a failure's message.
func pageText(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return s
}

// fetchStatus runs fetch in the page, as the page's own script would, and
// returns the HTTP status.
func fetchStatus(t *testing.T, ctx context.Context, method, path, headers, body string) int {
	t.Helper()
	js := fmt.Sprintf(`fetch(%q, {method: %q, headers: %s, body: %s, credentials: "same-origin"}).then(r => r.status)`, path, method, headers, body)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("fetch %s %s: %v", method, path, err)
	}
	return n
}

// screenshot saves the page as docs/console/NAME.png when
// LWM2M_UPDATE_SCREENSHOTS=1.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv(screenshotsEnv) != "1" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := filepath.Join("..", "..", "docs", "console")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

const testToken = "console-test-token-0123456789abcdef"

// fleet is a server with its campaign engine, API and console, and
// in-process devices, wired as the lwm2m program wires them.
type fleet struct {
	s   *server.Server
	eng *campaign.Engine
	api *httptest.Server
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	s := servertest.Start(t, &server.Server{Inventory: true, Logger: log})
	eng, err := campaign.New(campaign.Config{Server: s, Dir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	// The event stream tells browsers to refetch a campaign that changed.
	eng.Subscribe(ctx, func(id string) { s.PublishEvent(server.Event{Kind: "campaign", ID: id}) })
	api := httptest.NewServer(httpapi.Handler(s, httpapi.Config{Token: testToken, Console: console.Handler(), Routes: eng.Routes()}))
	t.Cleanup(func() {
		api.CloseClientConnections()
		api.Close()
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	return &fleet{s: s, eng: eng, api: api}
}

// testFirmware is a device's firmware storage. With gate set, the
// download stops after its first block until the gate closes; with fail
// set, the upgrade fails.
type testFirmware struct {
	gate   chan struct{}
	fail   bool
	writes int
	obj    *fwupdate.Object
}

func (f *testFirmware) StreamOpen(context.Context, string, []byte) error { f.writes = 0; return nil }
func (f *testFirmware) StreamWrite([]byte) error {
	f.writes++
	if f.writes == 2 && f.gate != nil {
		<-f.gate
	}
	return nil
}
func (f *testFirmware) StreamFinish() error { return nil }
func (f *testFirmware) Reset() error        { return nil }
func (f *testFirmware) PerformUpgrade(context.Context) error {
	if f.fail {
		return errors.New("test: the new firmware does not boot")
	}
	go f.obj.SetResult(fwupdate.ResultSuccess)
	return nil
}

// device runs an in-process LwM2M client with Device (/3) and Firmware
// Update (/5) until the test ends or stop is called, and waits until it
// is registered.
func (f *fleet) device(t *testing.T, ep, version string, fw *testFirmware) (stop func()) {
	t.Helper()
	d, err := servertest.RunDevice(t, f.s, servertest.DeviceConfig{
		Endpoint:  ep,
		Info:      objects.DeviceInfo{Manufacturer: "Acme", ModelNumber: "Sensor 2", FirmwareVersion: version},
		Firmware:  fw,
		Installed: func(o *fwupdate.Object) { fw.obj = o },
	})
	if err != nil {
		t.Fatal(err)
	}
	return d.Stop
}

func writePackage(t *testing.T, n int) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "firmware.bin")
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// row is the JavaScript for a device list cell's text.
func row(ep, class string) string {
	return fmt.Sprintf(`(document.querySelector('#devices tr[data-endpoint=%q] .%s') || {}).textContent`, ep, class)
}

// TestConsole walks the console as an operator would: the sign-in page
// without a session (every API call refused), sign-in with the token,
// the device list with firmware version and /5 State and Result by name,
// a device page with a download's progress bar and a failed update, the
// list updated live through the event stream, CSRF refused, sign-out.
func TestConsole(t *testing.T) {
	f := newFleet(t)
	ctx := browser(t)
	f.device(t, "sensor-ok", "1.4.2", &testFirmware{})
	gate := make(chan struct{})
	var openGate sync.Once
	release := func() { openGate.Do(func() { close(gate) }) }
	// Registered before the devices' cleanups, so run after them: a
	// download held at the gate must not keep its client from stopping.
	f.device(t, "sensor-bad", "1.4.1", &testFirmware{gate: gate, fail: true})
	t.Cleanup(release)
	for _, ep := range []string{"sensor-ok", "sensor-bad"} {
		waitInventory(t, f.s, ep)
	}

	// No session: the sign-in page only, and the API refuses the page.
	run(t, ctx, "open the console", chromedp.Navigate(f.api.URL+"/"), chromedp.WaitVisible("#signin"))
	waitJS(t, ctx, "only the sign-in page", `document.querySelector("#app").hidden && document.querySelector("#nav").hidden`)
	for _, p := range []string{"/api/status", "/api/devices", "/api/events", "/api/devices/sensor-ok/read?path=/3/0/3"} {
		if n := fetchStatus(t, ctx, "GET", p, "{}", "undefined"); n != http.StatusUnauthorized {
			t.Errorf("GET %s without a session: %d, want 401", p, n)
		}
	}
	if n := fetchStatus(t, ctx, "POST", "/api/devices/sensor-ok/write", `{"Content-Type": "application/json"}`, `'{"path":"/1/0/1","value":"5"}'`); n != http.StatusUnauthorized {
		t.Errorf("write without a session: %d, want 401", n)
	}
	screenshot(t, ctx, "signin")

	run(t, ctx, "sign in with a wrong token", chromedp.SendKeys("#token", "not-the-token"), chromedp.Click("#signin-form button"))
	waitJS(t, ctx, "wrong token refused", `document.querySelector("#signin-error").textContent.includes("not this server's API token")`)
	run(t, ctx, "sign in", chromedp.SendKeys("#token", testToken), chromedp.Click("#signin-form button"), chromedp.WaitVisible("#devices"))

	waitJS(t, ctx, "sensor-ok's firmware version and /5", row("sensor-ok", "fw-version")+` === "1.4.2" && `+row("sensor-ok", "fw-state")+` === "Idle" && `+row("sensor-ok", "fw-result")+` === "Initial"`)
	waitJS(t, ctx, "sensor-bad listed", row("sensor-bad", "fw-version")+` === "1.4.1"`)
	waitJS(t, ctx, "event stream open", `document.querySelector("#live").textContent === "live"`)

	// The session cookie alone does not let the page change anything.
	if n := fetchStatus(t, ctx, "POST", "/api/devices/sensor-ok/write", `{"Content-Type": "application/json"}`, `'{"path":"/1/0/1","value":"5"}'`); n != http.StatusForbidden {
		t.Errorf("write with the session cookie but no CSRF header: %d, want 403", n)
	}
	if cookie, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`)); cookie != "" {
		t.Errorf("the page's script can read cookies %q: the session cookie must be HttpOnly", cookie)
	}

	// A pull update of sensor-bad: the device page shows the download's
	// progress bar while it stalls, then the failure by name.
	pkg := writePackage(t, 8<<10)
	upd := make(chan error, 1)
	go func() {
		uctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := f.s.Update(uctx, "sensor-bad", pkg, server.PullCoAP, nil)
		upd <- err
	}()
	run(t, ctx, "open sensor-bad", chromedp.Click(`#devices tr[data-endpoint="sensor-bad"] a`), chromedp.WaitVisible("#device-fw"))
	waitJS(t, ctx, "download progress bar", `(() => { const p = document.querySelector("#fw-progress"); return p && p.value > 0 && p.value < p.max; })()`)
	screenshot(t, ctx, "device-download")
	release()
	waitJS(t, ctx, "failed update's Result by name, live", `document.querySelector("#device-fw .fw-result").textContent === "Firmware update failed"`)
	if err := <-upd; !errors.Is(err, server.ErrUpdateFailed) {
		t.Errorf("update of sensor-bad: %v, want %v", err, server.ErrUpdateFailed)
	}
	waitJS(t, ctx, "history of the update", `document.querySelector("#device-history tbody").textContent.includes("Result Firmware update failed")`)

	// Objects and resources: read an instance.
	run(t, ctx, "read /3/0", chromedp.Click(`//button[text()="Read /3/0"]`))
	waitJS(t, ctx, "/3/0 read", `document.querySelector("#op-out").textContent.includes("/3/0/3 = 1.4.1")`)
	waitJS(t, ctx, "State read again after the update", `document.querySelector("#device-fw .fw-state").textContent === "Downloaded"`)
	if txt := pageText(ctx); strings.Contains(txt, "null") || strings.Contains(txt, "undefined") {
		t.Errorf("the device page shows a missing value:\n%s", txt)
	}
	screenshot(t, ctx, "device")

	run(t, ctx, "back to the list", chromedp.Click(`//a[text()="← Devices"]`), chromedp.WaitVisible("#devices"))
	waitJS(t, ctx, "sensor-bad's Result in the list", row("sensor-bad", "fw-result")+` === "Firmware update failed"`)

	// A device that registers now appears without a reload.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded = true`)); err != nil {
		t.Fatal(err)
	}
	stop := f.device(t, "sensor-new", "2.0.0", &testFirmware{})
	waitJS(t, ctx, "new device listed live", row("sensor-new", "fw-version")+` === "2.0.0" && window.notReloaded === true`)
	screenshot(t, ctx, "devices")
	stop() // de-registers
	waitJS(t, ctx, "de-registered device gone live", `!document.querySelector('#devices tr[data-endpoint="sensor-new"]') && window.notReloaded === true`)

	run(t, ctx, "filter", chromedp.SendKeys("#device-search", "bad"))
	waitJS(t, ctx, "search shows one device", `document.querySelectorAll("#devices tbody tr[data-endpoint]").length === 1 && !!document.querySelector('#devices tr[data-endpoint="sensor-bad"]')`)

	run(t, ctx, "sign out", chromedp.Click("#signout"), chromedp.WaitVisible("#signin"))
	waitJS(t, ctx, "app hidden after sign-out", `document.querySelector("#app").hidden && document.querySelector("#app").childElementCount === 0`)
	if n := fetchStatus(t, ctx, "GET", "/api/status", "{}", "undefined"); n != http.StatusUnauthorized {
		t.Errorf("GET /api/status after sign-out: %d, want 401", n)
	}
	run(t, ctx, "reload after sign-out", chromedp.Reload(), chromedp.WaitVisible("#signin"))
}

// waitInventory waits until the server has read ep's firmware version.
func waitInventory(t *testing.T, s *server.Server, ep string) {
	t.Helper()
	waitfor.Until(t, 20*time.Second, func() error {
		if st, _ := s.DeviceStatus(ep); st.FirmwareVersion == "" || st.StateName == "" {
			return fmt.Errorf("%s: no inventory yet: %+v", ep, st)
		}
		return nil
	})
}

// signIn opens the console and signs in with the token.
func signIn(t *testing.T, ctx context.Context, f *fleet) {
	t.Helper()
	run(t, ctx, "sign in", chromedp.Navigate(f.api.URL+"/"), chromedp.WaitVisible("#signin"),
		chromedp.SendKeys("#token", testToken), chromedp.Click("#signin-form button"), chromedp.WaitVisible("#devices"))
	waitJS(t, ctx, "event stream open", `document.querySelector("#live").textContent === "live"`)
}

// TestConsoleCampaign uploads a package and runs a campaign from the
// console over four devices, one of which fails its upgrade, and watches
// it finish: counts by result, a progress bar per wave, the failed
// device's Result by name.
func TestConsoleCampaign(t *testing.T) {
	f := newFleet(t)
	ctx := browser(t)
	for i := range 4 {
		f.device(t, fmt.Sprintf("camp-%d", i), "1.0.0", &testFirmware{fail: i == 3})
	}
	for i := range 4 {
		waitInventory(t, f.s, fmt.Sprintf("camp-%d", i))
	}
	signIn(t, ctx, f)

	pkg := writePackage(t, 6<<10)
	run(t, ctx, "upload a package", chromedp.Click(`#nav a[data-view="packages"]`), chromedp.WaitVisible("#pkg-upload"),
		chromedp.SetUploadFiles("#pkg-file", []string{pkg}), chromedp.SendKeys("#pkg-name", "sensor-fw"),
		chromedp.Click("#pkg-upload button"))
	// A plain image: no version, no signature.
	waitJS(t, ctx, "package listed", `[...document.querySelectorAll("#packages tbody tr")].some(r => r.textContent.includes("sensor-fw") && r.textContent.includes("raw image") && r.textContent.includes("unsigned"))`)
	waitJS(t, ctx, "upload's answer shown", `document.querySelector("#pkg-msg").textContent.startsWith("Stored sensor-fw")`)

	run(t, ctx, "campaigns page", chromedp.Click(`#nav a[data-view="campaigns"]`), chromedp.WaitVisible("#camp-form"))
	waitJS(t, ctx, "package offered", `document.querySelector("#camp-package").options.length === 1 && document.querySelector("#camp-package").selectedOptions[0].textContent.startsWith("sensor-fw")`)
	// The campaign's page follows the engine through the event stream
	// alone: it never reloads or polls.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.notReloaded = true`)); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, "create a campaign",
		chromedp.SendKeys("#camp-name", "spring rollout"),
		chromedp.SetValue("#camp-endpoints", "camp-*"),
		chromedp.SetValue("#camp-method", "pull-coap"),
		chromedp.SetValue("#camp-canary", "1"),
		chromedp.SetValue("#camp-wave", "3"),
		chromedp.SetValue("#camp-concurrency", "4"),
		chromedp.SetValue("#camp-failure", "50"),
		chromedp.Click("#camp-form button"),
		chromedp.WaitVisible("#campaign"))
	waitJS(t, ctx, "campaign done, live", `document.querySelector("#campaign .c-state").textContent === "done" && window.notReloaded === true`)
	waitJS(t, ctx, "counts by result", `document.querySelector("#campaign .c-succeeded").textContent === "succeeded 3" && document.querySelector("#campaign .c-failed").textContent === "failed 1"`)
	waitJS(t, ctx, "failed device's Result by name", `(() => { const r = document.querySelector('#campaign-devices tr[data-endpoint="camp-3"]'); return r.querySelector(".fw-result").textContent === "Firmware update failed" && r.querySelector(".c-status").textContent === "failed"; })()`)
	waitJS(t, ctx, "the others succeeded", `[0, 1, 2].every(i => document.querySelector('#campaign-devices tr[data-endpoint="camp-' + i + '"] .fw-result').textContent === "Success")`)
	waitJS(t, ctx, "a progress bar per wave, canary first, and one per device", `document.querySelectorAll("#campaign-waves progress").length === 2 && document.querySelector('#campaign-waves [data-wave="0"]').textContent.startsWith("Canary") && document.querySelector('#campaign-waves [data-wave="1"] progress').value === 3 && document.querySelectorAll("#campaign-devices td.delivered progress").length === 4 && [...document.querySelectorAll("#campaign-devices td.delivered progress")].every(p => p.max > 0 && p.value === p.max)`)
	waitJS(t, ctx, "package by name", `document.querySelector("#campaign-package").textContent === "sensor-fw"`)
	if txt := pageText(ctx); strings.Contains(txt, "null") || strings.Contains(txt, "undefined") || strings.Contains(txt, "NaN") {
		t.Errorf("the campaign page shows a missing value:\n%s", txt)
	}
	screenshot(t, ctx, "campaign-done")
}
