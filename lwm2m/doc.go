// Package lwm2m is an OMA LwM2M client (device side), versions 1.1 and
// 1.0, over CoAP on UDP (RFC 7252) and, with package coaps, DTLS 1.2.
//
// A Client holds one or several server accounts. It registers with each
// server, keeps the registrations alive with Registration Updates before
// their lifetimes end, and answers the servers' Read, Write, Execute,
// Create, Delete, Discover, Write-Attributes and Observe requests (and, in
// 1.1, the composite Read and Write) on the objects the application adds.
// It serves Security (/0), Server (/1) and Access Control (/2) itself from
// its Config; the Device object (/3) is in package objects and Firmware
// Update (/5) in package fwupdate.
//
// # Life cycle
//
//	c, err := lwm2m.New(lwm2m.Config{Endpoint: "dev-1", Server: "coap://host:5683"})
//	c.AddObject(objects.NewDevice(info))
//	c.AddObject(myObject)
//	err = c.Run(ctx)
//
// New checks the Config. AddObject may also be called while the client
// runs; the registration is then updated with the new object list. Run
// connects, registers and serves until ctx is done, then de-registers
// (within about a second, even when the server is gone) and returns nil.
// While the server is unreachable or refuses the registration, Run retries
// with jittered exponential backoff between Config.RetryMin and
// Config.RetryMax, logging every failure; it never gives up on its own.
// Config.Version selects LwM2M 1.1 (the default) or 1.0, which registers
// with lwm2m=1.0 and refuses the content formats and operations that only
// 1.1 defines.
//
// # Several servers and provisioning
//
// Config.Server is one account: Security /0/0 and Server /1/0, built from
// the Config's fields. Config.Provisioning instead gives the Security,
// Server and Access Control instances themselves, as records (a factory
// file or a bootstrap produce one; Client.Provisioning returns the
// current one, keys included, and a ProvisioningStore keeps one across
// restarts). Run keeps one session per Server instance /1/x whose Short
// Server ID (/1/x/0) matches a Security instance /0/y (/0/y/10) that is
// not a bootstrap server's (/0/y/1 false). Each session has its own
// connection, registration, lifetime and binding (from its /1/x),
// retries and backoff, observations, block-wise transfers, Registration
// Update Trigger and Disable; a server that is down never delays another.
// Registered means registered with at least one server; Servers reports
// each. Changed notifies the observers of every server, and WaitNotified
// waits for all of them.
//
// A coap:// account needs nothing more. For other schemes Config.Transport
// serves the account of Config.Server (coaps.Configure sets it), and
// Config.TransportFor returns the transport of any other account from its
// URI and credentials (coaps.TransportFor builds DTLS ones from the
// Security instance); an account without a transport is logged and left
// out, the others still register.
//
// Requests and notifications carry the Short Server ID of their server
// in their context: ShortServerID(ctx) tells an object who asks.
//
// # Bootstrap
//
// A device that starts with only a bootstrap server's account (a Security
// instance with Bootstrap-Server true, from Config.Bootstrap or
// Config.Provisioning; ReadFactoryFile reads a factory file) bootstraps
// before it registers (LwM2M 1.1 Core §6.1): Bootstrap-Request,
// then the server's Bootstrap-Write, -Read (/1 and /2 only), -Discover and
// -Delete on a staged copy of /0, /1, /2 and the objects of
// Config.BootstrapObjects, until Bootstrap-Finish. Finish checks the
// configuration (Provisioning.Validate) and answers 4.06 with the problems
// if it is inconsistent; otherwise it saves it in Config.ProvisioningStore
// (NewFileProvisioningStore: atomic, mode 0600) and only then answers 2.04.
// The client then registers with every LwM2M server it was given, and
// every later Run starts from the stored configuration: a device
// bootstraps once in its life. A bootstrap that has not finished
// Config.BootstrapTimeout (EXCHANGE_LIFETIME) after its request is given
// up on and asked again, with backoff. The client bootstraps again when a server executes
// Bootstrap-Request Trigger (/1/x/9), and when registration has failed
// with every server (the Communication Retry Count, /1/x/17, default 5)
// and Bootstrap on Registration Failure (/1/x/16, default true) allows.
// Only the bootstrap server, during a bootstrap, reaches /0. See
// docs/BOOTSTRAP.md.
//
// # Access control
//
// With one server account every operation is allowed, as LwM2M 1.1 Core §7
// says, unless an Access Control instance exists for the target. With
// several, a layer between request handling and the objects applies the
// rules of §7.3 before an object sees anything: the ACL of the target
// instance's Access Control instance (/2/z, resource 2: one resource
// instance per Short Server ID, bits R=1 W=2 E=4 D=8 C=16, resource
// instance 0 the default for servers without their own), the Access
// Control Owner (/2/z/3, every right unless its own ACL entry says
// otherwise), and C in the object-level instance (Object Instance ID
// 65535) for Create. Read, Observe and Write-Attributes need R, Write W,
// Execute E, Delete D; Discover needs some right on an instance and none
// on an object; a Read or Observe of a whole object returns the instances
// the server may read, and a notification is not sent to a server that
// may no longer read what it observes. A refusal is 4.01 Unauthorized.
// An instance a server creates gets an Access Control instance owned by
// that server, deleted with the instance. Security (/0) is never served
// to a server (4.01); Access Control instances are readable by all and
// writable by their owner only. One extension: without an Access Control
// instance, a server may read, write and execute its own Server instance.
//
// # Objects and optional interfaces
//
// An application adds an object by implementing Object: ID, Instances,
// Resources and Read. Everything else is optional and discovered by type
// assertion, the way net/http discovers an http.Flusher:
//
//   - Writer: the server may write resources.
//   - Executor: the object has executable resources.
//   - Creator and Deleter: the server may create and delete instances.
//   - Versioner: the object's version is not 1.0 (ver= in the registration).
//   - StreamWriter: the object takes large block-wise writes (RFC 7959
//     Block1) one block at a time through a Stream, as the Firmware Update
//     Package does, whether the server sends the value raw, in base64
//     (text/plain) or in a TLV. Without it a block-wise write is assembled
//     in memory up to Config.MaxAssembledWrite and handed to Writer.
//
// Static is a ready-made Object for constants, values the application
// sets, and executable resources backed by functions.
//
// Objects choose the CoAP response code by returning one of the errors
// ErrBadRequest, ErrNotFound, ErrMethodNotAllowed and so on, wrapped with
// %w to add detail; TooLargeError also tells the server the size it may
// send.
//
// # Observations and notifications
//
// When a value changes, the object (or the application) calls
// Client.Changed with its path; observers of that path, or of a path above
// or below it, are notified, respecting the pmin and pmax attributes.
// Notifications are Confirmable by default; Config.NonConfirmableNotifications
// sends them Non-confirmable with a Confirmable one at least every 24 hours
// (RFC 7641 §4.5), and the con attribute of Write-Attributes overrides this
// per path. Config.MaxObservations (default 64) caps the observations a
// server may hold; one beyond the cap gets 5.03. Client.WaitNotified waits
// until the notifications of changes already reported have been sent and,
// if Confirmable, acknowledged or given up on: Firmware Update uses it so
// that the server hears of Updating before the upgrade starts.
//
// # Queue mode, offline mode and Send
//
// Config.QueueMode registers in queue mode (LwM2M 1.1 Core §6.5: the Q
// parameter, or the binding UQ under 1.0). A session then closes its
// socket Config.QueueWindow (default MAX_TRANSMIT_WAIT) after its last
// exchange with its server, and its phase is "sleeping": a request from
// the server gets no answer (a DTLS session is kept, parked, rather than
// closed: no handshake at each wake). It wakes, on the same local port
// so that the server's observations go on, for the Registration Update its
// lifetime calls for, for a notification that became due, for Send, or
// when the application calls Wake; it sends the Update first, so that
// the server can deliver what it held back, then the notifications that
// waited, in the order they became due and each with the latest value
// of what it observes, and stays awake for the window again. A server
// whose Notification Storing (/1/x/6; true in a Config.Server account)
// is false gets no notification of what became due while the session
// slept: it is dropped, and wakes nothing.
//
// EnterOffline closes every session's socket (phase "offline") and
// pauses objects that implement Pauser (the pull download of Firmware
// Update); ExitOffline reconnects each session with an Update, sends the
// notifications held meanwhile (those a server's Notification Storing,
// /1/x/6, lets it keep; false drops them) and resumes the paused work
// where it stopped.
//
// Send and SendTo report current values to a server with the Send
// operation of LwM2M 1.1 (POST /dp, SenML CBOR or Config.SendFormat),
// through the Access Control layer, unless the server's Mute Send
// (/1/x/23) is true (ErrSendMuted); Send goes to the server of the
// first Server instance. Under LwM2M 1.0 they fail with ErrConfig.
//
// # Goroutines and concurrency
//
// Run owns every goroutine the client starts: per server, the
// connection's read loop, the registration loop and one goroutine per
// observation. When Run returns, the connections are closed and every
// observation cancelled; there is no Close, and a Client is stopped by
// ending ctx.
//
// Object methods may be called concurrently, by request handling and by
// the observation goroutines (Read), so an object must be safe for
// concurrent use. A Stream's Write may run in the connection's read loop:
// it must not wait for anything from the server, and no other datagram is
// read while it runs. Changed, UpdateRegistration, Registered, Servers,
// Provisioning, WaitNotified, AddObject, Wake, EnterOffline,
// ExitOffline, Send and SendTo may be called from any goroutine.
package lwm2m
