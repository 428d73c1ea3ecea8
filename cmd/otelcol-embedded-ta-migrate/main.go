// Command otelcol-embedded-ta-migrate turns an OpenTelemetryCollector that
// runs with the OpenTelemetry Operator's Target Allocator into what runs the
// same scrape work with embedded-ta: the collector on otelcol-embedded-ta
// with the target_allocator extension and the prometheus_allocated
// receiver, the Role for the members' Leases and the RBAC that service
// discovery and prometheus_cr need.
//
//	otelcol-embedded-ta-migrate [-image IMAGE] [-namespace NS] [FILE | -]
//
// It reads YAML documents from FILE or stdin and prints the result on
// stdout; what it changes, drops or cannot carry over goes to stderr.
// Documents other than a v1beta1 OpenTelemetryCollector with
// spec.targetAllocator.enabled are printed unchanged; the input must hold at
// least one to migrate. On any error nothing is printed on stdout and the
// exit code is 1.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// defaultImage is the image `make` builds (the Makefile's IMAGE, set with
// -ldflags "-X main.defaultImage=..." by `make migrate`).
var defaultImage = "ghcr.io/embedded-ta/otelcol-embedded-ta:0.1.0"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is the command: arguments, input and outputs in, exit code out.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("otelcol-embedded-ta-migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.image, "image", defaultImage, "the collector image: otelcol-embedded-ta, or a distribution of your own with its two components")
	fs.StringVar(&o.namespace, "namespace", "", "the collector's namespace, when its metadata.namespace is not set (the ClusterRoleBindings and RoleBindings in other namespaces need it)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: otelcol-embedded-ta-migrate [-image IMAGE] [-namespace NS] [FILE | -]")
		fmt.Fprintln(stderr, "Prints the OpenTelemetryCollector of FILE (or stdin) without the operator's Target Allocator, with embedded-ta, and its RBAC.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return 2
	}

	input, name, err := readInput(fs.Arg(0), stdin)
	if err != nil {
		fmt.Fprintln(stderr, "otelcol-embedded-ta-migrate:", err)
		return 1
	}
	docs, notes, err := migrate(input, o)
	for _, n := range notes {
		fmt.Fprintln(stderr, n)
	}
	if err != nil {
		fmt.Fprintf(stderr, "otelcol-embedded-ta-migrate: %s: %v\n", name, err)
		return 1
	}
	var out bytes.Buffer
	if err := write(&out, docs); err != nil {
		fmt.Fprintln(stderr, "otelcol-embedded-ta-migrate:", err)
		return 1
	}
	if _, err := stdout.Write(out.Bytes()); err != nil {
		fmt.Fprintln(stderr, "otelcol-embedded-ta-migrate:", err)
		return 1
	}
	return 0
}

// readInput reads the file named by arg, or stdin when arg is "" or "-".
func readInput(arg string, stdin io.Reader) ([]byte, string, error) {
	if arg == "" || arg == "-" {
		b, err := io.ReadAll(stdin)
		return b, "stdin", err
	}
	b, err := os.ReadFile(arg)
	return b, arg, err
}
