package download

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lwm2m-fota/lwm2m/internal/dnstest"
	"github.com/lwm2m-fota/lwm2m/internal/syncbuf"
)

// A host name that does not exist is an invalid URI at once (Result 7),
// for every scheme, and is not retried.
func TestUnresolvableHost(t *testing.T) {
	nx, queries := dnstest.Resolver(dnstest.NXDomain)
	for _, uri := range []string{
		"coap://fw.nowhere.test/fw",
		"coaps://fw.nowhere.test/fw",
		"coap+tcp://fw.nowhere.test/fw",
		"coaps+tcp://fw.nowhere.test/fw",
		"http://fw.nowhere.test/fw",
		"https://fw.nowhere.test/fw",
	} {
		t.Run(strings.Split(uri, ":")[0], func(t *testing.T) {
			before := queries.Load()
			// A retry would wait an hour: the test's context ends first.
			req := Request{URI: uri, Resolver: nx, Security: testPSK, Retries: 3, RetryDelay: time.Hour, Timeout: 5 * time.Second}
			_, err := Get(getCtx(t), req, &memSink{})
			if !errors.Is(err, ErrUnresolvable) || !errors.Is(err, ErrInvalidURI) {
				t.Fatalf("err = %v, want ErrUnresolvable (an ErrInvalidURI)", err)
			}
			if queries.Load() == before {
				t.Error("the injected resolver was not asked")
			}
		})
	}
}

// A resolver that fails for now (SERVFAIL) is a lost connection: retried,
// then ErrConnection, never an invalid URI.
func TestTemporaryDNSFailureRetried(t *testing.T) {
	sf, queries := dnstest.Resolver(dnstest.ServFail)
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	req := Request{URI: "coap://fw.nowhere.test/fw", Resolver: sf, Retries: 1, RetryDelay: time.Millisecond, Logger: log}
	_, err := Get(getCtx(t), req, &memSink{})
	if !errors.Is(err, ErrConnection) || errors.Is(err, ErrInvalidURI) {
		t.Fatalf("err = %v, want ErrConnection", err)
	}
	if n := bytes.Count([]byte(logs.String()), []byte("download attempt")); n != 2 {
		t.Errorf("%d attempts, want 2 (one retry)", n)
	}
	if queries.Load() == 0 {
		t.Error("the injected resolver was not asked")
	}
}
