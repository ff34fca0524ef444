package guest

import (
	"io"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/memstat"
)

// readMeminfo reads /proc/meminfo, at most memstat.MaxMeminfo bytes.
func readMeminfo() (string, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, memstat.MaxMeminfo))
	return string(b), err
}

// balloonDriverBound reports whether the kernel's virtio_balloon driver
// has a device: with it (and CONFIG_PAGE_REPORTING) freed pages go back
// to the host.
func balloonDriverBound() bool {
	devs, _ := filepath.Glob("/sys/bus/virtio/drivers/virtio_balloon/virtio*")
	return len(devs) > 0
}

// balloonDevice reports whether the VM has a virtio balloon (virtio
// device id 5), driven or not.
func balloonDevice() bool {
	ids, _ := filepath.Glob("/sys/bus/virtio/devices/*/device")
	for _, p := range ids {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(f, 16))
		f.Close()
		if strings.TrimSpace(string(b)) == "0x0005" {
			return true
		}
	}
	return false
}
