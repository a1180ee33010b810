package images

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/lwm2m-fota/lwm2m/internal/coapopt"
)

// peerSet is the Peers of a test: the addresses in it are registered.
type peerSet map[netip.Addr]bool

func (p peerSet) Registered(ip netip.Addr) bool { return p[ip] }

// newTestStore returns a Store with a published image of n bytes.
func newTestStore(t testing.TB, peers Peers, n int) (*Store, Image) {
	t.Helper()
	s := New(peers, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { s.Close() })
	file := filepath.Join(t.TempDir(), "fw.bin")
	if err := os.WriteFile(file, make([]byte, n), 0o600); err != nil {
		t.Fatal(err)
	}
	im, err := s.Publish(file)
	if err != nil {
		t.Fatal(err)
	}
	return s, im
}

// fwGet is a confirmable GET of /fw/id with opts, which must come after
// Uri-Path (11) in option number order.
func fwGet(id string, opts ...message.Option) message.Message {
	o := message.Options{{ID: message.URIPath, Value: []byte("fw")}, {ID: message.URIPath, Value: []byte(id)}}
	return message.Message{Code: codes.GET, Type: message.Confirmable, Token: []byte{1}, Options: append(o, opts...)}
}

// block asks s for req from the address from, over plain UDP.
func block(s *Store, req message.Message, from netip.Addr) (codes.Code, message.Options, []byte) {
	resp := message.Message{Options: make(message.Options, 0, 8)}
	code, body := s.imageBlock(&req, &resp, make([]byte, 1024), make([]byte, imageOptBuf), from, false)
	return code, resp.Options, body
}

// The Store sends blocks to the addresses its Peers call registered and
// to those that returned its Echo; anyone else gets a 4.01 with an Echo
// (RFC 9175 §2.4).
func TestBlocksOnlyToVerifiedAddresses(t *testing.T) {
	dev, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	s, im := newTestStore(t, peerSet{dev: true}, 3000)
	if code, _, body := block(s, fwGet(im.ID), dev); code != codes.Content || len(body) != 1024 {
		t.Fatalf("registered address: %v with %d bytes, want 2.05 with 1024", code, len(body))
	}
	code, opts, _ := block(s, fwGet(im.ID), other)
	if code != codes.Unauthorized {
		t.Fatalf("unverified address: %v, want 4.01", code)
	}
	echo, err := opts.GetBytes(OptionEcho)
	if err != nil {
		t.Fatal("4.01 without an Echo")
	}
	// The Echo value is written into the caller's buffer: copy it.
	echo = append([]byte(nil), echo...)
	if code, _, _ := block(s, fwGet(im.ID, message.Option{ID: OptionEcho, Value: echo}), netip.MustParseAddr("192.0.2.3")); code != codes.Unauthorized {
		t.Errorf("another address's Echo: %v, want 4.01", code)
	}
	if code, _, _ := block(s, fwGet(im.ID, message.Option{ID: OptionEcho, Value: echo}), other); code != codes.Content {
		t.Errorf("with its Echo: %v, want 2.05", code)
	}
	if code, _, _ := block(s, fwGet(im.ID), other); code != codes.Content {
		t.Errorf("once verified: %v, want 2.05", code)
	}
}

// An image published twice is served until both Publishes are undone,
// and a closed Store publishes nothing.
func TestPublishCounts(t *testing.T) {
	s, im := newTestStore(t, nil, 100)
	again, err := s.Publish(im.File)
	if err != nil || again.ID != im.ID {
		t.Fatalf("second Publish: %v %v, want ID %s", again.ID, err, im.ID)
	}
	s.Unpublish(im.ID)
	if _, ok := s.Lookup(im.ID); !ok {
		t.Fatal("withdrawn after one of two Unpublish calls")
	}
	s.Unpublish(im.ID)
	if _, ok := s.Lookup(im.ID); ok {
		t.Fatal("still published after both Unpublish calls")
	}
	s.Close()
	if _, err := s.Publish(im.File); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
}

// Any datagram decoded as a request gets a code from the image port,
// never a panic, and a block only for a GET of a published image.
func FuzzImageRequest(f *testing.F) {
	s, im := newTestStore(f, nil, 3000)
	seed := func(opts ...message.Option) []byte {
		m := fwGet(im.ID, opts...)
		b, _ := coder.DefaultCoder.Encode(m, make([]byte, 256))
		out := make([]byte, b)
		coder.DefaultCoder.Encode(m, out)
		return out
	}
	bv, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, 2, false)
	f.Add(seed())
	f.Add(seed(coapopt.Uint(message.Block2, bv)))
	f.Add(seed(message.Option{ID: message.Block2, Value: []byte{0xff, 0xff, 0xff, 0xff}}))
	f.Add(seed(message.Option{ID: OptionEcho, Value: make([]byte, echoLen)}))
	payload := make([]byte, 1024)
	optBuf := make([]byte, imageOptBuf)
	from := netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, d []byte) {
		req := message.Message{Options: make(message.Options, 0, 32)}
		if _, err := coder.DefaultCoder.Decode(d, &req); err != nil {
			return
		}
		resp := message.Message{Options: make(message.Options, 0, 8)}
		for _, secure := range []bool{false, true} {
			code, body := s.imageBlock(&req, &resp, payload, optBuf, from, secure)
			if code == codes.Content && (req.Code != codes.GET || len(body) > 1024) {
				t.Fatalf("2.05 with %d bytes to %v", len(body), req.Code)
			}
			if code == codes.Content && !secure {
				t.Fatal("a block to an unverified address")
			}
		}
	})
}
