package main

import (
	"context"
	"fmt"
	"io"
)

func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "lwm2m client: not yet implemented")
	return 1
}
