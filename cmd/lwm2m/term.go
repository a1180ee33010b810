package main

import (
	"strconv"
	"unicode"
)

// termSafe returns s as is when every rune is printable, otherwise
// quoted in Go syntax: a device-provided newline cannot forge an output
// line, and no escape sequence or bidirectional control reaches the
// terminal.
func termSafe(s string) string {
	for _, r := range s {
		if r == unicode.ReplacementChar || (r != ' ' && !unicode.IsPrint(r)) {
			return strconv.QuoteToGraphic(s)
		}
	}
	return s
}
