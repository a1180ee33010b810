package httpapi

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// NewToken returns a fresh random bearer token for the API: 32 bytes
// from crypto/rand, base64url without padding.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("httpapi: API token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// ErrNoToken reports a token file that does not exist or holds no token.
var ErrNoToken = errors.New("httpapi: no API token")

// ReadToken reads the token that LoadOrCreateToken keeps in file.
func ReadToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: %s does not exist (is the server running, with the same token file?)%w", ErrNoToken, file, noError{err})
	}
	if err != nil {
		return "", fmt.Errorf("httpapi: API token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("%w: %s holds no token", ErrNoToken, file)
	}
	return tok, nil
}

// LoadOrCreateToken returns the token kept in file, or makes one and
// writes it there with mode 0600 (its directory, when created, 0700). An
// existing file readable by others is made private.
func LoadOrCreateToken(file string) (string, error) {
	tok, err := ReadToken(file)
	switch {
	case err == nil:
		if st, err := os.Stat(file); err == nil && st.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(file, 0o600); err != nil {
				return "", fmt.Errorf("httpapi: API token: %w", err)
			}
		}
		return tok, nil
	case errors.Is(err, os.ErrNotExist):
	case errors.Is(err, ErrNoToken):
		// An empty or broken file; only then remove what is there, not
		// a token another server has just made.
		if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("httpapi: API token: %w", err)
		}
	default:
		return "", err
	}
	return createToken(file)
}

// createToken writes a new token to file, unless another server has
// just done so: then it returns that one.
func createToken(file string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return "", fmt.Errorf("httpapi: API token: %w", err)
	}
	tok, err := NewToken()
	if err != nil {
		return "", err
	}
	// Write a temporary file, then link it into place: a reader never
	// sees half a token, and of two servers starting at once one wins.
	tmp, err := os.CreateTemp(filepath.Dir(file), ".api-token-*")
	if err != nil {
		return "", fmt.Errorf("httpapi: API token: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(tok + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("httpapi: API token: %w", err)
	}
	if err := os.Link(tmp.Name(), file); err != nil {
		if errors.Is(err, os.ErrExist) {
			return ReadToken(file)
		}
		// A file system without hard links: rename, which is atomic
		// but not exclusive.
		if err := os.Rename(tmp.Name(), file); err != nil {
			return "", fmt.Errorf("httpapi: API token: %w", err)
		}
	}
	return tok, nil
}

// noError wraps an error for errors.Is without adding to the message.
type noError struct{ err error }

func (e noError) Error() string { return "" }
func (e noError) Unwrap() error { return e.err }
