package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lwm2m-fota/lwm2m/download"
	"github.com/lwm2m-fota/lwm2m/internal/writeback"
)

// runDownload implements "lwm2m download URI -o FILE". A partial FILE is
// resumed when FILE.etag records the ETag it was fetched under. Exit codes:
// 0 done, 1 failed or interrupted (what arrived is kept for a rerun to
// resume), 2 usage.
func runDownload(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lwm2m download", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		out       = fs.String("o", "", "write the image to `FILE` (required); \"-\" for standard output")
		cred      = addCredFlags(fs, "(coaps)", "(coaps, coaps+tcp, https)")
		caFile    = fs.String("ca", "", "PEM `FILE` of CAs that sign the server's certificate (default: system roots)")
		blockSize = fs.Int("block-size", 1024, "CoAP block size, a power of two from 16 to 1024")
		retries   = fs.Int("retries", 3, "reconnect attempts after a lost connection")
		window    = fs.Int("window", 1, fmt.Sprintf("CoAP block requests in flight, 1 to %d", download.MaxWindow))
		timeout   = fs.Duration("timeout", 30*time.Second, "per-request timeout for TCP and HTTP, above 0")
		verbose   = fs.Bool("v", false, "log each attempt")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: lwm2m download URI -o FILE [flags]\n\nSchemes: %s\n\nFlags:\n", strings.Join(download.Schemes(), ", "))
		fs.PrintDefaults()
		fmt.Fprintln(fs.Output(), "\nExit status: 0 done; 1 failed or interrupted (what arrived is kept when the\nserver gave an ETag, and the same command resumes it); 2 usage.")
	}
	// Flags may come before or after the URI.
	var uri string
	rest := args
	for {
		if code, done := parseFlags(fs, rest, stdout); done {
			return code
		}
		if fs.NArg() == 0 {
			break
		}
		if uri != "" {
			fmt.Fprintf(stderr, "lwm2m download: unexpected argument %q\n", fs.Arg(0))
			fs.Usage()
			return 2
		}
		uri, rest = fs.Arg(0), fs.Args()[1:]
	}
	if uri == "" || *out == "" {
		fmt.Fprintln(stderr, "lwm2m download: need a URI and -o FILE")
		fs.Usage()
		return 2
	}

	if err := checkDownloadArgs(uri, *blockSize, *window, *retries, *timeout); err != nil {
		fmt.Fprintf(stderr, "lwm2m download: %v\n", err)
		return 2
	}
	// Get's goroutine (logs, retries) and the progress goroutine both write.
	stderr = &lockedWriter{w: stderr}
	req := download.Request{URI: uri, BlockSize: *blockSize, Retries: *retries, Window: *window, Timeout: *timeout}
	if *verbose {
		req.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	req.OnRetry = func(err error, delay time.Duration) {
		fmt.Fprintf(stderr, "retrying in %v: %v\n", delay, err)
	}
	sec, err := dlSecurity(cred, *caFile)
	if err == nil && needsDTLSCredentials(uri, sec) {
		err = errors.New("a coaps URI needs -psk-identity and -psk-key, -cert and -key, -server-cert or -ca")
	}
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m download: %v\n", err)
		return 2
	}
	req.Security = sec

	sink, err := openFileSink(*out, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "lwm2m download: -o: %v\n", err)
		return 2
	}
	defer sink.close()
	if sink.held > 0 && len(sink.etag) > 0 {
		req.ETag, req.Offset = sink.etag, sink.held
		fmt.Fprintf(stderr, "resuming %s at %d bytes\n", *out, sink.held)
	}

	stopProgress := progress(stderr, sink)
	start := time.Now()
	res, err := download.Get(ctx, req, sink)
	stopProgress()
	if err == nil {
		err = sink.finish()
	}
	if err != nil {
		kept := sink.abandon()
		switch {
		case ctx.Err() != nil:
			fmt.Fprint(stderr, "lwm2m download: interrupted")
		default:
			fmt.Fprintf(stderr, "lwm2m download: %v", err)
		}
		if kept > 0 {
			fmt.Fprintf(stderr, "; %d bytes kept in %s: run the same command again to resume", kept, *out)
		}
		fmt.Fprintln(stderr)
		return 1
	}
	secs := time.Since(start).Seconds()
	fmt.Fprintf(stderr, "%s: %d bytes in %.2fs (%s/s)", *out, res.Bytes, secs, humanBytes(float64(res.Bytes)/max(secs, 1e-9)))
	if res.Resumed {
		fmt.Fprint(stderr, ", resumed")
	}
	if res.Restarts > 0 {
		fmt.Fprintf(stderr, ", restarted %d times", res.Restarts)
	}
	fmt.Fprintln(stderr)
	return 0
}

// checkDownloadArgs refuses what Get would reject or silently adjust.
func checkDownloadArgs(uri string, blockSize, window, retries int, timeout time.Duration) error {
	if err := download.CheckURI(uri); err != nil {
		return err
	}
	switch {
	case blockSize < 16 || blockSize > 1024 || blockSize&(blockSize-1) != 0:
		return fmt.Errorf("-block-size %d: want a power of two from 16 to 1024", blockSize)
	case window < 1 || window > download.MaxWindow:
		return fmt.Errorf("-window %d: want 1 to %d", window, download.MaxWindow)
	case retries < 0:
		return fmt.Errorf("-retries %d: want 0 or more", retries)
	case timeout <= 0:
		return fmt.Errorf("-timeout %v: want more than 0", timeout)
	}
	return nil
}

// needsDTLSCredentials reports a coaps URI with nothing to secure it: DTLS
// has no default trust as HTTPS and TLS have (the system roots).
func needsDTLSCredentials(uri string, sec *download.Security) bool {
	u, err := url.Parse(uri)
	if err != nil || !strings.EqualFold(u.Scheme, "coaps") {
		return false
	}
	return sec == nil || (len(sec.PSK) == 0 && len(sec.Certificates) == 0 && sec.RootCAs == nil && len(sec.ServerCertificate) == 0)
}

func dlSecurity(f credFlags, caFile string) (*download.Security, error) {
	if !f.set() && caFile == "" {
		return nil, nil
	}
	c, err := f.load()
	if err != nil {
		return nil, err
	}
	sec := &download.Security{PSKIdentity: string(c.pskID), PSK: c.psk, ServerCertificate: c.pin}
	if c.cert != nil {
		sec.Certificates = []tls.Certificate{*c.cert}
	}
	if caFile != "" {
		if sec.RootCAs, err = loadCAs(caFile); err != nil {
			return nil, fmt.Errorf("-ca: %w", err)
		}
	}
	return sec, nil
}

// fileSink writes the image to a file and records the ETag of the
// transfer in FILE.etag, so an interrupted download can be resumed. A
// FILE that is not a regular file (standard output as "-", /dev/null, a
// pipe) is written as a stream: it is neither resumed nor synced, and a
// transfer that has to start over after bytes went out fails instead.
// Blocks arrive one by one; they are gathered into writes of sinkBufSize.
type fileSink struct {
	f        *os.File // nil for standard output
	path     string
	w        *bufio.Writer
	stream   bool
	etagPath string
	created  bool  // the file did not exist before this run
	held     int64 // bytes present when opened
	etag     []byte
	written  atomic.Int64
	size     atomic.Int64
}

// errStreamRestart: the bytes already written to a stream cannot be taken back.
var errStreamRestart = errors.New("the transfer had to start over, and the output is a stream whose bytes cannot be taken back")

func openFileSink(path string, stdout io.Writer) (*fileSink, error) {
	s := &fileSink{}
	s.size.Store(-1)
	if path == "-" {
		s.w, s.stream = bufio.NewWriterSize(stdout, sinkBufSize), true
		return s, nil
	}
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		// Write-only, like a shell redirection: a pipe whose reader has
		// gone then fails the write (EPIPE) instead of filling up, and
		// opening a FIFO waits for its reader.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		s.f, s.w, s.stream = f, bufio.NewWriterSize(f, sinkBufSize), true
		return s, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	s.created = err == nil
	if errors.Is(err, os.ErrExist) {
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	s.f, s.path, s.etagPath = f, path, path+".etag"
	if etag, err := os.ReadFile(s.etagPath); err == nil && len(etag) > 0 {
		s.held, s.etag = fi.Size(), etag
	}
	return s, nil
}

func (s *fileSink) Open(_ context.Context, etag []byte, offset, size int64) error {
	if s.stream {
		if s.written.Load() != offset {
			return errStreamRestart
		}
		s.size.Store(size)
		return nil
	}
	if err := s.flush(); err != nil {
		return err
	}
	w, err := writeback.From(s.f, offset)
	if err != nil {
		return err
	}
	// Without an ETag a partial file cannot be resumed safely.
	if err := os.WriteFile(s.etagPath, etag, 0o644); err != nil {
		return err
	}
	if s.w == nil {
		s.w = bufio.NewWriterSize(w, sinkBufSize)
	} else {
		s.w.Reset(w)
	}
	s.written.Store(offset)
	s.size.Store(size)
	return nil
}

func (s *fileSink) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.written.Add(int64(n))
	return n, err
}

// flush writes out the blocks held.
func (s *fileSink) flush() error {
	if s.w == nil {
		return nil
	}
	return s.w.Flush()
}

// finish makes the file durable and drops the resume record.
func (s *fileSink) finish() error {
	if err := s.flush(); err != nil || s.stream {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return err
	}
	if err := os.Remove(s.etagPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// abandon ends a failed or interrupted download. It returns how many
// bytes stay for a rerun to resume: a file with bytes and a resume record.
// A file this run created that holds nothing resumable is removed, with
// its record; a file that was there before is left as it is.
func (s *fileSink) abandon() int64 {
	if s.stream {
		return 0
	}
	flushErr := s.flush()
	var size int64
	if fi, err := s.f.Stat(); err == nil {
		size = fi.Size()
	}
	etag, _ := os.ReadFile(s.etagPath)
	if flushErr == nil && size > 0 && len(etag) > 0 {
		return size
	}
	if s.created {
		s.f.Close()
		s.f, s.w = nil, nil
		os.Remove(s.path)
		os.Remove(s.etagPath)
	}
	return 0
}

func (s *fileSink) close() {
	// What arrived stays for a resume.
	s.flush()
	if s.f != nil {
		s.f.Close()
	}
}

// progress prints a line per second to w until the returned func is
// called, but only when bytes arrived: while the transfer waits or retries
// (which says why itself) a line of "0 B/s" would say nothing.
func progress(w io.Writer, s *fileSink) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last := s.written.Load()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				n := s.written.Load()
				if n == last {
					continue
				}
				if size := s.size.Load(); size > 0 {
					fmt.Fprintf(w, "%d / %d bytes (%.0f%%), %s/s\n", n, size, 100*float64(n)/float64(size), humanBytes(float64(n-last)))
				} else {
					fmt.Fprintf(w, "%d bytes, %s/s\n", n, humanBytes(float64(n-last)))
				}
				last = n
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// lockedWriter serialises writes from several goroutines; one Fprintf is
// one Write, so lines stay whole.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// sinkBufSize: a file sink makes one write(2) per 16 KiB, not one per block.
const sinkBufSize = 16 << 10

func humanBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}
