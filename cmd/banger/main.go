// Command banger is the CLI for disposable Linux microVMs.
package main

import (
	"os"

	"banger/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(cli.Main(version, os.Args[1:]))
}
