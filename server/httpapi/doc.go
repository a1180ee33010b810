// Package httpapi is the HTTP/JSON command interface of a server.Server:
// the routes that "lwm2m server -api" serves and the program's client
// subcommands (list, read, write, update, ...) call, documented in
// docs/SERVER.md.
//
// Handler puts every route under /api/ behind one check: a request needs
// the bearer token of Config.Token (LoadOrCreateToken keeps one in a
// file) or the session cookie of the web console's sign-in (POST
// /api/session) with, when it changes something, the session's CSRF
// header; and always a Host header naming the address it came in on and
// no foreign Origin. Only then does it reach a route, and through it the
// server. The console's static files, outside /api/, need only the Host
// and Origin checks.
//
// The package sits on top of the others: it uses package server's
// exported API only, serves the web console's static files (package
// server/console, Config.Console) and the routes of packages built on the
// server, such as campaigns (package server/campaign, Config.Routes) and
// the bootstrap history (package server/bootstrap, Config.Bootstrap).
// None of them imports it. The types Device, StatusEntry, Content,
// UpdateLine and the others are the wire format, shared with the
// program's client side.
package httpapi
