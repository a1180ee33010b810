// Package coaps opens the server side of CoAP over DTLS with pre-shared
// keys (LwM2M 1.1 Transport §5.2): a UDP socket that pion/dtls handshakes
// on and go-coap's DTLS server serves, shared by the LwM2M server's coaps
// port (package server) and the bootstrap server's (package
// server/bootstrap), so that both offer the same handshake.
//
// Listen fixes what every such port needs: the PSK cipher suites our
// client offers (CCM_8 first), the extended master secret (RFC 7627), a
// bound on the peers the socket keeps state for, and ClientHellos whose
// record-layer version pion would drop without a word (mbed TLS clients
// such as Anjay's; see listen.go). PSKIdentity tells a handler which
// identity a session authenticated with.
//
// The listener's read loop is its only goroutine; it ends with Close.
package coaps
