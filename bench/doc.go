// Package bench holds the performance measurements of docs/PERFORMANCE.md.
// It has no API. run.sh compares the downloader (lwm2m download) with
// libcoap and curl on this machine; BenchmarkPush compares a push into
// the client with libcoap; TestScale runs a fleet of clients against
// "lwm2m server" (skipped under -short). helper holds the small
// servers run.sh needs; probes holds patches that instrument the code for
// one-off profiling and are not applied.
package bench
