// Package images publishes firmware packages and serves them for pull
// updates: over CoAP with Block2 (RFC 7959) and over HTTP with Range
// requests.
//
// A Store holds the published images, each kept open and read per block,
// counted so that the same content published twice is served until both
// publishers withdraw it. Store.Serve answers CoAP GETs of /fw/{id} on a
// socket of its own; Store.HandleCoAP answers them on a go-coap socket
// shared with other resources; Store.Handler serves HTTP. Watch reports
// how far the downloads to one address got.
//
// Blocks go only to addresses that may receive them (RFC 7252 §11.3): a
// registered device's, per the Peers the Store was given, or one that
// returned an Echo option (RFC 9175 §2.4).
//
// Package server creates one Store per Server, passes it the addresses of
// its registrations as Peers, listens for it, and builds the URIs it
// writes to devices from its own addresses; this package imports nothing
// of server.
package images
