// Package server is a small LwM2M server for firmware updates: the
// registration interface, device management towards registered clients,
// image serving for pull downloads, and the Firmware Update procedure
// (/5) from package to outcome. The program's "lwm2m server" command is
// built on it; docs/SERVER.md describes both, and docs/SECURITY.md its
// limits.
//
// # Life cycle
//
// A Server is configured through its fields, then started:
//
//	s := &server.Server{Addr: ":5683", Store: store}
//	if err := s.Listen(); err != nil { ... } // binds; s.LocalAddr() is known
//	go s.Serve(ctx)                          // until ctx ends or s.Close()
//
// Listen binds the CoAP socket (and DTLSAddr, HTTPAddr and the CoAP image
// socket) and loads the registrations kept in Store; Serve answers until
// the server is closed, and returns nil then. Close is the one way a
// server stops; Serve calls it when ctx ends. It closes the sockets and
// published images, not the Store: the caller closes what it opened
// (OpenBoltStore or its own), after Close or once Serve returned.
//
// Devices register at /rd (LwM2M 1.1 Core §6.2, versions 1.0 and 1.1).
// Lifetimes are clamped to MaxLifetime, the number of endpoints is capped
// by MaxRegistrations (a new one beyond it gets 5.03 with Max-Age), and a
// registration expires when its lifetime plus Grace passes without an
// Update. Over DTLS (DTLSAddr, PSKs; the socket is package server/coaps's)
// an endpoint stays bound to the PSK identity it first registered with.
//
// # Talking to devices
//
// Read, Write, Execute, Create, Delete, Discover, WriteAttributes and
// Observe take the endpoint name and a path and run one exchange, bounded
// by ctx or RequestTimeout. A device's error keeps its CoAP code in a
// *CodeError; a device that does not answer gives a *TimeoutError.
//
// Update delivers a firmware package to one device by Method (PullCoAP,
// PullHTTP or Push), waits for Downloaded, executes Update (/5/0/2) and
// waits for the outcome, usually after the device restarted and
// registered again; UpdateMany does the same on every matching endpoint at
// once. Publish, Push and WatchImage are the parts it is built from.
//
// The HTTP/JSON command interface used by "lwm2m server -api", with its
// authentication and the web console's sign-in, is package
// server/httpapi, built on this package's exported API alone.
//
// # Fleet view and events
//
// With Inventory set, the server reads each device's firmware version and
// /5 State and Update Result after it registers; DeviceStatus returns them,
// kept current by the updates the server runs, and History a device's
// last registry and firmware events. Subscribe delivers an Event for each
// change (a hint to look again, never blocking the server); PublishEvent
// adds others', such as a campaign engine's. The console's live view is
// built on them (GET /api/events in package server/httpapi).
//
// # Queue mode and Send
//
// A device that registers in queue mode (the Q parameter of LwM2M 1.1, or
// a 1.0 binding such as "UQ") is taken to be awake for QueueWindow after
// it last sent anything, and asleep after that. Operations on a sleeping
// device, and the steps of Update, wait in its queue (at most MaxQueued,
// each until its ctx ends or QueueExpiry passes) and run in order once
// the device sends its next Update or Register; Asleep and Queued report
// its state. Devices report values with Send (POST /dp, SenML CBOR or
// JSON); the server keeps the latest per resource (Values) and calls
// OnSend with each Send's values.
//
// # Goroutines
//
// Serve runs the listeners' goroutines and the expiry of registrations;
// they end when it returns. Update, Push and the device operations block
// the caller until done and may be called concurrently. Callbacks (the
// progress functions, Observe's fn, WatchImage's fn, OnSend) may run on the
// server's own goroutines and must return quickly.
//
// # Packages around it
//
// Package server/coaps is the coaps socket (the DTLS handshake with PSKs)
// that this package and server/bootstrap, the bootstrap server, listen
// on. Package server/images holds the published images and serves them
// over CoAP (Block2, with the Echo check against amplification) and
// HTTP; this package creates one per Server, tells it which addresses
// are registered, and builds the URIs it writes to devices. On top of this package, using its exported API only, are
// server/campaign (firmware campaigns over a fleet) and server/httpapi
// (the HTTP API, which also serves server/console's web console and the
// campaigns' and bootstrap server's routes). This package imports none
// of them but server/coaps and server/images.
package server
