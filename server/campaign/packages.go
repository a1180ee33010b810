package campaign

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/lwm2m-fota/lwm2m/fwpkg"
	"github.com/lwm2m-fota/lwm2m/internal/atomicfile"
)

// Signature statuses of a package.
const (
	SignatureValid      = "valid"      // signed by the engine's TrustedKey
	SignatureInvalid    = "invalid"    // signed by another key, or its hash or length is wrong
	SignatureUnsigned   = "unsigned"   // a package without a signature, or not an fwpkg package
	SignatureUnverified = "unverified" // signed, but the engine has no TrustedKey to check it
)

// Package is an uploaded firmware package.
type Package struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Version   string `json:"version"` // from the fwpkg header, "" for a raw image
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"` // of the whole file, as devices receive it
	Signature string `json:"signature"`
	// Format is "fwpkg" for a package in the format of
	// docs/PACKAGE_FORMAT.md, "raw" for any other image.
	Format  string    `json:"format"`
	Created time.Time `json:"created"`
}

const bucketPackages = "campaign-packages"

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// packageFile is where package id's bytes are kept.
func (e *Engine) packageFile(id string) string {
	return filepath.Join(e.cfg.Dir, id+".pkg")
}

// AddPackage stores the package read from r (at most the engine's
// MaxPackageSize bytes) under name, durably, and returns its record. The
// name defaults to the one in the package's header.
func (e *Engine) AddPackage(name string, r io.Reader) (Package, error) {
	if len(name) > 200 || !utf8.ValidString(name) {
		return Package{}, fmt.Errorf("%w: a package name is UTF-8 of at most 200 bytes", ErrInvalid)
	}
	p := Package{ID: newID(), Name: name, Created: e.now().UTC()}
	file := e.packageFile(p.ID)
	f, err := atomicfile.Create(file, 0o600)
	if err != nil {
		return Package{}, fmt.Errorf("campaign: storing package: %w", err)
	}
	defer f.Abort()
	sum := sha256.New()
	// plain checks the package's length and hash, signed its signature
	// when there is a key to check it with; head keeps the bytes the
	// header can be in, to name a package whose checks fail.
	plain := fwpkg.NewVerifier(io.Discard, fwpkg.VerifyOptions{})
	var signed *fwpkg.Verifier
	sinks := []io.Writer{f, sum, &stickyWriter{w: plain}}
	if e.cfg.TrustedKey != nil {
		signed = fwpkg.NewVerifier(io.Discard, fwpkg.VerifyOptions{TrustedKey: e.cfg.TrustedKey})
		sinks = append(sinks, &stickyWriter{w: signed})
	}
	head := &prefixWriter{max: 1024}
	sinks = append(sinks, head)
	limit := e.maxPackageSize()
	n, err := io.Copy(io.MultiWriter(sinks...), io.LimitReader(r, limit+1))
	switch {
	case err != nil:
		return Package{}, fmt.Errorf("campaign: receiving package: %w", err)
	case n > limit:
		return Package{}, fmt.Errorf("%w: larger than the server's limit of %d bytes (-max-package-size)", ErrTooLarge, limit)
	case n == 0:
		return Package{}, ErrEmptyPackage
	}
	p.Size = n
	p.SHA256 = hex.EncodeToString(sum.Sum(nil))
	p.Format, p.Signature = "raw", SignatureUnsigned
	h, herr := fwpkg.ReadHeader(bytes.NewReader(head.b))
	switch {
	case herr == nil:
		p.Format, p.Version = "fwpkg", h.Version
		if p.Name == "" {
			p.Name = h.Name
		}
		_, perr := plain.Close()
		switch {
		case perr != nil:
			p.Signature = SignatureInvalid
		case !h.Signed():
			p.Signature = SignatureUnsigned
		case signed == nil:
			p.Signature = SignatureUnverified
		default:
			if _, err := signed.Close(); err != nil {
				p.Signature = SignatureInvalid
			} else {
				p.Signature = SignatureValid
			}
		}
	case bytes.HasPrefix(head.b, []byte(fwpkg.Magic)) && errors.Is(herr, fwpkg.ErrIntegrity):
		// Our format, with a broken header.
		p.Format, p.Signature = "fwpkg", SignatureInvalid
	}
	if p.Name == "" {
		p.Name = p.ID
	}
	if err := f.Commit(); err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		return Package{}, fmt.Errorf("campaign: storing package: %w", err)
	}
	data, _ := json.Marshal(p)
	if err := e.store.PutRecords(bucketPackages, map[string][]byte{p.ID: data}); err != nil {
		os.Remove(file)
		return Package{}, fmt.Errorf("campaign: storing package record: %w", err)
	}
	e.mu.Lock()
	e.packages[p.ID] = p
	e.mu.Unlock()
	e.log.Info("package stored", "id", p.ID, "name", p.Name, "version", p.Version, "size", p.Size, "signature", p.Signature)
	return p, nil
}

// stickyWriter stops writing to w at its first error and never reports
// it: a package that fails verification is stored all the same, and
// marked.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (s *stickyWriter) Write(b []byte) (int, error) {
	if s.err == nil {
		_, s.err = s.w.Write(b)
	}
	return len(b), nil
}

// prefixWriter keeps the first max bytes written.
type prefixWriter struct {
	b   []byte
	max int
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if room := p.max - len(p.b); room > 0 {
		p.b = append(p.b, b[:min(room, len(b))]...)
	}
	return len(b), nil
}

// Packages returns the stored packages, newest first.
func (e *Engine) Packages() []Package {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Package, 0, len(e.packages))
	for _, p := range e.packages {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// loadPackages reads the package records and drops the files of uploads
// a crash cut short.
func (e *Engine) loadPackages() error {
	recs, err := e.store.Records(bucketPackages)
	if err != nil {
		return fmt.Errorf("campaign: loading packages: %w", err)
	}
	for id, data := range recs {
		var p Package
		if err := json.Unmarshal(data, &p); err != nil {
			e.log.Warn("package record does not decode", "id", id, "err", err)
			continue
		}
		if _, err := os.Stat(e.packageFile(p.ID)); err != nil {
			e.log.Warn("package file missing", "id", p.ID, "err", err)
			continue
		}
		e.packages[p.ID] = p
	}
	files, _ := filepath.Glob(filepath.Join(e.cfg.Dir, "*.pkg"))
	for _, f := range files {
		if _, ok := e.packages[strings.TrimSuffix(filepath.Base(f), ".pkg")]; !ok {
			os.Remove(f) // committed, but its record never was
		}
	}
	tmps, _ := filepath.Glob(filepath.Join(e.cfg.Dir, atomicfile.TempPattern("*.pkg")))
	for _, f := range tmps {
		os.Remove(f)
	}
	return nil
}
