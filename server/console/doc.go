// Package console is the web console of lwm2m server: a few static files
// (plain HTML, CSS and a little JavaScript, no framework, nothing fetched
// from elsewhere) embedded in the program, served on the API's address
// by httpapi.Config.Console.
//
// The console is a client of the server's HTTP API and nothing more. The
// operator signs in by pasting the API token (from the server's token
// file) into the sign-in page; POST /api/session then sets a session
// cookie (HttpOnly, SameSite=Strict, Secure over TLS) that names a random
// session ID, never the token, and returns the session's CSRF token,
// which the page sends in an X-CSRF-Token header with every request that
// changes something. Without a session the page shows only the sign-in
// form, and every /api route answers 401. GET /api/events, a stream of
// Server-Sent Events, tells the page what changed so that it refetches
// just that: device lists, a device's firmware progress, campaigns.
//
// The pages: devices (a live list with firmware version, /5 State and
// Update Result by name, address, transport, last seen and lifetime, with
// a filter and a search), a device (its objects and resources to read,
// write, execute and observe, its firmware update with a progress bar, and
// its history), packages (upload and list) and campaigns (create, watch
// each wave and device, pause, resume, abort). docs/CONSOLE.md shows them.
package console
