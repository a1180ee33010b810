package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDemo builds the program and runs "lwm2m demo" as a user would: a real
// device process is updated twice, its supervisor starting each new program.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the program and runs the whole demo")
	}
	bin := e2eBuild(t)
	out, err := exec.Command(bin, "demo").CombinedOutput()
	if err != nil {
		t.Fatalf("lwm2m demo: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{
		`device "demo-device" registered`,
		"wrote Package URI coap://127.0.0.1:",
		"State = 1 (Downloading)",
		"State = 2 (Downloaded)",
		"served 100%", // the pull, as the image server saw it
		"device restarted as v2.0 by its supervisor",
		"pushed 100%",
		"device restarted as v3.0 by its supervisor",
		"firmware 1.0 → 2.0 → 3.0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	if strings.Count(text, "Update Result 1 (Success)") != 2 {
		t.Errorf("want two successful updates:\n%s", text)
	}
}
