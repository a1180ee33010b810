package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
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

// Image is a firmware package the server publishes for pull downloads at
// coap://HOST/fw/ID and, with HTTPAddr set, http://HOST/fw/ID.
type Image struct {
	ID     string // the first 16 hex digits of the SHA-256
	File   string
	Size   int64
	SHA256 [32]byte
	ETag   []byte // the first 8 bytes of the SHA-256 (RFC 7252 5.10.6 allows up to 8)
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

// WatchImage calls fn whenever the image servers (CoAP or HTTP) send
// part of the published image id to ep's address, the IP it registered
// from: served is the end of the furthest part sent so far, total the
// image's size. Devices behind one IP address are not told apart. fn
// runs on the serving goroutine and must not block; it is not called
// once stop has returned.
func (s *Server) WatchImage(id, ep string, fn func(served, total int64)) (stop func(), err error) {
	reg, ok := s.Registration(ep)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotRegistered, ep)
	}
	ip, ok := hostIP(reg.Addr)
	if !ok {
		return nil, fmt.Errorf("server: address of %q: %q", ep, reg.Addr)
	}
	im, ok := s.lookupImage(id)
	if !ok {
		return nil, fmt.Errorf("server: image %s not published", id)
	}
	w := &imageWatcher{ip: ip, fn: fn}
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
func (s *Server) Publish(file string) (Image, error) {
	f, err := os.Open(file)
	if err != nil {
		return Image{}, fmt.Errorf("server: publish: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		f.Close()
		return Image{}, fmt.Errorf("server: publish %s: %w", file, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return Image{}, fmt.Errorf("server: publish %s: %w", file, err)
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
	if s.images == nil {
		s.images = make(map[string]*image)
	}
	if old, ok := s.images[im.ID]; ok {
		f.Close()
		old.refs++
		return old.Image, nil
	}
	s.images[im.ID] = im
	s.logger().Info("image published", "id", im.ID, "file", file, "size", n)
	return im.Image, nil
}

// Unpublish undoes one Publish of the image id; the last one stops
// serving it.
func (s *Server) Unpublish(id string) {
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

func (s *Server) lookupImage(id string) (*image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	im, ok := s.images[id]
	return im, ok
}

// handleImage serves GET /fw/{id} on the registration socket too, for
// URIs written before the image socket existed; serveImages does the work.
func (s *Server) handleImage(w *responsewriter.ResponseWriter[*udpclient.Conn], r *pool.Message, id string) {
	if r.Type() != message.Confirmable {
		return // as on the image socket: no answer to a NON (see amplify.go)
	}
	var from netip.Addr
	if ua, ok := w.Conn().RemoteAddr().(*net.UDPAddr); ok {
		from = ua.AddrPort().Addr()
	}
	req := message.Message{Code: r.Code(), Options: r.Options()}
	var resp message.Message
	code, body := s.imageBlock(&req, &resp, make([]byte, 1024), make([]byte, imageOptBuf), from, isSecure(w.Conn()))
	var rd io.ReadSeeker
	if body != nil {
		rd = bytes.NewReader(body)
	}
	if err := w.SetResponse(code, message.AppOctets, rd, resp.Options...); err != nil {
		s.logger().Debug("image response", "id", id, "err", err)
	}
}

// ImageHandler returns an http.Handler that serves published images at
// /fw/{id}, with Range, If-Range and ETag support from http.ServeContent.
func (s *Server) ImageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, "/fw/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		im, ok := s.lookupImage(id)
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

// imageURI returns the URI ep should fetch im from: scheme "coap" or "http".
func (s *Server) imageURI(ep string, im Image, scheme string) (string, error) {
	var port string
	switch scheme {
	case "coap":
		a := s.ImageLocalAddr()
		if a == nil {
			return "", ErrNotListening
		}
		_, port, _ = net.SplitHostPort(a.String())
	case "http":
		a := s.HTTPLocalAddr()
		if a == nil {
			return "", fmt.Errorf("server: no HTTP listener for %s pull (set HTTPAddr)", ep)
		}
		_, port, _ = net.SplitHostPort(a.String())
	default:
		return "", fmt.Errorf("server: scheme %q not served", scheme)
	}
	host, err := s.hostFor(ep, scheme)
	if err != nil {
		return "", err
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/fw/" + im.ID, nil
}

// hostFor picks the server address a device can reach: PublicHost, the
// bound address, the address the device registered to, or the local
// address on the route to the device.
func (s *Server) hostFor(ep, scheme string) (string, error) {
	if s.PublicHost != "" {
		return s.PublicHost, nil
	}
	var bound net.Addr
	if scheme == "http" {
		bound = s.HTTPLocalAddr()
	} else {
		bound = s.LocalAddr()
	}
	if h, _, err := net.SplitHostPort(bound.String()); err == nil {
		if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() {
			return h, nil
		}
	}
	reg, ok := s.Registration(ep)
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrNotRegistered, ep)
	}
	if h, _, err := net.SplitHostPort(reg.Local); err == nil {
		return h, nil
	}
	// Connecting a UDP socket only asks the kernel for a route; it sends
	// nothing.
	c, err := net.Dial("udp", reg.Addr)
	if err != nil {
		return "", fmt.Errorf("server: route to %s: %w", ep, err)
	}
	defer c.Close()
	h, _, _ := net.SplitHostPort(c.LocalAddr().String())
	return h, nil
}
