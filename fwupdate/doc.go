// Package fwupdate is the LwM2M Firmware Update object (/5, version 1.1)
// for a client of package lwm2m: it receives a firmware package by push
// (block-wise Write to Package, /5/0/0) or pull (a Package URI, /5/0/1,
// fetched with package download over CoAP, CoAPS, CoAP over TCP, HTTP or
// HTTPS), keeps State and Update Result true across reboots, and hands the
// bytes to the application's Handlers. docs/FIRMWARE_UPDATE.md is the
// guide; the examples are in example_test.go.
//
// # Life cycle
//
// Object is an lwm2m.Object that also implements lwm2m.Writer,
// lwm2m.Executor, lwm2m.StreamWriter (a push arrives block by block, raw,
// base64 or TLV, never assembled in memory) and lwm2m.Versioner; the
// client finds them by type assertion. Install adds it to an
// lwm2m.Client, before or after Run starts:
//
//	obj, err := fwupdate.Install(c, handlers, fwupdate.Config{
//		Store: fwupdate.FileStore{Path: "/var/lib/fw/state.json"},
//	})
//	defer obj.Close()
//
// The module then calls the Handlers in this order, from one goroutine at
// a time:
//
//  1. StreamOpen when a package starts: on the first block of a push, or
//     on the first response of a pull, with its ETag.
//  2. StreamWrite once per block, push or pull, never with the whole image.
//  3. StreamFinish when the last byte has arrived: verify the package. The
//     State becomes Downloaded.
//  4. PerformUpgrade after the server executes Update (/5/0/2) and the
//     State is Updating. The module first waits (Client.WaitNotified,
//     bounded) until observers of State have been sent Updating and, if
//     the notification is Confirmable, have acknowledged it, so that a
//     server does not mistake a re-exec or reboot for a failure. An error
//     moves back to Downloaded with its Update Result; ErrDeferred retries
//     after the Maximum Defer Period (/5/0/13), if the server set one.
//  5. Reset whenever the package is dropped: a failed or cancelled
//     download, an empty Package or Package URI written, or a pull that
//     starts over.
//
// An error from a handler chooses the Update Result by the sentinel it
// wraps (ErrIntegrity, ErrNoSpace, ErrUnsupportedPackage, ...). Optional
// interfaces, found by type assertion on the Handlers, add what the five
// methods do not: Resumer (continue an interrupted pull at an offset),
// PackageInfo (package name and version), SecurityConfigurer,
// TxParamsProvider and TCPTimeouter (download settings per URI).
//
// # Persistence and SetResult
//
// Every change of State or Update Result, and the resume point of a pull
// at most once a second, is saved through Config.Store (FileStore writes
// it atomically; the default MemoryStore forgets it on exit). Install
// starts from what the Store (or Config.Initial) holds: an interrupted pull resumes, an
// interrupted push ends with Connection lost (4), and a device found in
// Updating has rebooted into the new firmware or back. The application
// then tells the module how the upgrade ended with Object.SetResult:
// Success moves to Idle, a failure back to Downloaded so that the image can
// be tried again. The same call reports an upgrade that PerformUpgrade
// started and returned from without finishing.
//
// # Goroutines and Close
//
// A pull runs on a goroutine of the module, started by the Package URI
// write or by Install; the upgrade runs on another, started by Update.
// During a push StreamWrite may run in the client connection's read loop:
// it must not wait for the server. Object.Close stops a running pull without changing the State,
// so that the next Install resumes it; call it when the client stops.
// Suspend and Reconnect pause and resume a pull around a planned loss of
// connectivity. The Object's methods are safe for concurrent use.
//
// # Firmware update with several servers
//
// A client with several LwM2M servers has one /5/0, not one per server:
// State, Update Result, the package being downloaded and the persisted
// state belong to the instance as a whole. Each server's observations
// are its own (lwm2m.Client keeps one set per server), so every server
// that observes State or Result is notified of each change, whoever
// caused it, and before Updating starts the module waits for the
// notifications of every server (Client.WaitNotified).
//
// Who may do what is the Access Control of /5/0 (/2 instance with Object
// ID 5, Object Instance ID 0): W starts an update (Package or Package URI,
// /5/0/0-1) and cancels one by writing an empty Package or URI; E executes
// Update (/5/0/2) and Cancel (/5/0/10); R reads and observes. Without an
// Access Control instance for /5/0 no server may touch it (4.01), except
// with a single server, which may do everything. A request without the
// right gets 4.01 and never reaches the module.
//
// Two servers that race: the first Package or Package URI write moves
// State to Downloading; a second one, from any server, gets 4.00 while
// State is Downloading or Downloaded (a block-wise push of another server
// is refused at its first block), so the update in progress is never mixed
// with another image; writes while Updating get 4.05. Update runs the image that is Downloaded, whichever
// server delivered it, and is 4.05 in any other State. An empty write or
// Cancel from any server with the right abandons the update in progress.
// A server that must own updates alone should be the only one granted W
// and E on /5/0.
package fwupdate
