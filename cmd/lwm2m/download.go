package main

import (
	"context"
	"fmt"
	"io"
)

func runDownload(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "lwm2m download: not yet implemented")
	return 1
}
