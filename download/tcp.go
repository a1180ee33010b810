package download

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/coapuri"
	"github.com/lwm2m-fota/lwm2m/internal/dtlsconf"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	tcpcoder "github.com/plgd-dev/go-coap/v3/tcp/coder"
)

// maxTCPMessage is the Max-Message-Size we advertise in our CSM
// (RFC 8323 §5.3.1): room for a 64 KiB BERT block plus options.
const maxTCPMessage = 64<<10 + 1024

// getCoAPTCP fetches a coap+tcp or coaps+tcp URI (RFC 8323) with Block2,
// using BERT when the peer's CSM offers block-wise transfer (§6).
func getCoAPTCP(ctx context.Context, u *url.URL, req *Request, t *transfer) error {
	conn, err := dialStream(ctx, u, req)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	c, err := newStreamClient(conn, u, req)
	if err != nil {
		return err
	}
	szx, err := c.handshake()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	req.Logger.Debug("coap+tcp CSM exchanged", "uri", req.URI, "bert", szx == bertSZX)
	err = runBlocks(ctx, c, szx, t)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func dialStream(ctx context.Context, u *url.URL, req *Request) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, req.Timeout)
	defer cancel()
	if u.Scheme == "coap+tcp" {
		d := net.Dialer{Resolver: req.Resolver}
		conn, err := d.DialContext(dctx, "tcp", coapuri.HostPort(u))
		if err != nil {
			return nil, transient(fmt.Errorf("download: dial %s: %w", u.Host, err))
		}
		return conn, nil
	}
	cfg := tlsConfig(u, req.Security)
	cfg.NextProtos = []string{"coap"} // ALPN id of RFC 8323 §4.3
	d := tls.Dialer{NetDialer: &net.Dialer{Resolver: req.Resolver}, Config: cfg}
	conn, err := d.DialContext(dctx, "tcp", coapuri.HostPort(u))
	if err != nil {
		return nil, dialTLSError(u, err)
	}
	return conn, nil
}

// tlsConfig builds the client TLS configuration from sec.
func tlsConfig(u *url.URL, sec *Security) *tls.Config {
	cfg := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
	if sec != nil {
		cfg.RootCAs = sec.RootCAs
		cfg.Certificates = sec.Certificates
		if sec.ServerName != "" {
			cfg.ServerName = sec.ServerName
		}
		if pin := sec.ServerCertificate; len(pin) > 0 {
			// The pin replaces chain and name checks, as over DTLS.
			cfg.InsecureSkipVerify = true
			cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
				return dtlsconf.VerifyPin(pin, raw)
			}
		}
	}
	return cfg
}

// dialTLSError classifies a TLS dial failure: handshake and certificate
// errors are final, plain network errors are worth a retry.
func dialTLSError(u *url.URL, err error) error {
	var (
		certErr  *tls.CertificateVerificationError
		alertErr tls.AlertError
		recErr   tls.RecordHeaderError
	)
	if errors.As(err, &certErr) || errors.As(err, &alertErr) || errors.As(err, &recErr) {
		return fmt.Errorf("%w: tls with %s: %w", ErrConnection, u.Host, err)
	}
	return transient(fmt.Errorf("download: dial %s: %w", u.Host, err))
}

// streamClient speaks CoAP over a reliable byte stream (RFC 8323 §3).
type streamClient struct {
	conn    net.Conn
	br      *bufio.Reader
	timeout time.Duration
	szx     uint32

	base     message.Options
	reqOpts  message.Options
	blockVal [3]byte
	out      []byte
	in       []byte
	msg      message.Message
	resp     response
	token    [8]byte
	seq      uint32
}

func newStreamClient(conn net.Conn, u *url.URL, req *Request) (*streamClient, error) {
	szx, err := szxOf(req.BlockSize)
	if err != nil {
		return nil, err
	}
	c := &streamClient{
		conn:    conn,
		br:      bufio.NewReaderSize(conn, 16<<10),
		timeout: req.Timeout,
		szx:     szx,
		out:     make([]byte, 2048),
		in:      make([]byte, maxTCPMessage+16),
	}
	c.msg.Options = make(message.Options, 0, 64)
	if c.base, err = uriOptions(u); err != nil {
		return nil, err
	}
	c.reqOpts = make(message.Options, 0, len(c.base)+2)
	if _, err := rand.Read(c.token[:]); err != nil {
		return nil, err
	}
	return c, nil
}

// handshake sends our CSM and reads the peer's, which must come first
// (RFC 8323 §5.3). It returns the block size exponent to use: BERT when
// the peer offers Block-Wise-Transfer.
func (c *streamClient) handshake() (uint32, error) {
	var sizeBuf [4]byte
	binary.BigEndian.PutUint32(sizeBuf[:], maxTCPMessage)
	csm := message.Message{
		Code: codes.CSM,
		Options: message.Options{
			{ID: message.TCPMaxMessageSize, Value: sizeBuf[:]},
			{ID: message.TCPBlockWiseTransfer},
		},
	}
	if err := c.send(csm); err != nil {
		return 0, err
	}
	if err := c.conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, transient(err)
	}
	for {
		if err := c.read(); err != nil {
			return 0, err
		}
		switch c.msg.Code {
		case codes.CSM:
			// The peer's Max-Message-Size limits what we send; our
			// requests are small, so only Block-Wise-Transfer matters.
			bwt := false
			for _, o := range c.msg.Options {
				if o.ID == message.TCPBlockWiseTransfer {
					bwt = true
				}
			}
			if bwt {
				return bertSZX, nil
			}
			return c.szx, nil
		case codes.Ping:
			if err := c.pong(); err != nil {
				return 0, err
			}
		case codes.Abort, codes.Release:
			return 0, transient(fmt.Errorf("download: peer sent %v before its CSM", c.msg.Code))
		default:
			return 0, fmt.Errorf("%w: first message from peer is %v, not CSM", ErrProtocol, c.msg.Code)
		}
	}
}

func (c *streamClient) send(m message.Message) error {
	n, err := tcpcoder.DefaultCoder.Encode(m, c.out)
	if err != nil {
		return fmt.Errorf("download: encode: %w", err)
	}
	if _, err := c.conn.Write(c.out[:n]); err != nil {
		return transient(fmt.Errorf("download: send: %w", err))
	}
	return nil
}

func (c *streamClient) pong() error {
	return c.send(message.Message{Code: codes.Pong, Token: c.msg.Token})
}

// read reads one frame into c.msg.
func (c *streamClient) read() error {
	frame, err := readFrame(c.br, c.in)
	if err != nil {
		if errors.Is(err, ErrProtocol) {
			return err
		}
		return transient(fmt.Errorf("download: receive: %w", err))
	}
	c.msg.Options = c.msg.Options[:0]
	c.msg.Token, c.msg.Payload = nil, nil
	if _, err := tcpcoder.DefaultCoder.Decode(frame, &c.msg); err != nil {
		return fmt.Errorf("%w: bad message: %w", ErrProtocol, err)
	}
	return nil
}

// readFrame reads one CoAP-over-TCP frame (RFC 8323 §3.2) into buf and
// returns it. A frame larger than buf is a protocol error.
func readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	b0, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	var ext int
	switch b0 >> 4 {
	case 13:
		ext = 1
	case 14:
		ext = 2
	case 15:
		ext = 4
	}
	tkl := int(b0 & 0x0f)
	if tkl > 8 {
		return nil, fmt.Errorf("%w: token length %d", ErrProtocol, tkl)
	}
	if len(buf) < 1+ext {
		return nil, fmt.Errorf("%w: buffer too small", ErrProtocol)
	}
	buf[0] = b0
	if _, err := io.ReadFull(r, buf[1:1+ext]); err != nil {
		return nil, err
	}
	var optLen uint64
	switch ext {
	case 0:
		optLen = uint64(b0 >> 4)
	case 1:
		optLen = 13 + uint64(buf[1])
	case 2:
		optLen = 269 + uint64(binary.BigEndian.Uint16(buf[1:3]))
	case 4:
		optLen = 65805 + uint64(binary.BigEndian.Uint32(buf[1:5]))
	}
	total := uint64(1+ext+1+tkl) + optLen
	if total > uint64(len(buf)) {
		return nil, fmt.Errorf("%w: message of %d bytes exceeds %d", ErrProtocol, total, len(buf))
	}
	if _, err := io.ReadFull(r, buf[1+ext:total]); err != nil {
		return nil, err
	}
	return buf[:total], nil
}

// exchange sends one GET for block num and waits for its response. TCP
// is reliable, so there is no retransmission; a stall is a timeout.
func (c *streamClient) exchange(ctx context.Context, num, szx uint32, first bool) (*response, error) {
	c.seq++
	binary.BigEndian.PutUint32(c.token[4:], c.seq)
	c.reqOpts = append(c.reqOpts[:0], c.base...)
	c.reqOpts = append(c.reqOpts, message.Option{ID: message.Block2, Value: encodeBlock(&c.blockVal, num, false, szx)})
	if first {
		c.reqOpts = append(c.reqOpts, message.Option{ID: message.Size2})
	}
	if err := c.send(message.Message{Token: c.token[:], Options: c.reqOpts, Code: codes.GET}); err != nil {
		return nil, err
	}
	if err := c.conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return nil, transient(err)
	}
	for {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err := c.read(); err != nil {
			return nil, err
		}
		m := &c.msg
		switch m.Code {
		case codes.Ping:
			if err := c.pong(); err != nil {
				return nil, err
			}
			continue
		case codes.Abort, codes.Release:
			return nil, transient(fmt.Errorf("download: peer sent %v", m.Code))
		}
		if !bytes.Equal(m.Token, c.token[:]) || m.Code>>5 < 2 || m.Code>>5 > 5 {
			continue
		}
		if err := parseResponse(m, &c.resp); err != nil {
			return nil, err
		}
		return &c.resp, nil
	}
}
