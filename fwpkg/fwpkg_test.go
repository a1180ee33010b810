package fwpkg

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// testKey is a fixed key so that failures are reproducible.
func testKey(t testing.TB, seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

func testPayload(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func pack(t testing.TB, payload []byte, name, version string, key ed25519.PrivateKey) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Pack(&buf, bytes.NewReader(payload), int64(len(payload)), name, version, key); err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return buf.Bytes()
}

// chunker splits a package into writes.
type chunker struct {
	name  string
	split func(n int) []int // chunk sizes summing to n
}

var chunkers = []chunker{
	{"whole", func(n int) []int { return []int{n} }},
	{"1byte", func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = 1
		}
		return s
	}},
	{"random", func(n int) []int {
		r := rand.New(rand.NewPCG(uint64(n), 1))
		var s []int
		for n > 0 {
			k := min(n, 1+r.IntN(97))
			s = append(s, k)
			n -= k
		}
		return s
	}},
}

// verify feeds pkg to a Verifier in the chunks c makes, stopping at the
// first Write error, and returns what it forwarded and Close's result.
func verify(pkg []byte, opts VerifyOptions, c chunker) ([]byte, Header, error) {
	var out bytes.Buffer
	v := NewVerifier(&out, opts)
	p := pkg
	for _, k := range c.split(len(pkg)) {
		if _, err := v.Write(p[:k]); err != nil {
			_, cerr := v.Close()
			if cerr != err {
				return out.Bytes(), Header{}, errors.New("Close error differs from Write error")
			}
			return out.Bytes(), Header{}, err
		}
		p = p[k:]
	}
	h, err := v.Close()
	return out.Bytes(), h, err
}

func TestRoundTrip(t *testing.T) {
	pub, priv := testKey(t, 1)
	for _, size := range []int{0, 1, 100, 4096, 100_003} {
		payload := testPayload(size)
		for _, signed := range []bool{false, true} {
			var key ed25519.PrivateKey
			var opts VerifyOptions
			if signed {
				key, opts.TrustedKey = priv, pub
			}
			pkg := pack(t, payload, "firmware-é", "1.2.3", key)
			for _, c := range chunkers {
				if size > 5000 && c.name == "1byte" {
					continue // slow under -race and adds nothing over 4096
				}
				got, h, err := verify(pkg, opts, c)
				if err != nil {
					t.Fatalf("size %d signed %v %s: %v", size, signed, c.name, err)
				}
				if !bytes.Equal(got, payload) {
					t.Fatalf("size %d signed %v %s: payload differs", size, signed, c.name)
				}
				if h.Name != "firmware-é" || h.Version != "1.2.3" || h.Size != int64(size) ||
					h.SHA256 != sha256.Sum256(payload) || h.Signed() != signed {
					t.Fatalf("size %d signed %v %s: header %+v", size, signed, c.name, h)
				}
				if h.Len()+size != len(pkg) {
					t.Fatalf("size %d signed %v: Len %d, package %d bytes", size, signed, h.Len(), len(pkg))
				}
			}
			// Without a trusted key, a signed package verifies as well.
			if _, _, err := verify(pkg, VerifyOptions{}, chunkers[0]); err != nil {
				t.Fatalf("size %d signed %v, no key: %v", size, signed, err)
			}
		}
	}
}

func TestEmptyFields(t *testing.T) {
	pkg := pack(t, []byte("x"), "", "", nil)
	_, h, err := verify(pkg, VerifyOptions{}, chunkers[1])
	if err != nil || h.Name != "" || h.Version != "" {
		t.Fatalf("got %+v, %v", h, err)
	}
}

func TestMaxLengthFields(t *testing.T) {
	name := string(bytes.Repeat([]byte("n"), MaxFieldLen))
	version := string(bytes.Repeat([]byte("v"), MaxFieldLen))
	pub, priv := testKey(t, 1)
	pkg := pack(t, []byte("x"), name, version, priv)
	if got, want := len(pkg)-1, maxHeaderLen; got != want {
		t.Fatalf("header is %d bytes, want maxHeaderLen %d", got, want)
	}
	_, h, err := verify(pkg, VerifyOptions{TrustedKey: pub}, chunkers[2])
	if err != nil || h.Name != name || h.Version != version {
		t.Fatalf("got %+v, %v", h, err)
	}
}

func TestWriteRejectsBadFields(t *testing.T) {
	long := string(bytes.Repeat([]byte("a"), MaxFieldLen+1))
	for _, h := range []Header{
		{Name: long},
		{Version: long},
		{Name: "\xff"},
		{Version: "a\xc0"},
		{Size: -1},
	} {
		if err := Write(io.Discard, bytes.NewReader(nil), h, nil); err == nil {
			t.Errorf("Write(%+v) succeeded", h)
		}
	}
	if err := Write(io.Discard, bytes.NewReader(nil), Header{}, ed25519.PrivateKey{1, 2}); err == nil {
		t.Error("Write with a short key succeeded")
	}
}

func TestWritePayloadMismatch(t *testing.T) {
	payload := []byte("hello, world")
	h := Header{Size: int64(len(payload)), SHA256: sha256.Sum256(payload)}
	if err := Write(io.Discard, bytes.NewReader(payload), h, nil); err != nil {
		t.Fatalf("exact payload: %v", err)
	}
	for name, p := range map[string][]byte{
		"short":     payload[:5],
		"long":      append(bytes.Clone(payload), '!'),
		"different": []byte("hello, World"),
	} {
		if err := Write(io.Discard, bytes.NewReader(p), h, nil); !errors.Is(err, ErrIntegrity) {
			t.Errorf("%s: got %v, want ErrIntegrity", name, err)
		}
	}
}

func TestPackShortReaderAt(t *testing.T) {
	if _, err := Pack(io.Discard, bytes.NewReader([]byte("abc")), 10, "n", "v", nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
}

func headerLen(t *testing.T, pkg []byte) int {
	t.Helper()
	r := bytes.NewReader(pkg)
	if _, err := ReadHeader(r); err != nil {
		t.Fatal(err)
	}
	return len(pkg) - r.Len()
}

func TestFailures(t *testing.T) {
	pub, priv := testKey(t, 1)
	otherPub, otherPriv := testKey(t, 2)
	payload := testPayload(1000)
	signed := pack(t, payload, "fw", "2.0", priv)
	unsigned := pack(t, payload, "fw", "2.0", nil)
	flip := func(pkg []byte, i int) []byte {
		p := bytes.Clone(pkg)
		p[i] ^= 0xff
		return p
	}
	tests := []struct {
		name string
		pkg  []byte
		opts VerifyOptions
		want error
	}{
		{"payload byte flipped", flip(unsigned, len(unsigned)-500), VerifyOptions{}, ErrIntegrity},
		{"signed payload byte flipped", flip(signed, len(signed)-1), VerifyOptions{TrustedKey: pub}, ErrIntegrity},
		{"wrong key", signed, VerifyOptions{TrustedKey: otherPub}, ErrIntegrity},
		{"signed by another key", pack(t, payload, "fw", "2.0", otherPriv), VerifyOptions{TrustedKey: pub}, ErrIntegrity},
		{"unsigned when key required", unsigned, VerifyOptions{TrustedKey: pub}, ErrIntegrity},
		{"malformed trusted key", signed, VerifyOptions{TrustedKey: pub[:5]}, ErrIntegrity},
		{"truncated payload", signed[:len(signed)-1], VerifyOptions{TrustedKey: pub}, ErrIntegrity},
		{"truncated header", signed[:20], VerifyOptions{}, ErrIntegrity},
		{"empty", nil, VerifyOptions{}, ErrIntegrity},
		{"trailing byte", append(bytes.Clone(unsigned), 0), VerifyOptions{}, ErrIntegrity},
		{"not a package", []byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00"), VerifyOptions{}, ErrNotPackage},
		{"too large", signed, VerifyOptions{TrustedKey: pub, MaxSize: 999}, ErrTooLarge},
		{"too large unsigned", unsigned, VerifyOptions{MaxSize: 1}, ErrTooLarge},
	}
	// Every header byte: the magic, format version and signature
	// algorithm say what the bytes are; the rest is covered by the header
	// checksum.
	for _, pkg := range [][]byte{signed, unsigned} {
		for i := range headerLen(t, pkg) {
			want := ErrIntegrity
			if i < fixedLen-1 {
				want = ErrNotPackage
			}
			tests = append(tests, struct {
				name string
				pkg  []byte
				opts VerifyOptions
				want error
			}{"header byte flipped", flip(pkg, i), VerifyOptions{}, want})
		}
	}
	for _, tt := range tests {
		for _, c := range chunkers {
			got, _, err := verify(tt.pkg, tt.opts, c)
			if !errors.Is(err, tt.want) {
				t.Errorf("%s (%d bytes, %s): got %v, want %v", tt.name, len(tt.pkg), c.name, err, tt.want)
			}
			if tt.want != ErrIntegrity && len(got) != 0 {
				t.Errorf("%s (%s): %d payload bytes forwarded before the header was rejected", tt.name, c.name, len(got))
			}
		}
	}
}

func TestSentinelsAreDistinct(t *testing.T) {
	errs := []error{ErrNotPackage, ErrIntegrity, ErrTooLarge}
	for i, a := range errs {
		for j, b := range errs {
			if i != j && errors.Is(a, b) {
				t.Errorf("%v is %v", a, b)
			}
		}
	}
}

func TestHeaderRejectedBeforePayload(t *testing.T) {
	pub, priv := testKey(t, 1)
	otherPub, _ := testKey(t, 2)
	pkg := pack(t, testPayload(100), "fw", "1", priv)
	hl := headerLen(t, pkg)
	for _, opts := range []VerifyOptions{{TrustedKey: otherPub}, {TrustedKey: pub, MaxSize: 10}} {
		var out bytes.Buffer
		v := NewVerifier(&out, opts)
		n, err := v.Write(pkg)
		if err == nil || n != hl || out.Len() != 0 {
			t.Errorf("%+v: Write = %d, %v, forwarded %d; want %d, error, 0", opts, n, err, out.Len(), hl)
		}
		if _, ok := v.Header(); ok {
			t.Errorf("%+v: Header reported a rejected header", opts)
		}
	}
}

func TestBadMagicFirstByte(t *testing.T) {
	v := NewVerifier(io.Discard, VerifyOptions{})
	if _, err := v.Write([]byte("X")); !errors.Is(err, ErrNotPackage) {
		t.Fatalf("got %v, want ErrNotPackage at the first byte", err)
	}
}

func TestTrailingBytesForwardsPayloadOnly(t *testing.T) {
	payload := []byte("payload")
	pkg := append(pack(t, payload, "a", "b", nil), "junk"...)
	var out bytes.Buffer
	v := NewVerifier(&out, VerifyOptions{})
	n, err := v.Write(pkg)
	if !errors.Is(err, ErrIntegrity) || n != len(pkg)-4 || out.String() != "payload" {
		t.Fatalf("Write = %d, %v, forwarded %q", n, err, out.String())
	}
}

type failWriter struct{ err error }

func (w failWriter) Write(p []byte) (int, error) { return 0, w.err }

func TestPayloadWriterError(t *testing.T) {
	errFull := errors.New("disk full")
	pkg := pack(t, []byte("abc"), "a", "b", nil)
	v := NewVerifier(failWriter{errFull}, VerifyOptions{})
	if _, err := v.Write(pkg); !errors.Is(err, errFull) || errors.Is(err, ErrIntegrity) {
		t.Fatalf("Write: got %v, want the writer's error", err)
	}
	if _, err := v.Close(); !errors.Is(err, errFull) {
		t.Fatalf("Close: got %v", err)
	}
}

func TestWriteAfterClose(t *testing.T) {
	pkg := pack(t, []byte("abc"), "a", "b", nil)
	v := NewVerifier(io.Discard, VerifyOptions{})
	v.Write(pkg)
	if _, err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Write([]byte{1}); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	if _, err := v.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestReadHeader(t *testing.T) {
	_, priv := testKey(t, 1)
	payload := []byte("the payload")
	pkg := pack(t, payload, "name", "ver", priv)
	r := bytes.NewReader(pkg)
	h, err := ReadHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != "name" || h.Version != "ver" || h.Size != int64(len(payload)) || !h.Signed() {
		t.Fatalf("header %+v", h)
	}
	rest, _ := io.ReadAll(r)
	if !bytes.Equal(rest, payload) {
		t.Fatalf("reader left at %q, want the payload", rest)
	}
	// One byte at a time: ReadHeader must not read past the header.
	r2 := bytes.NewReader(pkg)
	if _, err := ReadHeader(io.MultiReader(oneByteReader{r2})); err != nil || r2.Len() != len(payload) {
		t.Fatalf("one byte reader: %v, %d left", err, r2.Len())
	}

	if _, err := ReadHeader(bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("empty: got %v, want io.EOF", err)
	}
	if _, err := ReadHeader(bytes.NewReader(pkg[:30])); !errors.Is(err, ErrIntegrity) {
		t.Errorf("truncated: got %v, want ErrIntegrity", err)
	}
	if _, err := ReadHeader(bytes.NewReader([]byte("LWM2MPKX"))); !errors.Is(err, ErrNotPackage) {
		t.Errorf("bad magic: got %v, want ErrNotPackage", err)
	}
	if _, err := ReadHeader(bytes.NewReader([]byte("LW"))); !errors.Is(err, ErrIntegrity) {
		t.Errorf("short magic: got %v, want ErrIntegrity", err)
	}
}

type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}
