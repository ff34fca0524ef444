package builtin

import (
	"path/filepath"
	"slices"
	"testing"

	"banger/internal/config"
	"banger/internal/engine"
	"banger/internal/paths"
)

// The registry and the list of names the CLI, config, completion and
// doctor use must agree.
func TestRegistryMatchesNames(t *testing.T) {
	dir := t.TempDir()
	l := paths.Layout{State: filepath.Join(dir, "state"), Config: filepath.Join(dir, "config"), Runtime: filepath.Join(dir, "run")}
	r, err := Registry(config.Default(), l)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Names(), engine.Names(); !slices.Equal(got, want) {
		t.Errorf("registry has %v, engine.Names is %v", got, want)
	}
	if d := r.Default().Name(); d != engine.QEMU {
		t.Errorf("default engine %q", d)
	}
	// Capabilities are found once, at registration.
	q, _ := r.Lookup(engine.QEMU)
	if q.Cleaner != nil || q.CtrlAltDel != nil || q.Checker != nil || q.Traits().NeedsKVM || !q.Traits().UserNetworking {
		t.Errorf("qemu: %+v %+v", q, q.Traits())
	}
	fc, _ := r.Lookup(engine.Firecracker)
	if fc.Cleaner == nil || fc.CtrlAltDel == nil || fc.Checker == nil || !fc.Traits().NeedsKVM || fc.Traits().UserNetworking {
		t.Errorf("firecracker: %+v %+v", fc, fc.Traits())
	}
}

// The engines keep the file names of the VMs they made before the seam
// existed, so a daemon upgraded in place re-adopts running VMs.
func TestLayoutKeepsFileNames(t *testing.T) {
	r, err := Registry(config.Default(), paths.Layout{State: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	dirs := engine.Dirs{State: "/s/vms/id", Run: "/r/vms/id"}
	q, _ := r.Lookup("")
	s := q.Layout(engine.Spec{Cmdline: "quiet"}, dirs)
	want := engine.Spec{Cmdline: "quiet", RootDisk: "/s/vms/id/root.qcow2", AgentSocket: "/r/vms/id/agent.sock", AgentPortName: "org.banger.agent",
		SerialSocket: "/r/vms/id/serial.sock", QMPSocket: "/r/vms/id/qmp.sock", PIDFile: "/r/vms/id/qemu.pid"}
	if !equalSpec(s, want) {
		t.Errorf("qemu layout %+v", s)
	}
	fc, _ := r.Lookup(engine.Firecracker)
	s = fc.Layout(engine.Spec{Cmdline: "quiet"}, dirs)
	want = engine.Spec{Cmdline: "quiet banger.agent=vsock", RootDisk: "/s/vms/id/root.raw", VsockSocket: "/r/vms/id/vsock.sock",
		QMPSocket: "/r/vms/id/api.sock", PIDFile: "/r/vms/id/firecracker.pid"}
	if !equalSpec(s, want) {
		t.Errorf("firecracker layout %+v", s)
	}
}

func equalSpec(a, b engine.Spec) bool {
	return a.Cmdline == b.Cmdline && a.RootDisk == b.RootDisk && a.AgentSocket == b.AgentSocket && a.AgentPortName == b.AgentPortName &&
		a.SerialSocket == b.SerialSocket && a.VsockSocket == b.VsockSocket && a.QMPSocket == b.QMPSocket && a.PIDFile == b.PIDFile
}
