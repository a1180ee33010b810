// Package reliability tests the library end to end under faults: a lossy
// link, a SIGKILL at any instant, failing servers and hostile input. An
// image is delivered byte-exact or the device reports an honest failure, a
// crash leaves a true State, and nothing from the network crashes or
// wedges the client. It has no API; docs/RELIABILITY.md lists the tests
// and their measured figures.
package reliability
