package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/lwm2m-fota/lwm2m/server/images"
)

// Image is a firmware package the server publishes for pull downloads at
// coap://HOST/fw/ID and, with HTTPAddr set, http://HOST/fw/ID.
type Image = images.Image

// imageStore returns the server's image store, creating it on first use:
// images may be published before Listen.
func (s *Server) imageStore() *images.Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.imageStoreLocked()
}

func (s *Server) imageStoreLocked() *images.Store {
	if s.imgs == nil {
		s.imgs = images.New(registeredIPs{s}, s.logger())
		s.imgs.StrictLoopback = s.strictLoopback
	}
	return s.imgs
}

// registeredIPs tells the image store the addresses of registrations,
// which may receive blocks without an Echo round trip.
type registeredIPs struct{ s *Server }

func (r registeredIPs) Registered(ip netip.Addr) bool {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.s.regIPs[ip] > 0
}

// Publish makes file available for pull downloads and returns its
// description. Publishing the same content twice returns the same ID; the
// image is served until every Publish has had its Unpublish.
// The file is kept open and read per block; it must not change while
// published.
func (s *Server) Publish(file string) (Image, error) {
	im, err := s.imageStore().Publish(file)
	if errors.Is(err, images.ErrClosed) {
		return Image{}, ErrClosed
	}
	return im, err
}

// Unpublish undoes one Publish of the image id; the last one stops
// serving it.
func (s *Server) Unpublish(id string) { s.imageStore().Unpublish(id) }

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
	return s.imageStore().Watch(id, ip, fn)
}

// ImageHandler returns an http.Handler that serves published images at
// /fw/{id}, with Range, If-Range and ETag support from http.ServeContent.
func (s *Server) ImageHandler() http.Handler { return s.imageStore().Handler() }

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

// hostIP returns the IP of a host:port address, unmapped.
func hostIP(addr string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return netip.Addr{}, false
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return netip.Addr{}, false
		}
		return ip.Unmap().WithZone(""), true
	}
	return ap.Addr().Unmap().WithZone(""), true
}

// trackAddrLocked indexes registration id at addr (delta +1) or drops it
// (-1), and counts the registrations at each IP: delta +1 when a
// registration takes addr, -1 when it leaves it.
func (s *Server) trackAddrLocked(id, addr string, delta int) {
	if s.byAddr == nil {
		s.byAddr = make(map[string]map[string]bool)
	}
	if delta > 0 {
		if s.byAddr[addr] == nil {
			s.byAddr[addr] = make(map[string]bool)
		}
		s.byAddr[addr][id] = true
	} else if ids := s.byAddr[addr]; ids != nil {
		delete(ids, id)
		if len(ids) == 0 {
			delete(s.byAddr, addr)
		}
	}
	ip, ok := hostIP(addr)
	if !ok {
		return
	}
	if s.regIPs == nil {
		s.regIPs = make(map[netip.Addr]int)
	}
	if n := s.regIPs[ip] + delta; n > 0 {
		s.regIPs[ip] = n
	} else {
		delete(s.regIPs, ip)
	}
}
