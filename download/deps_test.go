package download

import (
	"os/exec"
	"strings"
	"testing"
)

// The downloader is usable without the LwM2M code: it depends on no
// package of the module but coaptx and internal helpers.
func TestDepsNoLwM2M(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		mod := "github.com/lwm2m-fota/lwm2m/"
		if !strings.HasPrefix(p, mod) {
			continue
		}
		switch rest := strings.TrimPrefix(p, mod); {
		case rest == "download", rest == "coaptx", strings.HasPrefix(rest, "internal/"):
		default:
			t.Errorf("download imports %s", p)
		}
	}
}
