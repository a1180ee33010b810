package main

import (
	"context"
	"fmt"
	"io"
)

func runServer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "lwm2m server: not yet implemented")
	return 1
}
