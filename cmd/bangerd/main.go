// Command bangerd is banger's daemon: it owns the store and the VMs and
// serves the API on a Unix socket under $XDG_RUNTIME_DIR/banger.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"banger/internal/daemon"
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
