package campaign_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/server"
	"github.com/lwm2m-fota/lwm2m/server/campaign"
)

func pack(t *testing.T, key []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	img := strings.NewReader("new firmware image")
	if _, err := fwpkg.Pack(&b, img, img.Size(), "sensor-fw", "1.4.0", key); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestPackages stores packages and names their signature status: with
// the engine's key, without one, unsigned, tampered, and raw images.
func TestPackages(t *testing.T) {
	pub, priv, err := fwpkg.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := fwpkg.GenerateKey(nil)
	signed, unsigned, foreign := pack(t, priv), pack(t, nil), pack(t, other)
	tampered := bytes.Clone(signed)
	tampered[len(tampered)-1] ^= 1
	raw := []byte("\x7fELF not a package")

	dir := t.TempDir()
	store := &server.MemoryStore{}
	withKey, err := campaign.New(campaign.Config{Server: &server.Server{}, Store: store, Dir: dir, TrustedKey: pub, MaxPackageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	noKey, err := campaign.New(campaign.Config{Server: &server.Server{}, Store: &server.MemoryStore{}, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		e        *campaign.Engine
		data     []byte
		sig, ver string
	}{
		{"signed, key", withKey, signed, campaign.SignatureValid, "1.4.0"},
		{"signed by another key", withKey, foreign, campaign.SignatureInvalid, "1.4.0"},
		{"tampered", withKey, tampered, campaign.SignatureInvalid, "1.4.0"},
		{"unsigned, key", withKey, unsigned, campaign.SignatureUnsigned, "1.4.0"},
		{"raw", withKey, raw, campaign.SignatureUnsigned, ""},
		{"signed, no key", noKey, signed, campaign.SignatureUnverified, "1.4.0"},
		{"tampered, no key", noKey, tampered, campaign.SignatureInvalid, "1.4.0"},
	} {
		p, err := tc.e.AddPackage("", bytes.NewReader(tc.data))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		sum := sha256.Sum256(tc.data)
		if p.Signature != tc.sig || p.Version != tc.ver || p.Size != int64(len(tc.data)) || p.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: %+v, want signature %s version %q", tc.name, p, tc.sig, tc.ver)
		}
		if tc.ver != "" && p.Name != "sensor-fw" {
			t.Errorf("%s: name %q, want the header's", tc.name, p.Name)
		}
		if got, err := os.ReadFile(filepath.Join(dir, p.ID+".pkg")); tc.e == withKey && (err != nil || !bytes.Equal(got, tc.data)) {
			t.Errorf("%s: stored %d bytes (%v)", tc.name, len(got), err)
		}
	}
	if _, err := withKey.AddPackage("big", bytes.NewReader(make([]byte, 1001))); !errors.Is(err, campaign.ErrTooLarge) {
		t.Errorf("1001 bytes over a limit of 1000: %v", err)
	}
	if _, err := withKey.AddPackage("empty", strings.NewReader("")); !errors.Is(err, campaign.ErrEmptyPackage) {
		t.Errorf("empty: %v", err)
	}
	if _, err := withKey.AddPackage("bad", io.MultiReader(strings.NewReader("abc"), errReader{})); err == nil {
		t.Error("a failed upload was stored")
	}
	// Only whole packages are kept, and they are known again after a restart.
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 5 {
		t.Errorf("files in the package directory: %v", files)
	}
	again, err := campaign.New(campaign.Config{Server: &server.Server{}, Store: store, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(again.Packages()); got != 5 {
		t.Errorf("%d packages after a restart, want 5", got)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// TestDamagedRecords loads records a crash or another version may have
// left: ones that do not decode, a device in a wave the campaign does not
// have, a campaign without its rollout's defaults. They are skipped or
// completed, never a panic.
func TestDamagedRecords(t *testing.T) {
	store := &server.MemoryStore{}
	store.PutRecords("campaigns", map[string][]byte{
		"c1":        []byte(`{"id":"c1","name":"old","state":"running","waves":[{"devices":1}],"deadline":"2999-01-01T00:00:00Z"}`),
		"c1/d/ep-1": []byte(`{"endpoint":"ep-1","wave":0,"status":"pending"}`),
		"c1/d/ep-2": []byte(`{"endpoint":"ep-2","wave":7,"status":"pending"}`),
		"c1/d/ep-3": []byte(`{not json`),
		"c2":        []byte(`{"id":"other"}`),
		"c3":        []byte(`[]`),
	})
	store.PutRecords("campaign-packages", map[string][]byte{"p1": []byte(`{"id":"p1"}`), "p2": []byte(`{`)})
	e, err := campaign.New(campaign.Config{Server: &server.Server{}, Store: store, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cs := e.Campaigns()
	if len(cs) != 1 || len(cs[0].Devices) != 1 || cs[0].Rollout.Concurrency != campaign.DefaultConcurrency ||
		*cs[0].Rollout.FailureThresholdPercent != campaign.DefaultFailureThreshold {
		t.Fatalf("loaded %+v", cs)
	}
	if len(e.Packages()) != 0 {
		t.Errorf("a package without its file was loaded: %+v", e.Packages())
	}
	if _, err := e.Pause("c1", ""); err != nil {
		t.Error(err)
	}
}
