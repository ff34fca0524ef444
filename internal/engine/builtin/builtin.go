// Package builtin registers banger's engines from the configuration: the
// one place a new engine is added (its package, plus its name in
// engine.Names). The daemon passes the registry to the VM manager; the CLI
// never imports this package, so it links no driver.
package builtin

import (
	"path/filepath"

	"banger/internal/config"
	"banger/internal/engine"
	"banger/internal/engine/firecracker"
	"banger/internal/engine/qemu"
	"banger/internal/paths"
)

// Registry makes the registry of every built-in engine, configured by cfg;
// QEMU, first, is the default (it runs everywhere, with KVM or TCG).
func Registry(cfg config.Config, l paths.Layout) (*engine.Registry, error) {
	return engine.NewRegistry(
		qemu.New(cfg.QEMU),
		Firecracker(cfg, l),
	)
}

// Firecracker configures the Firecracker driver, jailed when jailer_bin is
// set (doctor checks it with the daemon's settings).
func Firecracker(cfg config.Config, l paths.Layout) *firecracker.Driver {
	d := firecracker.New(cfg.FirecrackerBin, cfg.JailerBin)
	if cfg.JailerBin != "" {
		d.ChrootBase = cfg.JailerChrootBase
		if d.ChrootBase == "" {
			d.ChrootBase = filepath.Join(l.State, "jailer")
		}
		d.JailUID, d.JailGID = cfg.JailerUID, cfg.JailerGID
	}
	return d
}
