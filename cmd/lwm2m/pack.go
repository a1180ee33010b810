package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/internal/atomicfile"
)

// runPack implements `lwm2m pack`: wrap a firmware image in a package
// (docs/PACKAGE_FORMAT.md), signed if a key is given.
func runPack(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lwm2m pack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "firmware image to package (required)")
	out := fs.String("out", "", "package file to write (required)")
	name := fs.String("name", "", "package name, reported as PkgName /5/6 (required, at most 255 bytes)")
	version := fs.String("version", "", "package version, reported as PkgVersion /5/7 (required, at most 255 bytes)")
	keyFile := fs.String("signing-key", "", "ed25519 private key (PKCS#8 PEM, as written by 'lwm2m keygen') to sign with; unsigned if empty")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: lwm2m pack -in IMAGE -out PACKAGE -name NAME -version VERSION [-signing-key KEY]

Wrap a firmware image in a package that devices verify before installing it:
a header with the name, version, length and SHA-256 of the image, signed with
-signing-key if given. The package is written atomically.

flags:
`)
		fs.PrintDefaults()
	}
	if code, done := packParse(fs, args, stdout); done {
		return code
	}
	for _, f := range []struct{ flag, val string }{{"in", *in}, {"out", *out}, {"name", *name}, {"version", *version}} {
		if f.val == "" {
			fmt.Fprintf(stderr, "lwm2m pack: -%s is required\n", f.flag)
			fs.Usage()
			return 2
		}
	}

	var key ed25519.PrivateKey
	if *keyFile != "" {
		data, err := os.ReadFile(*keyFile)
		if err != nil {
			fmt.Fprintf(stderr, "lwm2m pack: %v\n", err)
			return 1
		}
		if key, err = fwpkg.ParsePrivateKey(data); err != nil {
			fmt.Fprintf(stderr, "lwm2m pack: %s: %v\n", *keyFile, err)
			return 1
		}
	}

	src, err := os.Open(*in)
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m pack: %v\n", err)
		return 1
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m pack: %v\n", err)
		return 1
	}
	if !st.Mode().IsRegular() {
		fmt.Fprintf(stderr, "lwm2m pack: %s is not a regular file\n", *in)
		return 1
	}
	// The package is written atomically, so -out naming the image (by
	// any path) would replace the image with its own package.
	if ost, err := os.Stat(*out); err == nil && os.SameFile(st, ost) {
		fmt.Fprintf(stderr, "lwm2m pack: -in and -out are the same file (%s)\n", *out)
		return 2
	}

	var h fwpkg.Header
	err = packWriteAtomic(*out, 0o644, func(w io.Writer) error {
		var err error
		h, err = fwpkg.Pack(packCtxWriter{ctx, w}, src, st.Size(), *name, *version, key)
		return err
	})
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m pack: %v\n", err)
		return 1
	}
	signed := "unsigned"
	if h.Signed() {
		signed = "signed"
	}
	fmt.Fprintf(stdout, "%s: %s %s, %d bytes, sha256 %x, %s\n", *out, h.Name, h.Version, h.Size, h.SHA256, signed)
	return 0
}

// runKeygen implements `lwm2m keygen`: make an ed25519 key pair for
// `lwm2m pack -signing-key` and for devices to trust.
func runKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lwm2m keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "path prefix: writes PREFIX.key (private, mode 0600) and PREFIX.pub (required)")
	force := fs.Bool("force", false, "overwrite existing key files")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: lwm2m keygen -out PREFIX [-force]

Make an ed25519 key pair for signing firmware packages. PREFIX.key holds the
private key (PKCS#8 PEM, mode 0600), for 'lwm2m pack -signing-key'; PREFIX.pub
holds the public key (PKIX PEM), for devices to trust. Both are the formats
openssl reads and writes. Existing files are not overwritten without -force.

flags:
`)
		fs.PrintDefaults()
	}
	if code, done := packParse(fs, args, stdout); done {
		return code
	}
	if *out == "" {
		fmt.Fprintln(stderr, "lwm2m keygen: -out is required")
		fs.Usage()
		return 2
	}
	privFile, pubFile := *out+".key", *out+".pub"
	if !*force {
		for _, f := range []string{privFile, pubFile} {
			if _, err := os.Lstat(f); err == nil {
				fmt.Fprintf(stderr, "lwm2m keygen: %s exists; use -force to overwrite it\n", f)
				return 1
			}
		}
	}
	pub, priv, err := fwpkg.GenerateKey(nil)
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m keygen: %v\n", err)
		return 1
	}
	privPEM, err := fwpkg.MarshalPrivateKey(priv)
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m keygen: %v\n", err)
		return 1
	}
	pubPEM, err := fwpkg.MarshalPublicKey(pub)
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m keygen: %v\n", err)
		return 1
	}
	// The private key first: a public key without its private key is of no use.
	for _, f := range []struct {
		path string
		perm os.FileMode
		data []byte
	}{{privFile, 0o600, privPEM}, {pubFile, 0o644, pubPEM}} {
		err := packWriteAtomic(f.path, f.perm, func(w io.Writer) error {
			_, err := w.Write(f.data)
			return err
		})
		if err != nil {
			fmt.Fprintf(stderr, "lwm2m keygen: %v\n", err)
			return 1
		}
	}
	fmt.Fprintf(stdout, "wrote %s and %s\n", privFile, pubFile)
	return 0
}

// packParse parses flags that take no positional arguments.
func packParse(fs *flag.FlagSet, args []string, stdout io.Writer) (code int, done bool) {
	if code, done := parseFlags(fs, args, stdout); done {
		return code, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2, true
	}
	return 0, false
}

// packWriteAtomic writes path through fill so that path holds either its
// old content or the whole new content, never a part. A directory that
// cannot be synced (not every file system can) does not fail the command:
// the file is in place.
func packWriteAtomic(path string, perm os.FileMode, fill func(io.Writer) error) error {
	err := atomicfile.Write(path, perm, fill)
	if errors.Is(err, atomicfile.ErrSyncDir) {
		return nil
	}
	return err
}

// packCtxWriter stops a long write when ctx is cancelled (Ctrl-C).
type packCtxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c packCtxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
