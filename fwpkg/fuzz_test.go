package fwpkg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func fixCRC(data []byte) []byte {
	data = bytes.Clone(data)
	var n int
	for n = fixedLen; n <= len(data); {
		need, err := headerNeed(data[:n])
		if err != nil || need == n {
			break
		}
		n = need
	}
	if n > len(data) || n < fixedLen+crcLen {
		return data
	}
	binary.BigEndian.PutUint32(data[n-crcLen:], crc32.ChecksumIEEE(data[:n-crcLen]))
	return data
}

// FuzzVerifier feeds arbitrary bytes to a Verifier, whole and in chunks of
// the fuzzed size, and checks that it never panics, that every failure is
// one of the sentinels, that chunking does not change the outcome, and that
// an accepted package is exactly what ReadHeader and the payload say.
func FuzzVerifier(f *testing.F) {
	_, priv := testKey(f, 1)
	f.Add(pack(f, []byte("payload"), "fw", "1.0", nil), uint8(1))
	f.Add(pack(f, []byte("payload"), "fw", "1.0", priv), uint8(3))
	f.Add(pack(f, nil, "", "", nil), uint8(0))
	f.Add([]byte("LWM2MPKG\x01\x00\x00\x00"), uint8(5))
	f.Add([]byte("not a package"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		if chunk&0x80 != 0 {
			// Fix the header checksum, so that the fuzzer reaches the
			// checks behind it.
			data = fixCRC(data)
		}
		opts := VerifyOptions{MaxSize: 1 << 20}
		whole, wh, werr := verify(data, opts, chunkers[0])
		c := chunker{"fuzzed", func(n int) []int {
			k := max(int(chunk), 1)
			var s []int
			for ; n > 0; n -= min(n, k) {
				s = append(s, min(n, k))
			}
			return s
		}}
		parts, ph, perr := verify(data, opts, c)
		if werr != nil && !errors.Is(werr, ErrNotPackage) && !errors.Is(werr, ErrIntegrity) && !errors.Is(werr, ErrTooLarge) {
			t.Fatalf("error is not a sentinel: %v", werr)
		}
		if (werr == nil) != (perr == nil) || (werr != nil && werr.Error() != perr.Error()) {
			t.Fatalf("whole: %v; chunks of %d: %v", werr, chunk, perr)
		}
		if !bytes.Equal(whole, parts) {
			t.Fatalf("forwarded %d bytes whole, %d in chunks of %d", len(whole), len(parts), chunk)
		}
		if werr != nil {
			return
		}
		r := bytes.NewReader(data)
		rh, err := ReadHeader(r)
		if err != nil {
			t.Fatalf("Verifier accepted what ReadHeader rejects: %v", err)
		}
		if rh.Name != wh.Name || rh.Version != wh.Version || rh.Size != wh.Size || rh.SHA256 != wh.SHA256 ||
			!bytes.Equal(rh.Signature, wh.Signature) || ph.Name != wh.Name {
			t.Fatalf("headers differ: %+v, %+v", rh, wh)
		}
		if !bytes.Equal(whole, data[len(data)-r.Len():]) {
			t.Fatal("forwarded bytes are not the payload")
		}
		// An accepted package re-encodes to the same bytes.
		var buf bytes.Buffer
		if err := Write(&buf, bytes.NewReader(whole), rh, nil); err == nil && !rh.Signed() && !bytes.Equal(buf.Bytes(), data) {
			t.Fatal("re-encoding an accepted package gives different bytes")
		}
	})
}
