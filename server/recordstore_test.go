package server

import (
	"path/filepath"
	"reflect"
	"testing"
)

// TestRecordStore writes, deletes and reads back records in both stores;
// the bbolt one keeps them across a reopen, apart from registrations.
func TestRecordStore(t *testing.T) {
	file := filepath.Join(t.TempDir(), "reg.db")
	bolt, err := OpenBoltStore(file)
	if err != nil {
		t.Fatal(err)
	}
	for name, st := range map[string]RecordStore{"memory": &MemoryStore{}, "bolt": bolt} {
		if got, err := st.Records("none"); err != nil || len(got) != 0 {
			t.Errorf("%s: an unwritten bucket holds %v (%v)", name, got, err)
		}
		if err := st.PutRecords("b", map[string][]byte{"k1": []byte("v1"), "k2": []byte("v2")}); err != nil {
			t.Fatal(err)
		}
		if err := st.PutRecords("b", map[string][]byte{"k1": nil, "k3": []byte("v3")}); err != nil {
			t.Fatal(err)
		}
		want := map[string][]byte{"k2": []byte("v2"), "k3": []byte("v3")}
		if got, err := st.Records("b"); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %q (%v), want %q", name, got, err, want)
		}
	}
	if regs, err := bolt.List(); err != nil || len(regs) != 0 {
		t.Errorf("records show as registrations: %v %v", regs, err)
	}
	bolt.Close()
	bolt, err = OpenBoltStore(file)
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	if got, _ := bolt.Records("b"); len(got) != 2 {
		t.Errorf("after a reopen: %q", got)
	}
}
