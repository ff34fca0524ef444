package guest

import (
	"os/exec"
	"time"

	"golang.org/x/sys/unix"
)

// PoweroffSystemd asks systemd for an orderly poweroff, falling back to a
// forced one. Data is synced before either.
func PoweroffSystemd(force bool) error {
	unix.Sync()
	if !force {
		if err := exec.Command("systemctl", "--no-block", "poweroff").Run(); err == nil {
			return nil
		}
	}
	return PoweroffNow()
}

// PoweroffNow syncs and powers the machine off immediately. Should the
// kernel be unable to power off, it reboots, which the VMM (started with
// -no-reboot) treats as exit.
func PoweroffNow() error {
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	time.Sleep(time.Second)
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	return err
}
