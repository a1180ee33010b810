package server

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// NewAPIToken returns a fresh random bearer token for the API: 32 bytes
// from crypto/rand, base64url without padding.
func NewAPIToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("server: api token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// ErrNoToken reports a token file that does not exist or holds no token.
var ErrNoToken = errors.New("server: no API token")

// ReadAPIToken reads the token that LoadOrCreateAPIToken keeps in file.
func ReadAPIToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: %s does not exist (is the server running, with the same token file?)%w", ErrNoToken, file, noError{err})
	}
	if err != nil {
		return "", fmt.Errorf("server: api token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("%w: %s holds no token", ErrNoToken, file)
	}
	return tok, nil
}

// LoadOrCreateAPIToken returns the token kept in file, or makes one and
// writes it there with mode 0600 (its directory, when created, 0700). An
// existing file readable by others is made private.
func LoadOrCreateAPIToken(file string) (string, error) {
	tok, err := ReadAPIToken(file)
	switch {
	case err == nil:
		if st, err := os.Stat(file); err == nil && st.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(file, 0o600); err != nil {
				return "", fmt.Errorf("server: api token: %w", err)
			}
		}
		return tok, nil
	case errors.Is(err, os.ErrNotExist):
	case errors.Is(err, ErrNoToken):
		// An empty or broken file; only then remove what is there, not
		// a token another server has just made.
		if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("server: api token: %w", err)
		}
	default:
		return "", err
	}
	return createAPIToken(file)
}

// createAPIToken writes a new token to file, unless another server has
// just done so: then it returns that one.
func createAPIToken(file string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return "", fmt.Errorf("server: api token: %w", err)
	}
	tok, err := NewAPIToken()
	if err != nil {
		return "", err
	}
	// Write a temporary file, then link it into place: a reader never
	// sees half a token, and of two servers starting at once one wins.
	tmp, err := os.CreateTemp(filepath.Dir(file), ".api-token-*")
	if err != nil {
		return "", fmt.Errorf("server: api token: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(tok + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("server: api token: %w", err)
	}
	if err := os.Link(tmp.Name(), file); err != nil {
		if errors.Is(err, os.ErrExist) {
			return ReadAPIToken(file)
		}
		// A file system without hard links: rename, which is atomic
		// but not exclusive.
		if err := os.Rename(tmp.Name(), file); err != nil {
			return "", fmt.Errorf("server: api token: %w", err)
		}
	}
	return tok, nil
}

// noError wraps an error for errors.Is without adding to the message.
type noError struct{ err error }

func (e noError) Error() string { return "" }
func (e noError) Unwrap() error { return e.err }

// requireAuth wraps the API: a request needs the bearer token (401), a
// Host that names the API's own address (403, against DNS rebinding) and
// no Origin but the API's own (403, against cross-site requests).
func requireAuth(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="lwm2m server API"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong API token: send Authorization: Bearer TOKEN, with the token from the server's token file")
			return
		}
		if !ownHost(r) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("Host %q is not this API's address", r.Host))
			return
		}
		if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
			writeError(w, http.StatusForbidden, fmt.Sprintf("cross-origin request from %q refused", o))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ownHost reports whether r's Host header names the address the request
// came in on: that IP and port, or localhost or a loopback IP with the
// port when it came in on loopback. A name that merely resolves to the API
// (DNS rebinding) does not match.
func ownHost(r *http.Request) bool {
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	local, err := netip.ParseAddrPort(la.String())
	if err != nil {
		return false
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, "80"
	}
	if port != strconv.Itoa(int(local.Port())) {
		return false
	}
	loopback := local.Addr().IsLoopback()
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		ip = ip.Unmap()
		return ip == local.Addr().Unmap() || loopback && ip.IsLoopback()
	}
	return loopback && strings.EqualFold(host, "localhost")
}

// requireContentType checks a request body's media type: a JSON body sent
// as text/plain is what a cross-site form would send (415).
func requireContentType(w http.ResponseWriter, r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != want {
		writeError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type must be %s", want))
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
