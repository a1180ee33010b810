// Package servertest runs a server.Server and in-process LwM2M devices on
// loopback for the tests of the packages built on package server
// (server/httpapi, server/campaign, server/console). Package server's own
// tests cannot use it: it imports server.
package servertest
