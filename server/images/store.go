package images

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
)

// Image is a published firmware package, served at /fw/ID over CoAP and
// HTTP.
type Image struct {
	ID     string // the first 16 hex digits of the SHA-256
	File   string
	Size   int64
	SHA256 [32]byte
	ETag   []byte // the first 8 bytes of the SHA-256 (RFC 7252 5.10.6 allows up to 8)
}

// Errors returned by a Store.
var (
	ErrClosed       = errors.New("images: store closed")
	ErrNotPublished = errors.New("images: image not published")
)

// Peers tells a Store which addresses are registered devices': those may
// receive blocks without first returning an Echo.
type Peers interface {
	// Registered reports whether ip, unmapped and without a zone, is the
	// address of a current registration.
	Registered(ip netip.Addr) bool
}

// Store holds the published images and serves them. Create it with New.
type Store struct {
	peers  Peers
	logger *slog.Logger
	echo   *echoGate
	// StrictLoopback makes the Store verify loopback addresses like any
	// other (by default their datagrams are taken to come from this
	// host), so that tests on loopback can exercise the Echo. Set it
	// before serving.
	StrictLoopback bool

	mu     sync.Mutex
	images map[string]*image // by ID
	closed bool
}

// New returns an empty Store. peers may be nil (no address is
// registered); logger nil means slog.Default().
func New(peers Peers, logger *slog.Logger) *Store {
	return &Store{peers: peers, logger: logger, echo: newEchoGate(), images: make(map[string]*image)}
}

func (s *Store) log() *slog.Logger {
	if s.logger != nil {
		return s.logger
	}
	return slog.Default()
}

type image struct {
	Image
	f       *os.File
	modTime time.Time

	refs     int // Publish calls not yet matched by Unpublish
	mu       sync.Mutex
	watchers []*imageWatcher
}

// imageWatcher follows what the image servers send to one address.
type imageWatcher struct {
	ip     netip.Addr
	served int64 // the furthest end offset sent so far
	fn     func(served, total int64)
}

// Watch calls fn whenever the image servers (CoAP or HTTP) send part of
// the published image id to the address ip: served is the end of the
// furthest part sent so far, total the image's size. fn runs on the
// serving goroutine and must not block; it is not called once stop has
// returned.
func (s *Store) Watch(id string, ip netip.Addr, fn func(served, total int64)) (stop func(), err error) {
	im, ok := s.lookup(id)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotPublished, id)
	}
	w := &imageWatcher{ip: ip.Unmap().WithZone(""), fn: fn}
	im.mu.Lock()
	im.watchers = append(im.watchers, w)
	im.mu.Unlock()
	return func() {
		im.mu.Lock()
		defer im.mu.Unlock()
		for i, x := range im.watchers {
			if x == w {
				im.watchers = append(im.watchers[:i:i], im.watchers[i+1:]...)
				break
			}
		}
	}, nil
}

// served reports that the bytes up to end went to the address ip.
func (im *image) served(ip netip.Addr, end int64) {
	ip = ip.Unmap().WithZone("")
	// Calls under the lock: once stop returns, fn is not running.
	im.mu.Lock()
	defer im.mu.Unlock()
	for _, w := range im.watchers {
		if w.ip == ip && end > w.served {
			w.served = end
			w.fn(end, im.Size)
		}
	}
}

// servedReader is the ReadSeeker http.ServeContent reads an image
// through, reporting how far it got.
type servedReader struct {
	io.ReadSeeker
	im  *image
	ip  netip.Addr
	pos int64
}

func (r *servedReader) Seek(off int64, whence int) (int64, error) {
	n, err := r.ReadSeeker.Seek(off, whence)
	r.pos = n
	return n, err
}

func (r *servedReader) Read(p []byte) (int, error) {
	n, err := r.ReadSeeker.Read(p)
	r.pos += int64(n)
	if n > 0 {
		r.im.served(r.ip, r.pos)
	}
	return n, err
}

// Publish makes file available for pull downloads and returns its
// description. Publishing the same content twice returns the same ID; the
// image is served until every Publish has had its Unpublish.
// The file is kept open and read per block; it must not change while
// published.
func (s *Store) Publish(file string) (Image, error) {
	f, err := os.Open(file)
	if err != nil {
		return Image{}, fmt.Errorf("images: publish: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		f.Close()
		return Image{}, fmt.Errorf("images: publish %s: %w", file, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return Image{}, fmt.Errorf("images: publish %s: %w", file, err)
	}
	im := &image{f: f, modTime: st.ModTime(), refs: 1}
	copy(im.SHA256[:], h.Sum(nil))
	im.ID = hex.EncodeToString(im.SHA256[:8])
	im.ETag = append([]byte(nil), im.SHA256[:8]...)
	im.File, im.Size = file, n

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		f.Close()
		return Image{}, ErrClosed
	}
	if old, ok := s.images[im.ID]; ok {
		f.Close()
		old.refs++
		return old.Image, nil
	}
	s.images[im.ID] = im
	s.log().Info("image published", "id", im.ID, "file", file, "size", n)
	return im.Image, nil
}

// Unpublish undoes one Publish of the image id; the last one stops
// serving it.
func (s *Store) Unpublish(id string) {
	s.mu.Lock()
	im, ok := s.images[id]
	if ok {
		im.refs--
		ok = im.refs <= 0
	}
	if ok {
		delete(s.images, id)
	}
	s.mu.Unlock()
	if ok {
		im.f.Close()
	}
}

// Lookup returns the published image id.
func (s *Store) Lookup(id string) (Image, bool) {
	im, ok := s.lookup(id)
	if !ok {
		return Image{}, false
	}
	return im.Image, true
}

func (s *Store) lookup(id string) (*image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	im, ok := s.images[id]
	return im, ok
}

// Close withdraws every image and closes its file; Publish fails with
// ErrClosed from then on.
func (s *Store) Close() error {
	s.mu.Lock()
	imgs := s.images
	s.images, s.closed = nil, true
	s.mu.Unlock()
	for _, im := range imgs {
		im.f.Close()
	}
	return nil
}

// HandleCoAP answers a GET of /fw/{id} that came to a go-coap socket
// (a server's registration socket serves images too, for URIs written
// before it had an image socket) as Serve does; secure means over DTLS,
// whose handshake verified the peer's address.
func (s *Store) HandleCoAP(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message, secure bool) {
	if r.Type() != message.Confirmable {
		return // as on the image socket: no answer to a NON (see amplify.go)
	}
	var from netip.Addr
	if ua, ok := w.Conn().RemoteAddr().(*net.UDPAddr); ok {
		from = ua.AddrPort().Addr()
	}
	req := message.Message{Code: r.Code(), Options: r.Options()}
	var resp message.Message
	code, body := s.imageBlock(&req, &resp, make([]byte, 1024), make([]byte, imageOptBuf), from, secure)
	var rd io.ReadSeeker
	if body != nil {
		rd = bytes.NewReader(body)
	}
	if err := w.SetResponse(code, message.AppOctets, rd, resp.Options...); err != nil {
		s.log().Debug("image response", "err", err)
	}
}

// Handler returns an http.Handler that serves published images at
// /fw/{id}, with Range, If-Range and ETag support from http.ServeContent.
func (s *Store) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, "/fw/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		im, ok := s.lookup(id)
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"`+hex.EncodeToString(im.ETag)+`"`)
		w.Header().Set("Content-Type", "application/octet-stream")
		var rs io.ReadSeeker = io.NewSectionReader(im.f, 0, im.Size)
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			rs = &servedReader{ReadSeeker: rs, im: im, ip: ap.Addr()}
		}
		http.ServeContent(w, r, "", im.modTime, rs)
	})
}
