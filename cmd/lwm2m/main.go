// Command lwm2m is the project's one program: an LwM2M device (client), a
// small FOTA server (server), a package builder (pack, keygen), a downloader
// (download) and a one-command demonstration of the whole flow (demo).
//
// Every subcommand takes Go-style flags (-flag value, --flag also works),
// prints its usage with -h, and exits 0 on success, 1 on failure and 2 on a
// usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// A command runs one subcommand. args excludes the subcommand's name.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{
	"client":   {"run an LwM2M device that updates itself", runClient},
	"server":   {"run a small LwM2M server that updates devices", runServer},
	"pack":     {"build a firmware package", runPack},
	"keygen":   {"make an ed25519 key pair for signing packages", runKeygen},
	"download": {"fetch a file over coap, coaps, coap+tcp, coaps+tcp, http or https", runDownload},
	"demo":     {"update a local device twice, by pull and by push, with no set-up", runDemo},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: lwm2m COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'lwm2m COMMAND -h' for a command's flags.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok && strings.HasPrefix(args[0], "-") {
		// "lwm2m -api URL server list": flags belong to a command.
		fmt.Fprintf(stderr, "lwm2m: flag %s before the command; flags go after it: lwm2m COMMAND [flags]\n", args[0])
		usage(stderr)
		return 2
	}
	if !ok {
		fmt.Fprintf(stderr, "lwm2m: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cmd.run(ctx, args[1:], stdout, stderr)
}

// parseFlags parses args into fs. -h prints the usage on stdout and ends
// with 0; a bad flag prints it on stderr and ends with 2.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (code int, done bool) {
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		stderr := fs.Output()
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(stderr)
		return 0, true
	case err != nil:
		fs.Usage() // after flag's own message
		return 2, true
	}
	return 0, false
}
