package fwpkg

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestKeyRoundTrip(t *testing.T) {
	pub, priv, err := GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, err := MarshalPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := MarshalPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	priv2, err := ParsePrivateKey(privPEM)
	if err != nil || !priv2.Equal(priv) {
		t.Fatalf("ParsePrivateKey: %v", err)
	}
	pub2, err := ParsePublicKey(pubPEM)
	if err != nil || !pub2.Equal(pub) {
		t.Fatalf("ParsePublicKey: %v", err)
	}
	if _, err := ParsePublicKey(privPEM); err == nil {
		t.Error("ParsePublicKey accepted a private key")
	}
	if _, err := ParsePrivateKey(pubPEM); err == nil {
		t.Error("ParsePrivateKey accepted a public key")
	}
	if _, err := ParsePrivateKey([]byte("not pem")); !errors.Is(err, errNoPEM) {
		t.Errorf("not PEM: got %v", err)
	}
}

func TestParseRejectsOtherAlgorithms(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	if _, err := ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err == nil {
		t.Error("ParsePrivateKey accepted an ECDSA key")
	}
	der, _ = x509.MarshalPKIXPublicKey(&k.PublicKey)
	if _, err := ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); err == nil {
		t.Error("ParsePublicKey accepted an ECDSA key")
	}
}

// TestOpenSSLInterop checks the key files and the signed-bytes definition in
// docs/PACKAGE_FORMAT.md against OpenSSL: a key made by openssl parses, and
// a header signed by `openssl pkeyutl -rawin` verifies.
func TestOpenSSLInterop(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("openssl not installed")
		}
		t.Fatal("openssl not installed")
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key.pem")
	run := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command(openssl, args...).Output()
		if err != nil {
			t.Fatalf("openssl %v: %v", args, err)
		}
		return out
	}
	run("genpkey", "-algorithm", "ed25519", "-out", keyFile)
	keyPEM, _ := os.ReadFile(keyFile)
	priv, err := ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatalf("ParsePrivateKey(openssl key): %v", err)
	}
	pub, err := ParsePublicKey(run("pkey", "-in", keyFile, "-pubout"))
	if err != nil {
		t.Fatalf("ParsePublicKey(openssl key): %v", err)
	}
	if !pub.Equal(priv.Public()) {
		t.Fatal("openssl's public key does not match its private key")
	}

	// Sign with Go, then replace the signature with openssl's over the
	// documented signed bytes, and fix the header checksum.
	payload := []byte("firmware")
	pkg := pack(t, payload, "fw", "1", priv)
	hl := headerLen(t, pkg)
	signedLen := hl - 64 - 4
	msgFile := filepath.Join(dir, "signed.bin")
	os.WriteFile(msgFile, pkg[:signedLen], 0o600)
	sig := run("pkeyutl", "-sign", "-rawin", "-inkey", keyFile, "-in", msgFile)
	if !bytes.Equal(sig, pkg[signedLen:signedLen+64]) {
		t.Fatal("openssl's signature over the signed bytes differs from ours (ed25519 is deterministic)")
	}
	if _, _, err := verify(pkg, VerifyOptions{TrustedKey: pub}, chunkers[0]); err != nil {
		t.Fatal(err)
	}
}
