// Package bootstrap is an LwM2M bootstrap server (LwM2M 1.1 Core §5.2,
// §6.1): it answers a device's Bootstrap-Request and writes the LwM2M
// server accounts and access control the device is to use. The program's
// "lwm2m server -bootstrap" runs one beside the LwM2M server;
// docs/SERVER.md describes both.
//
// # Life cycle
//
// A Server is configured through its fields, then started, as a
// server.Server:
//
//	cfg, err := bootstrap.LoadConfig("bs.json")
//	bs := &bootstrap.Server{Addr: "127.0.0.1:5783", Config: cfg}
//	if err := bs.Listen(); err != nil { ... } // bs.LocalAddr() is known
//	go bs.Serve(ctx)                           // until ctx ends or bs.Close()
//
// Addr serves plain CoAP, DTLSAddr CoAP over DTLS with the PSKs in PSKs
// (server.LoadPSKFile reads them; the handshake is package server/coaps's,
// the same as the LwM2M server's coaps port). Close stops the server and
// abandons the bootstraps under way.
//
// # A bootstrap
//
// A Bootstrap-Request, POST /bs?ep=EP&pct=FMT, for an endpoint with an
// entry in Config (or a Default one) is answered 2.04 Changed. Once the
// answer is sent, the server runs the entry over the same socket or DTLS
// session: Bootstrap-Delete of the entry's paths, Bootstrap-Write (PUT)
// of each Security (/0), Server (/1) and Access Control (/2) instance, in
// the device's preferred content format when it is SenML JSON or SenML
// CBOR and in TLV otherwise, then Bootstrap-Finish (POST /bs). The first
// request the device refuses or does not answer ends it.
//
// An unknown endpoint gets 4.00 Bad Request (Core Table 8.2.2-1), and so
// does an entry's endpoint that comes without its BootstrapIdentity. At
// most MaxConcurrent bootstraps run at once and one per endpoint; a
// request beyond gets 5.03 with Max-Age. Timeout and RequestTimeout bound
// how long a silent device holds its place.
//
// # History
//
// Every request, refused or not, becomes an Attempt in the History: the
// peer, the transport, each request sent with the device's answer, the
// outcome and the error, never a key. A History lives in memory or in a
// bbolt database (OpenHistory, on server.BoltStore's DB), bounded per
// endpoint and in endpoints. HistoryHandler serves it as JSON for
// httpapi.Config.Bootstrap.
//
// # Goroutines
//
// Serve runs go-coap's listeners; each admitted bootstrap runs on a
// goroutine of its own until it ends, at the latest at Timeout or Close.
// A History with a database writes it on one goroutine, in batches, until
// its Close.
package bootstrap
