package lwm2m_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/lwm2m"
	"github.com/lwm2m-fota/lwm2m/lwm2m/model"
)

// sampleProvisioning is a bootstrap account and one LwM2M server with PSK.
func sampleProvisioning() lwm2m.Provisioning {
	return lwm2m.Provisioning{Records: []model.Record{
		{Path: model.NewPath(0, 0, 0), Value: model.String("coap://127.0.0.1:5783")},
		{Path: model.NewPath(0, 0, 1), Value: model.Bool(true)},
		{Path: model.NewPath(0, 0, 2), Value: model.Int(3)},
		{Path: model.NewPath(0, 1, 0), Value: model.String("coaps://127.0.0.1:5684")},
		{Path: model.NewPath(0, 1, 1), Value: model.Bool(false)},
		{Path: model.NewPath(0, 1, 2), Value: model.Int(0)},
		{Path: model.NewPath(0, 1, 3), Value: model.Opaque([]byte("dev-1"))},
		{Path: model.NewPath(0, 1, 5), Value: model.Opaque([]byte{0, 1, 2, 0xff})},
		{Path: model.NewPath(0, 1, 10), Value: model.Int(101)},
		{Path: model.NewPath(1, 0, 0), Value: model.Int(101)},
		{Path: model.NewPath(1, 0, 1), Value: model.Int(300)},
		{Path: model.NewPath(1, 0, 6), Value: model.Bool(false)},
		{Path: model.NewPath(1, 0, 7), Value: model.String("U")},
		{Path: model.NewPath(1, 0, 12), Value: model.Time(time.Unix(1700000000, 0))},
		{Path: model.NewPath(1, 0, 16), Value: model.Bool(true)},
		{Path: model.NewPath(2, 0, 0), Value: model.Int(5)},
		{Path: model.NewPath(2, 0, 1), Value: model.Int(0)},
		{Path: model.NewPath(2, 0, 2, 0), Value: model.Int(1)},
		{Path: model.NewPath(2, 0, 2, 101), Value: model.Int(31)},
		{Path: model.NewPath(2, 0, 3), Value: model.Int(101)},
	}}
}

func equalProvisioning(a, b lwm2m.Provisioning) bool {
	if len(a.Records) != len(b.Records) {
		return false
	}
	for i := range a.Records {
		if !a.Records[i].Equal(b.Records[i]) {
			return false
		}
	}
	return true
}

func TestFileProvisioningStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state", "provisioning.json")
	s := lwm2m.NewFileProvisioningStore(path)
	if _, err := s.Load(ctx); !errors.Is(err, lwm2m.ErrNotProvisioned) {
		t.Fatalf("Load of a missing file: %v, want ErrNotProvisioned", err)
	}
	p := sampleProvisioning()
	if err := s.Save(ctx, p); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600: the file holds keys", st.Mode().Perm())
	}
	got, err := lwm2m.NewFileProvisioningStore(path).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !equalProvisioning(got, p) {
		t.Errorf("loaded %v, want %v", got.Records, p.Records)
	}
	// A second Save replaces the first whole, and leaves no temporary file.
	p2 := lwm2m.Provisioning{Records: p.Records[:3]}
	if err := s.Save(ctx, p2); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(ctx); err != nil || !equalProvisioning(got, p2) {
		t.Errorf("after the second Save: %v, %v", got.Records, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A file that exists but is damaged is an error that says so, never "not
// provisioned": the device must not bootstrap over it in silence.
func TestFileProvisioningStoreCorrupt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	if err := lwm2m.NewFileProvisioningStore(good).Save(ctx, sampleProvisioning()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"empty":     "",
		"truncated": string(data[:len(data)/2]),
		"flipped":   strings.Replace(string(data), `"101"`, `"102"`, 1),
		"version":   strings.Replace(string(data), `"version": 1`, `"version": 9`, 1),
		"garbage":   "\x00\x01not json",
	} {
		path := filepath.Join(dir, name+".json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := lwm2m.NewFileProvisioningStore(path).Load(ctx)
		if !errors.Is(err, lwm2m.ErrCorruptProvisioning) || errors.Is(err, lwm2m.ErrNotProvisioned) {
			t.Errorf("%s: Load: %v, want ErrCorruptProvisioning", name, err)
		}
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Errorf("%s: the error does not name the file: %v", name, err)
		}
	}
}

// Keys never appear in the errors about a damaged file.
func TestFileProvisioningStoreErrorHidesValues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.json")
	content := `{"format":"lwm2m-provisioning","version":1,"sha256":"","records":[{"path":"/0/1/5","type":"opaque","value":"!!secret!!"}]}`
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := lwm2m.NewFileProvisioningStore(path).Load(context.Background())
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("Load: %v", err)
	}
}
