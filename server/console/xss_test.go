package console_test

import (
	"encoding/json"
	"net/url"
	"testing"

	"github.com/chromedp/chromedp"
)

// A hostile device's endpoint name and firmware version (markup, chosen
// by whoever registers over CoAP) show as text in the device list and on
// the device page: no element is made of them and no script runs.
func TestConsoleRendersDeviceDataAsText(t *testing.T) {
	f := newFleet(t)
	ctx := browser(t)
	const ep = `<img src=x onerror="window.__xss=1">`
	const version = `<svg onload="window.__xss=2">`
	f.device(t, ep, version, &testFirmware{})
	waitInventory(t, f.s, ep)

	run(t, ctx, "sign in", chromedp.Navigate(f.api.URL+"/"), chromedp.WaitVisible("#signin"),
		chromedp.SendKeys("#token", testToken), chromedp.Click("#signin-form button"), chromedp.WaitVisible("#devices"))
	waitJS(t, ctx, "the hostile row, as text", `[...document.querySelectorAll("#devices tr")].some(tr => tr.dataset.endpoint === `+jsString(ep)+
		` && (tr.querySelector(".fw-version") || {}).textContent === `+jsString(version)+`)`)
	waitJS(t, ctx, "no markup from device data in the list", `document.querySelectorAll("#devices img, #devices svg").length === 0 && window.__xss === undefined`)
	run(t, ctx, "open the device page", chromedp.Navigate(f.api.URL+"/#/device/"+url.PathEscape(ep)))
	waitJS(t, ctx, "the device page names it as text", `document.body.textContent.includes(`+jsString(ep)+`)`)
	waitJS(t, ctx, "no markup from device data on its page", `document.querySelectorAll("main img, main svg, #app img, #app svg").length === 0 && window.__xss === undefined`)
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
