// Command bangerd is banger's daemon: it owns the store and the VMs and
// serves the API on a Unix socket under $XDG_RUNTIME_DIR/banger.
//
// `bangerd doctor [--probe]` instead checks the host (package doctor) and
// writes the report as JSON for `banger doctor`, which prints it: the
// checks read the store and the engines, which only bangerd links.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"banger/internal/daemon"
	"banger/internal/doctor"
	"banger/internal/paths"
	"banger/internal/store"
)

var version = "dev"

func main() {
	checkMigrations := flag.Bool("check-migrations", false, "verify the store's migrations against this binary and exit")
	debug := flag.Bool("debug", false, "log every request")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	layout, err := paths.FromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bangerd:", err)
		os.Exit(1)
	}
	ctx := context.Background()
	if flag.Arg(0) == "doctor" {
		os.Exit(doctor.Command(ctx, layout, flag.Args()[1:], os.Stdout, os.Stderr))
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bangerd: unknown command %q\n", flag.Arg(0))
		os.Exit(2)
	}
	if *checkMigrations {
		if err := store.CheckMigrations(ctx, layout.DB()); err != nil {
			fmt.Fprintln(os.Stderr, "bangerd: migrations:", err)
			os.Exit(1)
		}
		fmt.Println("migrations ok:", layout.DB())
		return
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := daemon.Run(ctx, daemon.Options{Layout: layout, Version: version, Log: log}); err != nil {
		log.Error("bangerd failed", "err", err)
		os.Exit(1)
	}
}
