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
package fwupdate
