package console

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Files returns the console's static files: index.html at the root, with
// app.js and style.css beside it.
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return sub
}

// Handler serves the console's files. Give it to the server's API as
// httpapi.Config.Console, which adds the security headers and serves it
// on every path outside /api/.
func Handler() http.Handler {
	return http.FileServerFS(Files())
}
