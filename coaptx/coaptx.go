// Package coaptx holds the CoAP transmission parameters of RFC 7252
// §4.8, shared by the LwM2M client (lwm2m.TxParams), the downloader
// (download.TxParams) and the server. It imports only the standard
// library, so that a package that needs the parameters does not pull in
// the LwM2M core.
package coaptx

import "time"

// Params are the CoAP transmission parameters of RFC 7252 §4.8. The zero
// value means the RFC's defaults.
type Params struct {
	AckTimeout      time.Duration // ACK_TIMEOUT, default 2 s
	AckRandomFactor float64       // ACK_RANDOM_FACTOR, default 1.5
	MaxRetransmit   int           // MAX_RETRANSMIT, default 4
}

// Defaults returns t with its zero fields set to RFC 7252's values.
func (t Params) Defaults() Params {
	if t.AckTimeout <= 0 {
		t.AckTimeout = 2 * time.Second
	}
	if t.AckRandomFactor < 1 {
		t.AckRandomFactor = 1.5
	}
	if t.MaxRetransmit <= 0 {
		t.MaxRetransmit = 4
	}
	return t
}

// MaxTransmitWait is how long a confirmable request may wait for its
// answer (RFC 7252 §4.8.2, MAX_TRANSMIT_WAIT).
func (t Params) MaxTransmitWait() time.Duration {
	t = t.Defaults()
	return time.Duration(float64(t.AckTimeout) * float64(int(1)<<(t.MaxRetransmit+1)-1) * t.AckRandomFactor)
}
