// Command banger-agent runs inside every banger guest. As PID 1 of
// banger's initramfs it brings the guest up and hands over to the image's
// init; as a service ("serve") or as the image's PID 1 ("pid1") it answers
// the host over the virtio-serial agent port.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/guest"
)

func main() {
	// Commands the agent runs are looked up in a normal root PATH, not in
	// the near-empty environment of an initramfs.
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if guest.IsInitramfs() {
		lg := log.New(console(), "banger-agent: ", 0)
		defer func() {
			if r := recover(); r != nil {
				lg.Printf("boot failed: %v", r)
				guest.PoweroffNow()
			}
		}()
		if err := guest.Init(lg); err != nil {
			lg.Printf("boot failed: %v", err)
			// Leave the message on the console, then power off so the
			// host sees the VMM exit instead of a hung guest.
			time.Sleep(500 * time.Millisecond)
			unix.Sync()
			unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
			unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		}
		return
	}
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	lg := log.New(os.Stderr, "banger-agent: ", 0)
	switch mode {
	case "serve":
		srv := &guest.Server{Log: lg, Poweroff: guest.PoweroffSystemd, Sessions: guest.NewSessionManager(guest.SessionDir, lg)}
		if err := srv.Serve(context.Background()); err != nil {
			lg.Fatal(err)
		}
	case "pid1":
		lg.SetOutput(console())
		if err := guest.RunPID1(lg); err != nil {
			lg.Printf("%v", err)
			guest.PoweroffNow()
		}
	case "version":
		fmt.Println(guest.Version)
	default:
		fmt.Fprintln(os.Stderr, "usage: banger-agent serve|pid1|version (as /init it boots the guest)")
		os.Exit(2)
	}
}

// console returns the kernel console, where boot messages belong.
func console() io.Writer {
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		return f
	}
	return os.Stderr
}
