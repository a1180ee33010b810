package main

import (
	"context"
	"fmt"
	"io"
)

func runPack(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "lwm2m pack: not yet implemented")
	return 1
}

func runKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "lwm2m keygen: not yet implemented")
	return 1
}
